"""RL and preference objectives for the language planner, each a short composition of the shared
policy-gradient blocks in ``robot.core.policy_gradient``.

An RL method is three things: a frozen config dataclass, an *advantage* function that sees the whole
rollout batch (advantages are group statistics, so they must be computed before the batch is cut
into micro-batches), and a *loss* function that sees one micro-batch. One optimizer step:

    cfg_cls, advantages_fn, loss_fn = get_rl_objective("dapo")
    cfg = cfg_cls()
    adv = advantages_fn(cfg, Rollout(rewards, group_ids, mask, ...))   # (B,) values, (B,) keep
    # drop rows with adv.keep == False, then count what is left over the whole step (all ranks):
    #   num_tokens_global = mask[keep].sum(), num_seqs_global = keep.sum()
    for micro in micro_batches:
        loss, metrics = loss_fn(cfg, TokenBatch(logp, logp_old, mask, adv.values[rows], ...,
                                                num_tokens_global=..., num_seqs_global=...))
        loss.backward()                                                # summed, not averaged

With the global counts passed, the summed micro-batch losses equal the full-batch loss for every
aggregation mode. Two methods are micro-batch dependent by design: BAPO (bounds searched per loss
call; pass ``reduce_sum`` to agree across ranks) and STEER (weights from the micro-batch's min/max).

A preference method is a config and a loss over ``PreferenceBatch`` (see ``preference.py``).
Registries: ``RL_OBJECTIVES``, ``PREFERENCE_OBJECTIVES``; ``get_*_objective(name)`` raises a
ValueError listing the valid names. Metrics are detached 0-d tensors (no host sync); the trainer
turns them into floats when it logs. Section numbers refer to the reference sheet llm-posttraining.md.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from policies.planner.preference import (
    DPOConfig,
    INPOConfig,
    MPOConfig,
    PreferenceBatch,
    RPOConfig,
    TokenDPOConfig,
    dpo_loss,
    inpo_loss,
    mpo_stage1_loss,
    rpo_loss,
    token_dpo_loss,
)
from policies.planner.rewards import (
    backward_corrected_reward,
    flawed_positive_rewards,
    forward_correction_weight,
    length_penalty_rewards,
    overlong_penalty,
)
from robot.core.policy_gradient import (
    AdvantageEstimator,
    KLEstimator,
    KLPlacement,
    LossAgg,
    WeightScheme,
    adaptive_clip_bounds,
    aggregate_loss,
    beta_normalized_advantage,
    clipped_surrogate,
    entropy_change_weights,
    group_advantage,
    group_all_equal,
    group_mean,
    importance_ratio,
    kl_estimate,
    masked_mean,
    masked_sum,
    reinforce_loss,
)

Metrics = dict[str, Tensor]

# --------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """The whole rollout batch of one step: G completions for each prompt, in any row order."""

    rewards: Tensor
    """(B,) outcome reward per completion; (B, K) reward components for BNPO's decomposition."""
    group_ids: Tensor
    """(B,) int, same id = same prompt."""
    mask: Tensor
    """(B, T) 1 on response tokens; lengths are its row sums."""
    truncated: Tensor | None = None
    """(B,) bool, the completion hit the length limit (DAPO overlong filtering)."""
    flawed: Tensor | None = None
    """(B,) bool, the judge found a flawed step (FAPO; read for correct completions only)."""
    logp_old: Tensor | None = None
    """(B, T) behaviour log-probs; needed for KL in the reward."""
    logp_ref: Tensor | None = None
    """(B, T) reference log-probs; needed for KL in the reward."""

    def __post_init__(self) -> None:
        B = self.mask.shape[0]
        if self.rewards.shape[0] != B or self.group_ids.shape != (B,):
            raise ValueError(
                f"rewards {tuple(self.rewards.shape)} and group_ids {tuple(self.group_ids.shape)} must have "
                f"B = {B} rows like mask {tuple(self.mask.shape)}"
            )

    @property
    def lengths(self) -> Tensor:
        return self.mask.sum(-1)  # (B,)


@dataclass
class Advantages:
    values: Tensor
    """(B,) per-completion advantage, broadcast over its tokens by the loss."""
    keep: Tensor
    """(B,) bool, rows to train on (dynamic sampling and overlong filtering set False)."""
    metrics: Metrics


@dataclass
class TokenBatch:
    """One micro-batch for an RL loss."""

    logp: Tensor
    """(B, T) log pi_theta(y_t) with gradient."""
    logp_old: Tensor
    """(B, T) behaviour log-probs (= logp.detach() when strictly on-policy)."""
    mask: Tensor
    """(B, T) 1 on response tokens."""
    advantages: Tensor
    """(B,) from the objective's advantage function, or (B, T) per-token."""
    logp_ref: Tensor | None = None
    """(B, T) reference log-probs; needed for KL in the loss."""
    entropy_old: Tensor | None = None
    """(B, T) policy entropy at each position from the old-logprob pass (STEER)."""
    num_tokens_global: float | Tensor | None = None
    """Valid tokens of the whole optimizer step (all micro-batches and ranks); None = local."""
    num_seqs_global: float | Tensor | None = None
    """Sequences of the whole optimizer step; None = local."""
    reduce_sum: Callable[[Tensor], Tensor] | None = None
    """All-reduce SUM across data-parallel ranks (BAPO bound search); None on one process."""

    def __post_init__(self) -> None:
        for name in ("logp_old", "mask", "logp_ref", "entropy_old"):
            value = getattr(self, name)
            if value is not None and value.shape != self.logp.shape:
                raise ValueError(f"{name} must have shape {tuple(self.logp.shape)}, got {tuple(value.shape)}")

    @property
    def token_advantages(self) -> Tensor:
        """(B, 1) or (B, T), broadcastable against the (B, T) log-probs."""
        return self.advantages[:, None] if self.advantages.ndim == 1 else self.advantages


def _require(value: Tensor | None, name: str, method: str) -> Tensor:
    if value is None:
        raise ValueError(f"{method} needs {name}, got None")
    return value


def _aggregate(per_token: Tensor, batch: TokenBatch, agg: LossAgg, norm_len: int | None) -> Tensor:
    return aggregate_loss(
        per_token,
        batch.mask,
        agg,
        num_tokens_global=batch.num_tokens_global,
        num_seqs_global=batch.num_seqs_global,
        norm_len=norm_len,
    )


# --------------------------------------------------------------------------------------------------
# The clipped policy loss shared by the GRPO family
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SurrogateConfig:
    """Clipped surrogate, KL term and aggregation shared by most RL objectives (reference B2, B3, sec. 2)."""

    eps_low: float = 0.2
    """Ratio clip below: 1 - eps_low."""
    eps_high: float = 0.2
    """Ratio clip above: 1 + eps_high (> eps_low is DAPO's clip-higher)."""
    dual_clip: float | None = None
    """Cap c > 1 on the loss of negative-advantage tokens, -c A (verl 3, DAPO-style 10); None = off."""
    agg: LossAgg = LossAgg.TOKEN_MEAN
    """How per-token losses become a scalar."""
    norm_len: int | None = None
    """Constant max response length for LossAgg.SEQ_MEAN_TOKEN_SUM_NORM (Dr.GRPO)."""
    kl_coef: float = 0.0
    """beta of the KL-to-reference term; 0 = off (then no reference log-probs are needed)."""
    kl_estimator: KLEstimator = KLEstimator.K3
    """k3 is the usual choice in the loss, k1 in the reward."""
    kl_placement: KLPlacement = KLPlacement.LOSS

    def __post_init__(self) -> None:
        if self.eps_low < 0 or self.eps_high < 0 or self.eps_low >= 1:
            raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got {self.eps_low}, {self.eps_high}")
        if self.dual_clip is not None and self.dual_clip <= 1:
            raise ValueError(f"dual_clip must be > 1 or None, got {self.dual_clip}")
        if self.agg is LossAgg.SEQ_MEAN_TOKEN_SUM_NORM and not self.norm_len:
            raise ValueError("agg SEQ_MEAN_TOKEN_SUM_NORM needs norm_len = the max response length")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")


class HasSurrogate(Protocol):
    @property
    def surrogate(self) -> SurrogateConfig: ...


def _surrogate_loss(
    s: SurrogateConfig,
    batch: TokenBatch,
    *,
    eps_low: float | Tensor | None = None,
    eps_high: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> tuple[Tensor, Metrics]:
    """w_t * clipped surrogate (+ beta k(pi, pi_ref) in the loss), aggregated. Bounds override s for BAPO."""
    terms = clipped_surrogate(
        batch.logp,
        batch.logp_old,
        batch.token_advantages,
        batch.mask,
        s.eps_low if eps_low is None else eps_low,
        s.eps_high if eps_high is None else eps_high,
        s.dual_clip,
    )
    per_token = terms.loss if token_weights is None else terms.loss * token_weights  # (B, T)
    metrics: Metrics = {
        "policy/clip_frac": masked_mean(terms.clipped.float(), batch.mask).detach(),
        "policy/ratio_mean": masked_mean(terms.ratio, batch.mask).detach(),
    }
    if s.kl_coef > 0 and s.kl_placement is KLPlacement.LOSS:
        logp_ref = _require(batch.logp_ref, "logp_ref (kl_coef > 0, KL in the loss)", "the policy loss")
        kl = kl_estimate(batch.logp, logp_ref, s.kl_estimator)
        per_token = per_token + s.kl_coef * kl
        metrics["policy/kl"] = masked_mean(kl, batch.mask).detach()
    loss = _aggregate(per_token, batch, s.agg, s.norm_len)
    metrics["policy/loss"] = loss.detach()
    return loss, metrics


def clipped_policy_loss(cfg: HasSurrogate, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    """The loss of every method that differs from GRPO only in its rewards or advantages."""
    return _surrogate_loss(cfg.surrogate, batch)


def _advantages(
    s: SurrogateConfig,
    rollout: Rollout,
    rewards: Tensor,
    estimator: AdvantageEstimator,
    eps: float,
    keep: Tensor | None = None,
    metrics: Metrics | None = None,
) -> Advantages:
    """(KL-in-reward) -> group advantage -> Advantages, with the reward metrics every method logs."""
    rewards = rewards.float()
    metrics = {} if metrics is None else metrics
    metrics["reward/mean"] = rewards.mean()
    if s.kl_coef > 0 and s.kl_placement is KLPlacement.REWARD:
        logp_old = _require(rollout.logp_old, "rollout.logp_old (KL in the reward)", "the advantage step")
        logp_ref = _require(rollout.logp_ref, "rollout.logp_ref (KL in the reward)", "the advantage step")
        seq_kl = masked_sum(kl_estimate(logp_old, logp_ref, s.kl_estimator), rollout.mask, dim=-1)  # (B,)
        rewards = rewards - s.kl_coef * seq_kl
        metrics["reward/kl"] = seq_kl.mean()
    values = group_advantage(rewards, rollout.group_ids, estimator, eps)
    keep = torch.ones_like(values, dtype=torch.bool) if keep is None else keep
    metrics["adv/abs_mean"] = values.abs().mean()
    metrics["adv/kept_frac"] = keep.float().mean()
    return Advantages(values, keep, metrics)


# --------------------------------------------------------------------------------------------------
# GRPO, Dr.GRPO, DAPO
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GRPOConfig:
    """GRPO (DeepSeekMath, arXiv 2402.03300, section 1): z-scored group advantage, per-sequence token mean,
    k3 KL in the loss with beta 0.04 (the paper; TRL now defaults to 0)."""

    surrogate: SurrogateConfig = SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_MEAN, kl_coef=0.04)
    adv_eps: float = 1e-6
    """Added to the group std (verl 1e-6, TRL 1e-4)."""


def grpo_advantages(cfg: GRPOConfig, rollout: Rollout) -> Advantages:
    return _advantages(cfg.surrogate, rollout, rollout.rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps)


@dataclass(frozen=True, kw_only=True)
class DrGRPOConfig:
    """Dr.GRPO (arXiv 2503.20783, section 3): mean-only advantage, constant normaliser, no KL.
    Update size scales with the raw reward: keep rewards in a fixed range."""

    surrogate: SurrogateConfig = SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_SUM_NORM, norm_len=1024)
    """norm_len: set to the generation's max response length (1024 = DeepSeekMath's)."""


def drgrpo_advantages(cfg: DrGRPOConfig, rollout: Rollout) -> Advantages:
    return _advantages(cfg.surrogate, rollout, rollout.rewards, AdvantageEstimator.GROUP_MEAN, 0.0)


@dataclass(frozen=True, kw_only=True)
class DAPOConfig:
    """DAPO (arXiv 2503.14476, section 4): clip-higher, dynamic sampling, token-mean, overlong shaping,
    no KL."""

    surrogate: SurrogateConfig = SurrogateConfig(eps_low=0.2, eps_high=0.28, agg=LossAgg.TOKEN_MEAN)
    adv_eps: float = 1e-6
    dynamic_sampling: bool = True
    """Drop groups whose task rewards are all equal (0 or G correct): they carry no gradient but would
    still count in the token normaliser. The trainer samples more prompts to refill the batch."""
    max_response_len: int = 20480
    """L_max for overlong shaping (paper: 16384 + 4096 buffer)."""
    overlong_buffer_len: int = 4096
    """L_cache; 0 turns overlong shaping off."""
    overlong_penalty: float = 1.0
    mask_truncated: bool = False
    """Overlong filtering: drop truncated completions from the loss (they still count in group stats)."""


def dapo_advantages(cfg: DAPOConfig, rollout: Rollout) -> Advantages:
    keep = torch.ones_like(rollout.group_ids, dtype=torch.bool)
    if cfg.dynamic_sampling:  # filter on the task reward (accuracy), before shaping
        keep &= ~group_all_equal(rollout.rewards, rollout.group_ids)
    rewards = rollout.rewards.float()
    if cfg.overlong_buffer_len > 0:
        rewards = rewards + overlong_penalty(
            rollout.lengths, cfg.max_response_len, cfg.overlong_buffer_len, cfg.overlong_penalty
        )
    if cfg.mask_truncated:
        keep &= ~_require(rollout.truncated, "rollout.truncated", "DAPO with mask_truncated").bool()
    return _advantages(cfg.surrogate, rollout, rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps, keep)


# --------------------------------------------------------------------------------------------------
# BNPO, BAPO, STEER
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BNPOConfig:
    """BNPO (arXiv 2506.02864, section 7): Beta-normalised advantage, recipe clip 0.2/0.28, dual clip 10."""

    surrogate: SurrogateConfig = SurrogateConfig(
        eps_low=0.2, eps_high=0.28, dual_clip=10.0, agg=LossAgg.SEQ_MEAN_TOKEN_SUM
    )
    alpha: float | None = None
    """Fixed Beta alpha; None = re-estimated every batch (the paper's dynamic update)."""
    beta: float | None = None
    reward_min: float = 0.0
    """Known reward bounds; rewards are rescaled to [0, 1]."""
    reward_max: float = 1.0
    max_inv_pdf: float = 1e6
    """Clamp on 1/f_Beta (the code's value; effectively unbounded, lower it for safety)."""

    def __post_init__(self) -> None:
        if self.surrogate.kl_coef > 0 and self.surrogate.kl_placement is KLPlacement.REWARD:
            raise ValueError("BNPO needs rewards inside [reward_min, reward_max]; put the KL in the loss")


def bnpo_advantages(cfg: BNPOConfig, rollout: Rollout) -> Advantages:
    out = beta_normalized_advantage(
        rollout.rewards,
        rollout.group_ids,
        alpha=cfg.alpha,
        beta=cfg.beta,
        reward_min=cfg.reward_min,
        reward_max=cfg.reward_max,
        max_inv_pdf=cfg.max_inv_pdf,
    )
    metrics: Metrics = {
        "reward/mean": rollout.rewards.float().mean(),
        "bnpo/alpha": out.alpha.mean(),
        "bnpo/beta": out.beta.mean(),
        "adv/abs_mean": out.advantages.abs().mean(),
    }
    return Advantages(out.advantages, torch.ones_like(out.advantages, dtype=torch.bool), metrics)


@dataclass(frozen=True, kw_only=True)
class BAPOConfig:
    """BAPO (arXiv 2510.18927, section 8): clip bounds searched per loss call so that positive tokens
    carry at least ``positive_share`` of the gradient mass. Only matters off-policy (rho != 1).

    Target semantics (the reference flags an ambiguity): ``positive_share`` is the paper's rho0 =
    pos / (pos + neg). The released code's adv_ratio_target is pos / neg = rho0 / (1 - rho0): its
    default 1.0 is rho0 = 0.5 (our default); its example script's 0.5 is rho0 = 1/3.
    ``surrogate.eps_low`` / ``eps_high`` are unused: the searched bounds replace them.
    """

    surrogate: SurrogateConfig = SurrogateConfig(dual_clip=3.0, agg=LossAgg.TOKEN_MEAN)
    adv_eps: float = 1e-6
    low_range: tuple[float, float] = (0.6, 0.9)
    """[a-, b-]: range of the ratio lower bound c_low."""
    high_range: tuple[float, float] = (1.2, 3.0)
    """[a+, b+]: range of the ratio upper bound c_high."""
    step_low: float = 0.05
    step_high: float = 0.05
    positive_share: float = 0.5


def bapo_advantages(cfg: BAPOConfig, rollout: Rollout) -> Advantages:
    return _advantages(cfg.surrogate, rollout, rollout.rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps)


def bapo_loss(cfg: BAPOConfig, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    ratio = importance_ratio(batch.logp.detach(), batch.logp_old)  # (B, T)
    bounds = adaptive_clip_bounds(
        ratio,
        batch.token_advantages,
        batch.mask,
        low_range=cfg.low_range,
        high_range=cfg.high_range,
        step_low=cfg.step_low,
        step_high=cfg.step_high,
        positive_share=cfg.positive_share,
        reduce_sum=batch.reduce_sum,
    )
    loss, metrics = _surrogate_loss(cfg.surrogate, batch, eps_low=1 - bounds.low, eps_high=bounds.high - 1)
    metrics |= {
        "bapo/c_low": bounds.low,
        "bapo/c_high": bounds.high,
        "bapo/positive_share": bounds.positive_share,
    }
    return loss, metrics


@dataclass(frozen=True, kw_only=True)
class STEERConfig:
    """STEER (arXiv 2510.10150, section 10): token weights that damp tokens causing large entropy change."""

    surrogate: SurrogateConfig = SurrogateConfig(
        eps_low=0.2, eps_high=0.28, dual_clip=10.0, agg=LossAgg.TOKEN_MEAN
    )
    adv_eps: float = 1e-6
    scheme: WeightScheme = WeightScheme.EXPONENTIAL
    w_min: float = 0.8
    w_max: float = 1.0
    """Upper weight of the linear scheme (released linear: 0.8 / 1.2); the exponential one caps at 1."""


def steer_advantages(cfg: STEERConfig, rollout: Rollout) -> Advantages:
    return _advantages(cfg.surrogate, rollout, rollout.rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps)


def steer_loss(cfg: STEERConfig, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    # The released code silently falls back to the unweighted loss without entropies; we refuse.
    entropy_old = _require(batch.entropy_old, "batch.entropy_old (old-pass entropies)", "STEER")
    weights = entropy_change_weights(
        batch.logp,
        batch.logp_old,
        entropy_old,
        batch.token_advantages,
        batch.mask,
        scheme=cfg.scheme,
        w_min=cfg.w_min,
        w_max=cfg.w_max,
    )
    loss, metrics = _surrogate_loss(cfg.surrogate, batch, token_weights=weights)
    metrics["steer/weight_mean"] = masked_mean(weights, batch.mask)
    return loss, metrics


# --------------------------------------------------------------------------------------------------
# Reward-shaping methods: GRPO-lambda, FAPO, noisy-verifier corrections
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class GRPOLambdaConfig:
    """GRPO-lambda (arXiv 2505.18086, section 11): length penalty only for the most accurate groups.
    Surrogate settings [inferred]: the plain GRPO clip with token-mean, no KL."""

    surrogate: SurrogateConfig = SurrogateConfig()
    adv_eps: float = 1e-6
    fraction: float = 0.2
    """lambda: share of groups (highest correctness first) that get the length-penalty reward."""
    alpha: float = 0.6
    """Length-penalty coefficient (a reimplementation's value; not verified in the paper)."""


def grpo_lambda_advantages(cfg: GRPOLambdaConfig, rollout: Rollout) -> Advantages:
    rewards, penalised = length_penalty_rewards(
        rollout.rewards, rollout.lengths, rollout.group_ids, cfg.fraction, cfg.alpha
    )
    metrics: Metrics = {"grpo_lambda/penalised_frac": penalised.float().mean()}
    return _advantages(
        cfg.surrogate, rollout, rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps, metrics=metrics
    )


@dataclass(frozen=True, kw_only=True)
class FAPOConfig:
    """FAPO (arXiv 2510.22543, section 9): correct-but-flawed completions lose ``flaw_penalty``.

    Rewards are expected as +1 correct / -1 wrong; the flags come from a judge (for plans, the
    rule-based step checker) as ``rollout.flawed``."""

    surrogate: SurrogateConfig = SurrogateConfig()
    adv_eps: float = 1e-6
    flaw_penalty: float = 1.0
    """lambda; 1 puts the exploit-to-penalise switch at (fully correct / wrong) = 1."""


def fapo_advantages(cfg: FAPOConfig, rollout: Rollout) -> Advantages:
    flawed = _require(rollout.flawed, "rollout.flawed (judge flags)", "FAPO").bool()
    correct = rollout.rewards > 0
    rewards = flawed_positive_rewards(rollout.rewards.float(), flawed, cfg.flaw_penalty)
    wrong_frac = (~correct).float().mean()
    metrics: Metrics = {
        "fapo/flawed_positive_frac": (correct & flawed).float().mean(),
        # learning progress alpha / beta: < 1 exploits flawed positives, > 1 penalises them
        "fapo/progress": (correct & ~flawed).float().mean() / wrong_frac.clamp_min(1e-6),
    }
    return _advantages(
        cfg.surrogate, rollout, rewards, AdvantageEstimator.GROUP_ZSCORE, cfg.adv_eps, metrics=metrics
    )


def _check_estimator_keeps_correction(estimator: AdvantageEstimator) -> None:
    if estimator is AdvantageEstimator.GROUP_ZSCORE:
        raise ValueError(
            "estimator GROUP_ZSCORE cancels an affine reward correction exactly; "
            "use AdvantageEstimator.NONE (default) or LEAVE_ONE_OUT / GROUP_MEAN"
        )


@dataclass(frozen=True, kw_only=True)
class PGBCConfig:
    """Noisy-verifier backward correction (arXiv 2510.00915, sec. 12): R_hat = (R~ - rho0)/(1 - rho0 - rho1).

    Where group normalisation cancels it: R_hat is an affine map a R~ + b of the reward with the same
    a = 1/(1 - rho0 - rho1) > 0 and b = -rho0 a for every completion (the rates do not depend on the
    prompt), so within a group (R_hat - mean)/std = (R~ - mean)/std: GROUP_ZSCORE (GRPO) cancels the
    correction exactly and is refused. GROUP_MEAN and LEAVE_ONE_OUT remove the offset b and keep only
    the scale a, which Adam divides out again (its step is invariant to a constant gradient scale), so
    with a baseline and Adam the update is the uncorrected one. Only NONE (default, REINFORCE-style)
    keeps the offset: the gradient is unbiased for the clean reward and the correction changes the
    update. (Tested numerically in tests/policies/test_objectives.py.)

    Surrogate: per-sequence token mean (GRPO's), not token-mean. With binary rewards and a 10 % false-
    positive rate, token-mean gives a truncated 56-token garbage plan that happens to be reported correct
    ~3x the push of a 20-token correct plan; on the planner that ran plans to the length limit and to 0
    success in 20 steps on all 3 benchmark seeds (lr 1e-3); per-sequence weighting removed the collapse.
    """

    surrogate: SurrogateConfig = SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_MEAN)
    fp_rate: float = 0.0
    """rho0 = P(verifier says correct | wrong)."""
    fn_rate: float = 0.0
    """rho1 = P(verifier says wrong | correct)."""
    estimator: AdvantageEstimator = AdvantageEstimator.NONE

    def __post_init__(self) -> None:
        _check_estimator_keeps_correction(self.estimator)
        backward_corrected_reward(torch.zeros(1), self.fp_rate, self.fn_rate)  # validates the rates


def pgbc_advantages(cfg: PGBCConfig, rollout: Rollout) -> Advantages:
    rewards = backward_corrected_reward(rollout.rewards, cfg.fp_rate, cfg.fn_rate)
    return _advantages(cfg.surrogate, rollout, rewards, cfg.estimator, 0.0)


@dataclass(frozen=True, kw_only=True)
class PGFCConfig:
    """Noisy-verifier forward correction (arXiv 2510.00915, section 12): weight rho1 if R~ = 1 else rho1 - 1.

    The weight is R~ - (1 - rho1) = (1 - rho0 - rho1)(R_hat - 1) with R_hat the backward-corrected
    reward: the backward correction with the constant baseline 1 (the best reward), which is why rho0
    is not needed. Only NONE (default) keeps it. Any group baseline (GROUP_MEAN, LEAVE_ONE_OUT) removes
    the shift and gives the uncorrected update on R~; GROUP_ZSCORE cancels it too and is refused.

    Without a baseline wrong samples are pushed down and correct ones get zero weight in expectation, so
    most of a batch is pushed down; on the planner (0.34 M parameters, Adam) that raised entropy until
    no plan was well-formed: 0 success after 20 steps at lr 1e-3 (3 seeds with token-mean, seed 0 with
    the per-sequence mean, with or without KL) and 3e-4 (seed 0), +0.04 to +0.06 sampled success at 1e-4.
    The planner trainer therefore runs it with LEAVE_ONE_OUT by default (= uncorrected RLOO on the noisy
    reward; see ``RLConfig.noise_baseline``). The KL anchor (GRPO's 0.04) is for that run: without it
    seeds 2 and 3 lost the plan format (25 % and 48 % malformed), with it they reached 0.59 and 0.61
    sampled success."""

    surrogate: SurrogateConfig = SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_MEAN, kl_coef=0.04)
    fn_rate: float = 0.0
    """rho1 = P(verifier says wrong | correct); the false-positive rate is not needed."""
    estimator: AdvantageEstimator = AdvantageEstimator.NONE

    def __post_init__(self) -> None:
        _check_estimator_keeps_correction(self.estimator)
        forward_correction_weight(torch.zeros(1), self.fn_rate)  # validates the rate


def pgfc_advantages(cfg: PGFCConfig, rollout: Rollout) -> Advantages:
    weights = forward_correction_weight(rollout.rewards, cfg.fn_rate)
    return _advantages(cfg.surrogate, rollout, weights, cfg.estimator, 0.0)


# --------------------------------------------------------------------------------------------------
# REINFORCE-family: OPMD, AsymRE
# --------------------------------------------------------------------------------------------------


class OPMDBaseline(enum.Enum):
    MEAN = "mean"
    """b = mean_g r."""
    LOGSUMEXP = "logsumexp"
    """b = tau log mean_g exp(r / tau) (Kimi k1.5's log-partition estimate)."""


@dataclass(frozen=True, kw_only=True)
class OPMDConfig:
    """OPMD (Kimi k1.5 as in Trinity-RFT, section 15): token-mean(-A log pi) / (1 + tau), A = r - b.

    Optional REC-form regulariser + c (log pi - log pi_old)^2 / 2 (k2 to the behaviour policy; c = 0.1
    in REC) keeps the update near the data when training off-policy."""

    tau: float = 1.0
    baseline: OPMDBaseline = OPMDBaseline.MEAN
    old_k2_coef: float = 0.0
    agg: LossAgg = LossAgg.TOKEN_MEAN
    norm_len: int | None = None

    def __post_init__(self) -> None:
        if self.tau <= 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")


def opmd_advantages(cfg: OPMDConfig, rollout: Rollout) -> Advantages:
    r = rollout.rewards.float()
    if cfg.baseline is OPMDBaseline.MEAN:
        b = group_mean(r, rollout.group_ids)
    else:
        shift = r.max()  # subtract before exp so large rewards cannot overflow
        b = cfg.tau * group_mean(torch.exp((r - shift) / cfg.tau), rollout.group_ids).log() + shift
    values = r - b
    metrics: Metrics = {"reward/mean": r.mean(), "adv/abs_mean": values.abs().mean()}
    return Advantages(values, torch.ones_like(values, dtype=torch.bool), metrics)


def opmd_loss(cfg: OPMDConfig, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    per_token = reinforce_loss(batch.logp, batch.token_advantages) / (1 + cfg.tau)
    if cfg.old_k2_coef > 0:
        per_token = per_token + cfg.old_k2_coef * kl_estimate(batch.logp, batch.logp_old, KLEstimator.K2)
    loss = _aggregate(per_token, batch, cfg.agg, cfg.norm_len)
    return loss, {"policy/loss": loss.detach()}


@dataclass(frozen=True, kw_only=True)
class AsymREConfig:
    """AsymRE (Trinity-RFT REP family, section 15): REINFORCE with baseline mean_g r + shift.

    shift < 0 makes the update lean positive: it equals REINFORCE plus |shift| times a forward-KL-like
    term -log pi on the policy's own samples."""

    baseline_shift: float = -0.1
    agg: LossAgg = LossAgg.TOKEN_MEAN
    norm_len: int | None = None


def asymre_advantages(cfg: AsymREConfig, rollout: Rollout) -> Advantages:
    r = rollout.rewards.float()
    values = r - (group_mean(r, rollout.group_ids) + cfg.baseline_shift)
    metrics: Metrics = {"reward/mean": r.mean(), "adv/abs_mean": values.abs().mean()}
    return Advantages(values, torch.ones_like(values, dtype=torch.bool), metrics)


def asymre_loss(cfg: AsymREConfig, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    loss = _aggregate(reinforce_loss(batch.logp, batch.token_advantages), batch, cfg.agg, cfg.norm_len)
    return loss, {"policy/loss": loss.detach()}


# --------------------------------------------------------------------------------------------------
# NFT
# --------------------------------------------------------------------------------------------------


class NFTPromptWeight(enum.Enum):
    NONE = "none"
    NEGATIVE_RATE = "negative_rate"
    """x (1 - r_hat) (released normalize=1): makes the on-policy gradient equal mean-centred GRPO's."""
    SQRT_ODDS = "sqrt_odds"
    """x sqrt((1 - r_hat) / r_hat) (normalize=2)."""


@dataclass(frozen=True, kw_only=True)
class NFTConfig:
    """Negative-aware Fine-Tuning (arXiv 2505.18116, section 14) on binary (0/1) rewards.

    Listed with the preference methods in the planner issue, registered here because it consumes
    rollouts with rewards and groups. Advantages carry A = 1 - r_hat (correct) or -r_hat (wrong), the
    mean-centred reward NFT equals at rho = 1; the loss reads r_hat back from A.
    Aggregation: the released code sums per-sequence token sums / 1000 over the batch; at a fixed
    batch size SEQ_MEAN_TOKEN_SUM_NORM is proportional to it; token-mean is the default here."""

    neg_weight: float = 1.0
    """Weight of the negative (implicit negative policy) loss; 0 = RFT (SFT on correct answers only)."""
    prompt_weight: NFTPromptWeight = NFTPromptWeight.NEGATIVE_RATE
    rate_clip: tuple[float, float] = (0.02, 0.98)
    """r_hat (group accuracy) is clamped to this range."""
    max_log_ratio: float = 10.0
    negative_floor: float = 1.0
    """The negative loss's argument is floored here in the forward pass, gradient kept (released 1.0)."""
    agg: LossAgg = LossAgg.TOKEN_MEAN
    norm_len: int | None = None


def nft_advantages(cfg: NFTConfig, rollout: Rollout) -> Advantages:
    r = rollout.rewards.float()
    if bool(((r != 0) & (r != 1)).any()):  # sync: NFT's derivation needs binary rewards
        raise ValueError(f"NFT needs binary rewards in {{0, 1}}, got values {torch.unique(r).tolist()}")
    r_hat = group_mean(r, rollout.group_ids).clamp(*cfg.rate_clip)  # (B,) group accuracy
    values = torch.where(r > 0, 1 - r_hat, -r_hat)
    keep = ~group_all_equal(r, rollout.group_ids)  # r_hat in {0, 1}: removed (dynamic filtering)
    metrics: Metrics = {"reward/mean": r.mean(), "adv/kept_frac": keep.float().mean()}
    return Advantages(values, keep, metrics)


def nft_loss(cfg: NFTConfig, batch: TokenBatch) -> tuple[Tensor, Metrics]:
    adv = batch.token_advantages  # (B, 1)
    positive = adv > 0
    r_hat = torch.where(positive, 1 - adv, -adv)  # group accuracy, from nft_advantages
    log_ratio = (batch.logp - batch.logp_old).clamp(max=cfg.max_log_ratio)  # (B, T)
    positive_loss = -log_ratio  # SFT on correct answers: -log R_t
    # Implicit negative policy (pi_old - r_hat pi) / (1 - r_hat): -log((1 - r_hat R_t) / (1 - r_hat)).
    proxy = (1 - r_hat * log_ratio.exp()) / (1 - r_hat)
    proxy = proxy + (proxy.clamp_min(cfg.negative_floor) - proxy).detach()  # floored value, gradient kept
    negative_loss = -torch.log(proxy)
    per_token = torch.where(positive, positive_loss, cfg.neg_weight * negative_loss)
    if cfg.prompt_weight is NFTPromptWeight.NEGATIVE_RATE:
        per_token = per_token * (1 - r_hat)
    elif cfg.prompt_weight is NFTPromptWeight.SQRT_ODDS:
        per_token = per_token * ((1 - r_hat) / r_hat).sqrt()
    per_token = torch.where(batch.mask.bool(), per_token, torch.zeros_like(per_token))
    loss = _aggregate(per_token, batch, cfg.agg, cfg.norm_len)
    return loss, {"policy/loss": loss.detach()}


# --------------------------------------------------------------------------------------------------
# Registries
# --------------------------------------------------------------------------------------------------


class RLObjective(NamedTuple):
    config: type
    advantages: Callable[[Any, Rollout], Advantages]
    loss: Callable[[Any, TokenBatch], tuple[Tensor, Metrics]]


class PreferenceObjective(NamedTuple):
    config: type
    loss: Callable[[Any, PreferenceBatch], tuple[Tensor, Metrics]]


RL_OBJECTIVES: dict[str, RLObjective] = {
    "grpo": RLObjective(GRPOConfig, grpo_advantages, clipped_policy_loss),
    "dr_grpo": RLObjective(DrGRPOConfig, drgrpo_advantages, clipped_policy_loss),
    "dapo": RLObjective(DAPOConfig, dapo_advantages, clipped_policy_loss),
    "bnpo": RLObjective(BNPOConfig, bnpo_advantages, clipped_policy_loss),
    "bapo": RLObjective(BAPOConfig, bapo_advantages, bapo_loss),
    "steer": RLObjective(STEERConfig, steer_advantages, steer_loss),
    "grpo_lambda": RLObjective(GRPOLambdaConfig, grpo_lambda_advantages, clipped_policy_loss),
    "fapo": RLObjective(FAPOConfig, fapo_advantages, clipped_policy_loss),
    "pgbc": RLObjective(PGBCConfig, pgbc_advantages, clipped_policy_loss),
    "pgfc": RLObjective(PGFCConfig, pgfc_advantages, clipped_policy_loss),
    "opmd": RLObjective(OPMDConfig, opmd_advantages, opmd_loss),
    "asymre": RLObjective(AsymREConfig, asymre_advantages, asymre_loss),
    "nft": RLObjective(NFTConfig, nft_advantages, nft_loss),
}

PREFERENCE_OBJECTIVES: dict[str, PreferenceObjective] = {
    "dpo": PreferenceObjective(DPOConfig, dpo_loss),
    "rpo": PreferenceObjective(RPOConfig, rpo_loss),
    "inpo": PreferenceObjective(INPOConfig, inpo_loss),
    "token_dpo": PreferenceObjective(TokenDPOConfig, token_dpo_loss),
    "mpo": PreferenceObjective(MPOConfig, mpo_stage1_loss),
}


def get_rl_objective(name: str) -> RLObjective:
    if name not in RL_OBJECTIVES:
        raise ValueError(f"unknown RL objective {name!r}; valid names: {', '.join(sorted(RL_OBJECTIVES))}")
    return RL_OBJECTIVES[name]


def get_preference_objective(name: str) -> PreferenceObjective:
    if name not in PREFERENCE_OBJECTIVES:
        raise ValueError(
            f"unknown preference objective {name!r}; valid names: {', '.join(sorted(PREFERENCE_OBJECTIVES))}"
        )
    return PREFERENCE_OBJECTIVES[name]
