"""Shared policy-gradient math: advantages, surrogates, KL, entropy, importance weights, aggregation.

Every learner in robot-stack that turns "how good was this action" into a gradient uses these pieces,
so that one implementation of each idea exists. They are small pure functions over tensors; none of
them owns a model, an optimizer or a data loader.

Shape letters, used in every docstring and shape comment:
    B  sequences (language planner: sampled completions; robot learner: trajectories or transitions)
    T  tokens per sequence (robot learner: time steps; T = 1 for single transitions)
    G  group size (completions sampled for one prompt); groups are given by integer ``group_ids``
    K  reward components or candidate clip bounds, where stated
    V  vocabulary (categorical policies only)

How the two kinds of learner share it
-------------------------------------
A language-model policy-gradient step (GRPO family, ``policies/planner/objectives.py``) is

    rewards (B,) --group_zscore_advantage--> adv (B,)       # once per rollout batch, over whole groups
    logp, logp_old (B, T) --clipped_surrogate--> per-token loss (B, T)
    (+ kl_estimate to a reference, x per-token weights) --aggregate_loss--> scalar, one per micro-batch

A robot learner uses the same calls with actions as "tokens": a PPO-style update feeds GAE
advantages of shape (B, T) and the log-densities of the executed actions into ``clipped_surrogate``;
an offline learner (IQL / AWR) builds its actor weights with ``advantage_weights``; an offline-to-online
learner regularises toward its behaviour prior with ``kl_estimate``; any of them averages with
``aggregate_loss`` so that the loss of a batch does not depend on how it was split across
micro-batches or GPUs. Pass the *global* normaliser (token or sequence count of the whole optimizer
step) and sum the per-micro-batch losses: the gradient is then exactly that of the full batch.

Formulas cite the reference sheet ``llm-posttraining.md`` (sections numbered as there) and the papers
it names. Functions never call ``.item()`` except where a data-dependent size forces a sync, which
is stated.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

# --------------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------------


class LossAgg(enum.Enum):
    """How a (B, T) per-token loss becomes a scalar (reference section 2).

    All modes divide by a normaliser that the caller can fix to the *global* batch, which makes the
    sum of micro-batch losses equal the full-batch loss (invariance to micro-batch split and
    gradient accumulation).
    """

    TOKEN_MEAN = "token_mean"
    """sum_{i,t} m L / N_tok (DAPO, verl default, TRL "dapo"): every token weighs the same."""
    SEQ_MEAN_TOKEN_SUM = "seq_mean_token_sum"
    """(1/N_seq) sum_i sum_t m L (BNPO recipe): long sequences weigh more."""
    SEQ_MEAN_TOKEN_MEAN = "seq_mean_token_mean"
    """(1/N_seq) sum_i (sum_t m L) / T_i (original GRPO): biased toward short correct answers."""
    SEQ_MEAN_TOKEN_SUM_NORM = "seq_mean_token_sum_norm"
    """sum_{i,t} m L / (N_seq * L_max) (Dr.GRPO): a constant normaliser, no length bias."""


class KLEstimator(enum.Enum):
    """Per-token estimators of KL(pi || pi_ref) from samples of pi (reference B3, Schulman's k1/k2/k3)."""

    K1 = "k1"
    """log pi - log pi_ref: unbiased, high variance, can be negative. The usual choice in the reward."""
    K2 = "k2"
    """0.5 (log pi - log pi_ref)^2: biased, low variance; its gradient matches the true KL's to first order."""
    K3 = "k3"
    """exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1: unbiased, >= 0 ("low_var_kl"). Loss default."""


class KLPlacement(enum.Enum):
    """Where a KL-to-reference penalty enters (reference B3)."""

    LOSS = "loss"
    """beta * k(pi, pi_ref) is added to each token's loss and differentiated (GRPO)."""
    REWARD = "reward"
    """beta * sum_t k(pi_old, pi_ref) is subtracted from the sequence reward before advantages (PPO-RLHF)."""


class AdvantageEstimator(enum.Enum):
    """Critic-free, group-relative advantage estimators (reference B1)."""

    GROUP_ZSCORE = "group_zscore"
    """(r - mean_g r) / (std_g r + eps) (GRPO)."""
    GROUP_MEAN = "group_mean"
    """r - mean_g r (Dr.GRPO, REC, NFT)."""
    LEAVE_ONE_OUT = "leave_one_out"
    """r - mean of the other G - 1 rewards of the group (RLOO): the baseline is independent of the sample."""
    NONE = "none"
    """r itself (plain REINFORCE)."""


class WeightScheme(enum.Enum):
    """How STEER maps the entropy-change magnitude |Omega| to a token weight (reference section 10)."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"


# --------------------------------------------------------------------------------------------------
# Masked reductions and group statistics
# --------------------------------------------------------------------------------------------------


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum of values where mask is set. ``torch.where`` (not a product) so inf/nan in padding cannot leak."""
    masked = torch.where(mask.bool(), values, torch.zeros((), dtype=values.dtype, device=values.device))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean over the set entries of mask (0 where none are set). A local statistic: use for metrics."""
    count = mask.expand_as(values).sum() if dim is None else mask.expand_as(values).sum(dim)
    return masked_sum(values, mask, dim) / count.clamp_min(1)


def _group_index(group_ids: Tensor) -> tuple[Tensor, int]:
    """Map arbitrary group ids (B,) to contiguous indices 0..N-1. Syncs on GPU (data-dependent N)."""
    if group_ids.ndim != 1:
        raise ValueError(f"group_ids must have shape (B,), got {tuple(group_ids.shape)}")
    unique, inverse = torch.unique(group_ids, return_inverse=True)
    return inverse, unique.numel()


def _group_sums(values: Tensor, inverse: Tensor, num_groups: int) -> Tensor:
    """Per-group sums of values (B, ...) -> (N, ...)."""
    out = values.new_zeros((num_groups, *values.shape[1:]))
    return out.index_add_(0, inverse, values)


def _group_counts(inverse: Tensor, num_groups: int, like: Tensor) -> Tensor:
    """Per-group sizes (N, 1, ...) shaped to broadcast against per-group stats of ``like``."""
    counts = torch.bincount(inverse, minlength=num_groups).to(like.dtype)  # (N,)
    return counts.view(num_groups, *([1] * (like.ndim - 1)))


def _as_float(values: Tensor) -> Tensor:
    return values if values.is_floating_point() else values.float()


def group_means(values: Tensor, group_ids: Tensor) -> Tensor:
    """Per-group means, one row per group in sorted-id order: (B, ...) -> (N, ...)."""
    values = _as_float(values)
    inverse, n = _group_index(group_ids)
    return _group_sums(values, inverse, n) / _group_counts(inverse, n, values)


def group_mean(values: Tensor, group_ids: Tensor) -> Tensor:
    """mean_g of each row's own group, broadcast back: (B, ...) -> (B, ...)."""
    values = _as_float(values)
    inverse, n = _group_index(group_ids)
    means = _group_sums(values, inverse, n) / _group_counts(inverse, n, values)  # (N, ...)
    return means[inverse]


def group_std(values: Tensor, group_ids: Tensor) -> Tensor:
    """Unbiased (G - 1) standard deviation of each row's group, broadcast back; 0 for singleton groups."""
    values = _as_float(values)
    inverse, n = _group_index(group_ids)
    counts = _group_counts(inverse, n, values)  # (N, 1, ...)
    means = _group_sums(values, inverse, n) / counts
    sq_dev = (values - means[inverse]) ** 2  # (B, ...)
    var = _group_sums(sq_dev, inverse, n) / (counts - 1).clamp_min(1)
    return var.sqrt()[inverse]


def group_all_equal(values: Tensor, group_ids: Tensor) -> Tensor:
    """(B,) bool: True where every member of the row's group has the same value.

    Such groups give zero group-relative advantage, so DAPO's dynamic sampling drops them
    (reference section 4: keep groups with 0 < #correct < G).
    """
    values = _as_float(values)
    inverse, n = _group_index(group_ids)
    hi = values.new_full((n,), -math.inf).scatter_reduce(0, inverse, values, "amax")
    lo = values.new_full((n,), math.inf).scatter_reduce(0, inverse, values, "amin")
    return (hi == lo)[inverse]


# --------------------------------------------------------------------------------------------------
# Advantage estimators (reference B1)
# --------------------------------------------------------------------------------------------------


def group_zscore_advantage(rewards: Tensor, group_ids: Tensor, eps: float = 1e-6) -> Tensor:
    """GRPO: A_i = (r_i - mean_g r) / (std_g r + eps), unbiased std (DeepSeekMath, reference section 1).

    eps 1e-6 as verl (TRL uses 1e-4). Groups whose rewards are all equal get A = 0. (B,) -> (B,).
    """
    return (rewards - group_mean(rewards, group_ids)) / (group_std(rewards, group_ids) + eps)


def group_mean_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr.GRPO / REC: A_i = r_i - mean_g r. No std, so no difficulty bias (reference sec. 3). (B,) -> (B,)."""
    return _as_float(rewards) - group_mean(rewards, group_ids)


def leave_one_out_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO: A_i = r_i - (1/(G-1)) sum_{j != i} r_j = G/(G-1) (r_i - mean_g r).

    The baseline excludes the sample itself, so E[A_i grad log pi(o_i)] = E[r_i grad log pi(o_i)]
    exactly (unbiased); singleton groups get A = 0. (B,) -> (B,).
    """
    rewards = _as_float(rewards)
    inverse, n = _group_index(group_ids)
    counts = _group_counts(inverse, n, rewards)[inverse]  # (B,) size of own group
    centred = rewards - group_mean(rewards, group_ids)
    return torch.where(counts > 1, centred * counts / (counts - 1).clamp_min(1), torch.zeros_like(centred))


def group_advantage(
    rewards: Tensor, group_ids: Tensor, estimator: AdvantageEstimator, eps: float = 1e-6
) -> Tensor:
    """Dispatch to one of the critic-free estimators. (B,) -> (B,)."""
    if estimator is AdvantageEstimator.GROUP_ZSCORE:
        return group_zscore_advantage(rewards, group_ids, eps)
    if estimator is AdvantageEstimator.GROUP_MEAN:
        return group_mean_advantage(rewards, group_ids)
    if estimator is AdvantageEstimator.LEAVE_ONE_OUT:
        return leave_one_out_advantage(rewards, group_ids)
    if estimator is AdvantageEstimator.NONE:
        return _as_float(rewards).clone()
    raise ValueError(f"estimator must be an AdvantageEstimator, got {estimator!r}")


def beta_params_from_success_rates(success_rates: Tensor) -> tuple[Tensor, Tensor]:
    """BNPO's dynamic (alpha, beta) from per-prompt success rates p_q, (N, ...) -> (...), (...).

    Method of moments over the N prompts of the batch (BNPO eq. for alpha/beta, reference section 7):
    mu = mean p, s2 = unbiased var p, k = mu(1 - mu)/s2 - 1, a = k mu, b = k (1 - mu);
    alpha = max(1 + a/3, 1), beta = max(1 + b/3, 1) (the 1/3 minimises gradient variance).
    s2 is floored at 1e-8: with no spread between prompts alpha, beta grow very large (a peaked pdf),
    which is the method's documented behaviour, not a crash.
    """
    if success_rates.shape[0] < 2:
        raise ValueError(
            f"BNPO needs at least 2 prompts to estimate alpha, beta; got {success_rates.shape[0]}. "
            "Pass fixed alpha and beta instead."
        )
    mu = success_rates.mean(0)
    var = success_rates.var(0, unbiased=True).clamp_min(1e-8)
    k = mu * (1 - mu) / var - 1
    alpha = (1 + k * mu / 3).clamp_min(1.0)
    beta = (1 + k * (1 - mu) / 3).clamp_min(1.0)
    return alpha, beta


class BetaAdvantage(NamedTuple):
    advantages: Tensor  # (B,)
    alpha: Tensor  # () or (K,) Beta parameters actually used
    beta: Tensor


def beta_normalized_advantage(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    alpha: float | None = None,
    beta: float | None = None,
    reward_min: float = 0.0,
    reward_max: float = 1.0,
    max_inv_pdf: float = 1e6,
) -> BetaAdvantage:
    """BNPO: A_i = (s_i - p_q) / f_Beta(p_q; alpha, beta) (arXiv 2506.02864, reference section 7).

    s = (r - r_min)/(r_max - r_min) in [0, 1]; p_q = group mean of s (the prompt's success rate);
    alpha, beta fixed, or (None) re-estimated from this batch by ``beta_params_from_success_rates``.
    1/f is clamped to [0, max_inv_pdf] (the code's 1e6 is effectively unbounded; pass less to be safe).
    alpha = beta = 1 gives f = 1, i.e. the Dr.GRPO advantage; alpha = beta = 3/2 gives
    f proportional to sqrt(p(1 - p)), the binary-reward std, i.e. a GRPO-proportional advantage.

    rewards (B,) or (B, K) for K reward components (advantage decomposition: each component gets its
    own alpha_k, beta_k and the K advantages are averaged). Returns advantages (B,).
    """
    if reward_max <= reward_min:
        raise ValueError(f"reward_max must exceed reward_min, got [{reward_min}, {reward_max}]")
    s = (_as_float(rewards) - reward_min) / (reward_max - reward_min)  # (B,) or (B, K)
    if bool(((s < 0) | (s > 1)).any()):  # sync: a bad reward range must not pass silently
        raise ValueError(
            f"rewards must lie in [reward_min, reward_max] = [{reward_min}, {reward_max}]; "
            f"got values in [{float(rewards.min())}, {float(rewards.max())}]"
        )
    p = group_mean(s, group_ids)  # (B, ...) success rate of each row's prompt
    if alpha is None or beta is None:
        est_alpha, est_beta = beta_params_from_success_rates(group_means(s, group_ids))
        a = est_alpha if alpha is None else torch.full_like(est_alpha, alpha)
        b = est_beta if beta is None else torch.full_like(est_beta, beta)
    else:
        a = torch.full(s.shape[1:], float(alpha), dtype=s.dtype, device=s.device)
        b = torch.full(s.shape[1:], float(beta), dtype=s.dtype, device=s.device)
    log_beta_fn = torch.lgamma(a) + torch.lgamma(b) - torch.lgamma(a + b)
    # xlogy keeps 0 * log 0 = 0 at p in {0, 1} when the exponent is 0 (alpha or beta = 1).
    log_pdf = torch.xlogy(a - 1, p) + torch.xlogy(b - 1, 1 - p) - log_beta_fn
    inv_pdf = torch.exp(-log_pdf).clamp(0.0, max_inv_pdf)
    adv = (s - p) * inv_pdf
    if adv.ndim == 2:
        adv = adv.mean(1)  # (B, K) -> (B,) average of the per-component advantages
    return BetaAdvantage(adv, a, b)


# --------------------------------------------------------------------------------------------------
# Importance weights
# --------------------------------------------------------------------------------------------------


def importance_ratio(logp_new: Tensor, logp_old: Tensor, max_log_ratio: float = 20.0) -> Tensor:
    """rho = exp(log pi_theta - log pi_old), log-ratio clamped to +-max_log_ratio (verl uses 20) so a
    stale or mismatched behaviour log-prob cannot overflow. Any shape; gradient flows through logp_new."""
    return torch.exp((logp_new - logp_old).clamp(-max_log_ratio, max_log_ratio))


def truncated_importance_weight(ratio: Tensor, low: float, high: float) -> Tensor:
    """Detached IS weight clamp(rho, low, high) (REC "truncated IS", TIS for rollout-engine mismatch)."""
    return ratio.detach().clamp(low, high)


def advantage_weights(adv: Tensor, temperature: float = 1.0, max_weight: float | None = None) -> Tensor:
    """exp(A / temperature), optionally clamped (AWR / IQL actor weights, REC's RED-Weight). Detached."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    w = torch.exp(adv.detach() / temperature)
    return w if max_weight is None else w.clamp(max=max_weight)


# --------------------------------------------------------------------------------------------------
# Surrogates (reference B2)
# --------------------------------------------------------------------------------------------------


class SurrogateTerms(NamedTuple):
    loss: Tensor  # (B, T) per-token loss, 0 where mask is 0
    ratio: Tensor  # (B, T) rho
    clipped: Tensor  # (B, T) bool: the clip (either side, or the dual clip) removed this token's gradient


def clipped_surrogate(
    logp_new: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    eps_low: float | Tensor,
    eps_high: float | Tensor,
    dual_clip: float | None = None,
) -> SurrogateTerms:
    """PPO clipped surrogate with asymmetric bounds and optional dual clip (reference B2).

    l_t = -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A); for A < 0 and a dual clip c > 1,
    l_t = min(l_t, -c A), which caps the loss of a negative token whose ratio exploded (verl
    clip_ratio_c, default 3; DAPO-style recipes 10). eps_high > eps_low is DAPO's clip-higher.
    Bounds may be 0-d tensors (BAPO picks them on device). logp_* (B, T); adv (B, T) or (B, 1).
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (a multiple of |A|), got {dual_clip}")
    ratio = importance_ratio(logp_new, logp_old)  # (B, T)
    adv = adv.detach()
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = torch.maximum(unclipped, clipped)  # pessimistic bound
    is_clipped = clipped > unclipped
    if dual_clip is not None:
        cap = -adv * dual_clip  # = c |A| where A < 0
        dual = (adv < 0) & (loss > cap)
        loss = torch.where(dual, cap.expand_as(loss), loss)
        is_clipped = is_clipped | dual
    valid = mask.bool()
    loss = torch.where(valid, loss, torch.zeros_like(loss))
    return SurrogateTerms(loss, ratio, is_clipped & valid)


def reinforce_loss(logp: Tensor, adv: Tensor, weight: Tensor | None = None) -> Tensor:
    """-(A * w) log pi per token with A and w detached (REINFORCE; REC with a detached IS weight w).

    Unlike the clipped surrogate, tokens never lose their gradient. logp (B, T), adv (B, T) or (B, 1).
    """
    coef = adv.detach() if weight is None else adv.detach() * weight.detach()
    return -coef * logp


class ClipBounds(NamedTuple):
    low: Tensor  # () ratio lower bound c_low (eps_low = 1 - c_low)
    high: Tensor  # () ratio upper bound c_high (eps_high = c_high - 1)
    positive_share: Tensor  # () pos / (pos + neg) at the chosen bounds (1 when both are 0)


def _bound_grid(start: float, stop: float, step: float) -> list[float]:
    """start, start + step, ... capped at stop (a search that overshoots stop ends on stop)."""
    if stop < start or step <= 0:
        raise ValueError(f"need start <= stop and step > 0, got start={start}, stop={stop}, step={step}")
    n = math.ceil((stop - start) / step - 1e-9)
    return [min(start + k * step, stop) for k in range(n + 1)]


def adaptive_clip_bounds(
    ratio: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    low_range: tuple[float, float] = (0.6, 0.9),
    high_range: tuple[float, float] = (1.2, 3.0),
    step_low: float = 0.05,
    step_high: float = 0.05,
    positive_share: float = 0.5,
    reduce_sum: Callable[[Tensor], Tensor] | None = None,
) -> ClipBounds:
    """BAPO adaptive ratio bounds (arXiv 2510.18927, reference section 8).

    Search order as the released code: start at (a-, a+); raise c_low by step_low up to b-; then raise
    c_high by step_high up to b+; stop at the first bounds where the positive tokens' share of the
    policy-gradient mass reaches ``positive_share`` (the paper's rho0; code target ratio
    rho0 / (1 - rho0), so the code default adv_ratio_target = 1.0 is rho0 = 0.5). If none does, the
    search ends at (b-, b+).

    Contribution measure [inferred, gradient-based, see reference]: only tokens that keep a gradient
    under the candidate bounds count,
        pos = sum_{A > 0, rho <= c_high} rho |A|,   neg = sum_{A < 0, rho >= c_low} rho |A|,
    so raising c_low removes low-probability negatives and raising c_high admits more positives, both
    raising the positive share monotonically. (The released code measures clamped values, under which
    raising c_low *adds* negative mass and the loop just runs c_low to its maximum.)

    All K candidates are evaluated in one vectorised pass, so with data parallelism a single
    ``reduce_sum`` (an all-reduce SUM over ranks of a (2, K) tensor) makes every rank pick the same
    bounds. ratio (B, T) detached; adv (B, T) or (B, 1); mask (B, T).
    """
    if not 0.0 < positive_share < 1.0:
        raise ValueError(f"positive_share must be in (0, 1), got {positive_share}")
    lows = _bound_grid(*low_range, step_low)
    highs = _bound_grid(*high_range, step_high)
    cand_low = torch.tensor(lows + [lows[-1]] * (len(highs) - 1), dtype=ratio.dtype, device=ratio.device)
    cand_high = torch.tensor([highs[0]] * len(lows) + highs[1:], dtype=ratio.dtype, device=ratio.device)

    r = ratio.detach().flatten()  # (N,) N = B * T
    a = adv.detach().expand_as(ratio).flatten()
    valid = mask.bool().expand_as(ratio).flatten()
    mass = r * a.abs()
    is_pos = valid & (a > 0)
    is_neg = valid & (a < 0)
    pos = ((r[None] <= cand_high[:, None]) & is_pos) * mass  # (K, N)
    neg = ((r[None] >= cand_low[:, None]) & is_neg) * mass
    sums = torch.stack([pos.sum(1), neg.sum(1)])  # (2, K)
    if reduce_sum is not None:
        sums = reduce_sum(sums)
    pos_k, neg_k = sums
    ok = pos_k >= positive_share / (1 - positive_share) * neg_k  # pos/(pos+neg) >= rho0, no division
    idx = torch.where(ok.any(), ok.float().argmax(), torch.tensor(len(ok) - 1, device=ok.device))
    total = pos_k[idx] + neg_k[idx]
    share = torch.where(total > 0, pos_k[idx] / total.clamp_min(1e-30), torch.ones_like(total))
    return ClipBounds(cand_low[idx], cand_high[idx], share)


# --------------------------------------------------------------------------------------------------
# Regularisers (reference B3): KL, entropy, chi^2 occupancy
# --------------------------------------------------------------------------------------------------


def kl_estimate(logp: Tensor, logp_ref: Tensor, estimator: KLEstimator, k3_clamp: float = 10.0) -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from tokens sampled from pi. Any shape -> same shape.

    k1 = d, k2 = d^2 / 2, k3 = exp(-d) + d - 1 with d = log pi - log pi_ref; k3 clamped to
    [-k3_clamp, k3_clamp] as verl (10) so one near-zero reference probability cannot dominate a batch.
    """
    d = logp - logp_ref
    if estimator is KLEstimator.K1:
        return d
    if estimator is KLEstimator.K2:
        return 0.5 * d**2
    if estimator is KLEstimator.K3:
        return (torch.exp(-d) + d - 1).clamp(-k3_clamp, k3_clamp)
    raise ValueError(f"estimator must be a KLEstimator, got {estimator!r}")


def entropy_from_logits(logits: Tensor) -> Tensor:
    """H = logsumexp(z) - sum softmax(z) z of a categorical policy. (..., V) -> (...).

    Materialises the softmax: with a large vocabulary call it on chunks of tokens.
    """
    log_z = torch.logsumexp(logits, dim=-1)
    return log_z - (torch.softmax(logits, dim=-1) * logits).sum(-1)


class OccupancyPenalty(NamedTuple):
    penalty: Tensor  # () sqrt(max(chi2_hat, 1e-4)), the term added to the loss
    chi2: Tensor  # () chi2_hat
    kl: Tensor  # () kl_hat, for logging


def chi2_occupancy_penalty(seq_log_ratio: Tensor, log_ratio_clip: float = 10.0) -> OccupancyPenalty:
    """sqrt chi^2 occupancy regulariser of sequence policies (Correlated Proxies, arXiv 2403.03185, sec. 22).

    With the full history as state, the occupancy divergence is the sequence divergence. From
    L_i = sum_t (log pi - log pi_ref) (B,), clipped to +-log_ratio_clip before exponentiating:
    chi2_hat = mean[(e^L - 1) + (e^-L - 1)], kl_hat = mean[L + e^-L - 1], penalty = sqrt(max(chi2_hat, 1e-4)).
    The square root of a batch mean is not additive: this term depends on the micro-batch composition.
    """
    L = seq_log_ratio.clamp(-log_ratio_clip, log_ratio_clip)  # (B,)
    chi2 = ((torch.exp(L) - 1) + (torch.exp(-L) - 1)).mean()
    kl = (L + torch.exp(-L) - 1).mean()
    return OccupancyPenalty(chi2.clamp_min(1e-4).sqrt(), chi2, kl)


# --------------------------------------------------------------------------------------------------
# Per-token weights (reference B4)
# --------------------------------------------------------------------------------------------------


def entropy_change_weights(
    logp: Tensor,
    logp_old: Tensor,
    entropy_old: Tensor,
    adv: Tensor,
    mask: Tensor,
    *,
    scheme: WeightScheme = WeightScheme.EXPONENTIAL,
    w_min: float = 0.8,
    w_max: float = 1.0,
    min_scale: float = 0.02,
) -> Tensor:
    """STEER token weights from each token's first-order entropy change (arXiv 2510.10150, section 10).

    Omega_t = (A_t / pi_old(y_t)) p (1 - p) (log p + H_t), p = pi_theta(y_t) clamped to [1e-8, 1 - 1e-8],
    H_t the old-pass entropy; non-finite Omega -> 0. Over the valid tokens of this micro-batch:
      exponential: k = -ln(w_min) / max(max|Omega|, min_scale), w = clamp(exp(-k |Omega|), w_min, 1);
      linear: w = w_max - (|Omega| - min|Omega|)(w_max - w_min) / (max|Omega| - min|Omega|), clamped.
    Tokens that would move the entropy most get the smallest weight. Detached; (B, T); 0 at padding.
    The weights depend on the micro-batch's min/max by design (reference pitfall).
    """
    if not 0.0 < w_min <= w_max:
        raise ValueError(f"need 0 < w_min <= w_max, got w_min={w_min}, w_max={w_max}")
    with torch.no_grad():
        valid = mask.bool().expand_as(logp)
        p = logp.exp().clamp(1e-8, 1 - 1e-8)
        omega = adv / logp_old.exp() * p * (1 - p) * (p.log() + entropy_old)
        omega = torch.where(torch.isfinite(omega), omega, torch.zeros_like(omega))
        mag = omega.abs()
        hi = mag.masked_fill(~valid, 0.0).amax()
        if scheme is WeightScheme.EXPONENTIAL:
            k = -math.log(w_min) / hi.clamp_min(min_scale)
            w = torch.exp(-k * mag).clamp(w_min, 1.0)
        elif scheme is WeightScheme.LINEAR:
            lo = mag.masked_fill(~valid, math.inf).amin()
            span = (hi - lo).clamp_min(1e-12)
            w = (w_max - (mag - lo) * (w_max - w_min) / span).clamp(w_min, w_max)
        else:
            raise ValueError(f"scheme must be a WeightScheme, got {scheme!r}")
        return torch.where(valid, w, torch.zeros_like(w))


# --------------------------------------------------------------------------------------------------
# Aggregation (reference section 2)
# --------------------------------------------------------------------------------------------------


def _at_least_one(count: float | Tensor) -> float | Tensor:
    return count.clamp_min(1) if isinstance(count, Tensor) else max(count, 1)


def aggregate_loss(
    per_token_loss: Tensor,
    mask: Tensor,
    mode: LossAgg,
    *,
    num_tokens_global: float | Tensor | None = None,
    num_seqs_global: float | Tensor | None = None,
    norm_len: int | None = None,
) -> Tensor:
    """Reduce a (B, T) per-token loss to this micro-batch's share of the global loss.

    num_tokens_global: valid tokens (sum of mask) in the whole optimizer step, over all micro-batches
    and data-parallel ranks; num_seqs_global: sequences in it. Pass them and *sum* (do not average)
    the returned losses over micro-batches: the result and its gradient equal the full-batch loss for
    every mode. Left as None they default to this micro-batch's own counts, which is exact only when
    the step is a single micro-batch (the "local token-mean" pitfall). Under DDP, whose all-reduce
    averages gradients over W ranks, multiply the loss by W.
    norm_len: Dr.GRPO's constant L_max, required by SEQ_MEAN_TOKEN_SUM_NORM (never the padded width,
    which changes between micro-batches).
    """
    if per_token_loss.ndim != 2:
        raise ValueError(f"per_token_loss must have shape (B, T), got {tuple(per_token_loss.shape)}")
    # Normalisers floored at 1: a step with nothing to train on gives loss 0, not 0/0.
    num_seqs = _at_least_one(per_token_loss.shape[0] if num_seqs_global is None else num_seqs_global)
    if mode is LossAgg.TOKEN_MEAN:
        num_tokens = _at_least_one(mask.sum() if num_tokens_global is None else num_tokens_global)
        return masked_sum(per_token_loss, mask) / num_tokens
    if mode is LossAgg.SEQ_MEAN_TOKEN_SUM:
        return masked_sum(per_token_loss, mask) / num_seqs
    if mode is LossAgg.SEQ_MEAN_TOKEN_MEAN:
        seq_len = mask.sum(-1).clamp_min(1)  # (B,) T_i
        return (masked_sum(per_token_loss, mask, dim=-1) / seq_len).sum() / num_seqs
    if mode is LossAgg.SEQ_MEAN_TOKEN_SUM_NORM:
        if norm_len is None or norm_len <= 0:
            raise ValueError(
                f"LossAgg.SEQ_MEAN_TOKEN_SUM_NORM needs norm_len = the constant max response length "
                f"(Dr.GRPO's L_max), got {norm_len}"
            )
        return masked_sum(per_token_loss, mask) / (num_seqs * norm_len)
    raise ValueError(f"mode must be a LossAgg, got {mode!r}")
