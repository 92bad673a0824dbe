"""Preference objectives for the planner: DPO, RPO, INPO, token-level DPO and MPO's stage-1 loss.

Each method is a small config dataclass and a loss function ``(config, PreferenceBatch) -> (loss,
metrics)``; the registry lives in ``objectives.py``. Sequence log-likelihoods are sums over response
tokens (not length normalised), as in DPO and RPO (reference sections 13, 18, 21, 23).

Micro-batching: every loss here is a mean over pairs. Pass ``num_pairs_global`` (pairs in the whole
optimizer step) and sum the micro-batch losses to get the full-batch loss exactly; the optional
chi^2 occupancy regulariser is the one exception (a square root of a batch mean).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from robot.core.policy_gradient import chi2_occupancy_penalty, masked_mean, masked_sum

Metrics = dict[str, Tensor]


@dataclass
class PreferenceBatch:
    """Per-token log-probs of chosen (y_w) and rejected (y_l) responses, one row per pair.

    Chosen tensors are (B, Tw), rejected (B, Tl); masks are 1 on response tokens. The ``*_ref_logp``
    come from the frozen reference (for MPO stage 2, the stage-1 DPO model), ``*_prev_logp`` from the
    previous iterate pi_t (INPO only).
    """

    chosen_logp: Tensor
    chosen_mask: Tensor
    rejected_logp: Tensor
    rejected_mask: Tensor
    chosen_ref_logp: Tensor
    rejected_ref_logp: Tensor
    chosen_prev_logp: Tensor | None = None
    rejected_prev_logp: Tensor | None = None
    pair_mask: Tensor | None = None
    """(B,) bool: pairs to train on (MPO stage 1: the easy pairs); None = all."""
    num_pairs_global: float | None = None
    """Pairs (with pair_mask set) in the whole optimizer step; None = this micro-batch's count."""

    def __post_init__(self) -> None:
        for name in ("chosen_mask", "chosen_ref_logp", "chosen_prev_logp"):
            _check_shape(name, getattr(self, name), self.chosen_logp)
        for name in ("rejected_mask", "rejected_ref_logp", "rejected_prev_logp"):
            _check_shape(name, getattr(self, name), self.rejected_logp)
        if self.chosen_logp.shape[0] != self.rejected_logp.shape[0]:
            raise ValueError(
                f"chosen and rejected need the same number of pairs, got {self.chosen_logp.shape[0]} "
                f"and {self.rejected_logp.shape[0]}"
            )


def _check_positive(name: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _check_shape(name: str, value: Tensor | None, like: Tensor) -> None:
    if value is not None and value.shape != like.shape:
        raise ValueError(f"{name} must have shape {tuple(like.shape)}, got {tuple(value.shape)}")


@dataclass(frozen=True, kw_only=True)
class OccupancyReg:
    """Option: + coef * sqrt(chi^2) occupancy divergence to the reference (Correlated Proxies, section 22)."""

    coef: float
    """Regulariser weight; the paper scales it by the reward std (e.g. 0.0008 for Pythia RLHF)."""
    log_ratio_clip: float = 10.0
    """Sequence log-ratios are clipped to +-this before exponentiating."""


class _SeqLogps:
    """Masked sequence sums (B,) of the batch's log-probs, computed once per loss call."""

    def __init__(self, batch: PreferenceBatch) -> None:
        self.chosen = masked_sum(batch.chosen_logp, batch.chosen_mask, dim=-1)
        self.rejected = masked_sum(batch.rejected_logp, batch.rejected_mask, dim=-1)
        self.chosen_ref = masked_sum(batch.chosen_ref_logp, batch.chosen_mask, dim=-1)
        self.rejected_ref = masked_sum(batch.rejected_ref_logp, batch.rejected_mask, dim=-1)


def _pair_mean(per_pair: Tensor, batch: PreferenceBatch) -> Tensor:
    """sum over selected pairs / (num_pairs_global or the local count of selected pairs). (B,) -> ()."""
    keep = torch.ones_like(per_pair, dtype=torch.bool) if batch.pair_mask is None else batch.pair_mask.bool()
    n = keep.sum().clamp_min(1) if batch.num_pairs_global is None else batch.num_pairs_global
    return masked_sum(per_pair, keep) / n


def _selected(batch: PreferenceBatch) -> Tensor:
    return (
        torch.ones(batch.chosen_logp.shape[0], dtype=torch.bool, device=batch.chosen_logp.device)
        if batch.pair_mask is None
        else batch.pair_mask.bool()
    )


def _add_occupancy(
    loss: Tensor, metrics: Metrics, reg: OccupancyReg | None, seq: _SeqLogps, batch: PreferenceBatch
) -> Tensor:
    """loss + coef * sqrt(chi2) over all chosen and rejected sequences of the selected pairs.

    On offline pairs these are data sequences, not samples of pi: a proxy for the on-policy occupancy.
    """
    if reg is None or reg.coef == 0.0:
        return loss
    keep = _selected(batch)
    log_ratio = torch.cat([(seq.chosen - seq.chosen_ref)[keep], (seq.rejected - seq.rejected_ref)[keep]])
    occ = chi2_occupancy_penalty(log_ratio, reg.log_ratio_clip)
    metrics["pref/occupancy_chi2"] = occ.chi2.detach()
    metrics["pref/occupancy_kl"] = occ.kl.detach()
    return loss + reg.coef * occ.penalty


def _dpo_terms(beta: float, seq: _SeqLogps, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    """Per-pair DPO loss -log sigmoid(beta [(log pi/pi_ref)(y_w) - (log pi/pi_ref)(y_l)]) and its metrics."""
    reward_chosen = beta * (seq.chosen - seq.chosen_ref)  # (B,) implicit rewards
    reward_rejected = beta * (seq.rejected - seq.rejected_ref)
    margin = reward_chosen - reward_rejected
    keep = _selected(batch)
    metrics = {
        "pref/reward_chosen": masked_mean(reward_chosen, keep).detach(),
        "pref/reward_rejected": masked_mean(reward_rejected, keep).detach(),
        "pref/margin": masked_mean(margin, keep).detach(),
        "pref/accuracy": masked_mean((margin > 0).float(), keep).detach(),
    }
    return -F.logsigmoid(margin), metrics


# --------------------------------------------------------------------------------------------------
# DPO
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class DPOConfig:
    """Direct Preference Optimization (Rafailov et al. 2023)."""

    beta: float = 0.1
    """Inverse temperature of the implicit reward beta log(pi/pi_ref); DPO paper's common value."""
    occupancy: OccupancyReg | None = None
    """Optional chi^2 occupancy regulariser (Correlated Proxies)."""

    def __post_init__(self) -> None:
        _check_positive("beta", self.beta)


def dpo_loss(cfg: DPOConfig, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    """L = mean_pairs -log sigmoid(beta [Delta_pi - Delta_ref]), Delta_x = log x(y_w) - log x(y_l)."""
    seq = _SeqLogps(batch)
    per_pair, metrics = _dpo_terms(cfg.beta, seq, batch)
    loss = _pair_mean(per_pair, batch)
    loss = _add_occupancy(loss, metrics, cfg.occupancy, seq, batch)
    metrics["pref/loss"] = loss.detach()
    return loss, metrics


# --------------------------------------------------------------------------------------------------
# RPO: DPO + SFT on the chosen responses
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RPOConfig:
    """RPO: L_DPO + eta * beta * E[-log pi(y_w)] (arXiv 2405.16436, reference section 13).

    The NLL is the chosen response's summed (not length-normalised) log-likelihood; TRL's rpo_alpha is
    the length-normalised variant with a different scale.
    """

    beta: float = 0.05
    """DPO beta (gemma-7b 0.05, mistral-7b 0.01)."""
    eta: float = 0.005
    """SFT weight relative to beta (paper sweeps 0.001..0.1)."""
    occupancy: OccupancyReg | None = None

    def __post_init__(self) -> None:
        _check_positive("beta", self.beta)
        _check_positive("eta", self.eta, allow_zero=True)


def rpo_loss(cfg: RPOConfig, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    seq = _SeqLogps(batch)
    per_pair, metrics = _dpo_terms(cfg.beta, seq, batch)
    dpo = _pair_mean(per_pair, batch)
    nll = _pair_mean(-seq.chosen, batch)
    loss = dpo + cfg.eta * cfg.beta * nll
    loss = _add_occupancy(loss, metrics, cfg.occupancy, seq, batch)
    metrics |= {"pref/dpo_loss": dpo.detach(), "pref/nll_chosen": nll.detach(), "pref/loss": loss.detach()}
    return loss, metrics


# --------------------------------------------------------------------------------------------------
# INPO: squared regression toward the online-mirror-descent target
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class INPOConfig:
    """Iterative Nash Policy Optimization (arXiv 2407.00617, reference section 18).

    h = Delta_pi - (tau/eta) Delta_ref - (1 - tau/eta) Delta_t, L = E[(h - 1/(2 eta))^2], with
    Delta_x = log x(y_w) - log x(y_l) and pi_t the previous iterate (its log-probs computed once per
    iteration). Defaults from a third-party reimplementation (not verified in the paper).
    """

    eta: float = 7.5e-3
    """Online mirror descent step size."""
    tau: float = 2.5e-3
    """KL-to-reference strength; must satisfy 0 < tau < eta."""
    occupancy: OccupancyReg | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.tau < self.eta:
            raise ValueError(f"INPO needs 0 < tau < eta, got tau={self.tau}, eta={self.eta}")


def inpo_loss(cfg: INPOConfig, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    if batch.chosen_prev_logp is None or batch.rejected_prev_logp is None:
        raise ValueError(
            "INPO needs chosen_prev_logp and rejected_prev_logp (log-probs of the previous iterate pi_t)"
        )
    seq = _SeqLogps(batch)
    prev_chosen = masked_sum(batch.chosen_prev_logp, batch.chosen_mask, dim=-1)
    prev_rejected = masked_sum(batch.rejected_prev_logp, batch.rejected_mask, dim=-1)
    w = cfg.tau / cfg.eta
    h = (
        (seq.chosen - seq.rejected)
        - w * (seq.chosen_ref - seq.rejected_ref)
        - (1 - w) * (prev_chosen - prev_rejected)
    )  # (B,)
    target = 1 / (2 * cfg.eta)
    loss = _pair_mean((h - target) ** 2, batch)
    metrics: Metrics = {"pref/inpo_h": masked_mean(h, _selected(batch)).detach()}
    loss = _add_occupancy(loss, metrics, cfg.occupancy, seq, batch)
    metrics["pref/loss"] = loss.detach()
    return loss, metrics


# --------------------------------------------------------------------------------------------------
# Token-level DPO (from r to Q*)
# --------------------------------------------------------------------------------------------------


def token_implicit_rewards(logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token implicit reward r_t = beta log pi(y_t|s_t)/pi_ref(y_t|s_t) = Q*(s_t, y_t) - V*(s_t).

    From r to Q* (arXiv 2404.12358, section 21): the dense credit a DPO model assigns to each token;
    usable as per-token advantages (B, T) for the RL surrogate or to score beams.
    (B, T) -> (B, T), 0 at padding.
    """
    return torch.where(mask.bool(), beta * (logp - ref_logp), torch.zeros_like(logp))


@dataclass(frozen=True, kw_only=True)
class TokenDPOConfig:
    """DPO written as a sum of per-token implicit rewards; same loss, with dense credit in the metrics."""

    beta: float = 0.1
    occupancy: OccupancyReg | None = None

    def __post_init__(self) -> None:
        _check_positive("beta", self.beta)


def token_dpo_loss(cfg: TokenDPOConfig, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    """L = mean_pairs -log sigmoid(sum_t r_t(y_w) - sum_t r_t(y_l)); equals ``dpo_loss`` exactly."""
    r_chosen = token_implicit_rewards(batch.chosen_logp, batch.chosen_ref_logp, batch.chosen_mask, cfg.beta)
    r_rejected = token_implicit_rewards(
        batch.rejected_logp, batch.rejected_ref_logp, batch.rejected_mask, cfg.beta
    )
    margin = r_chosen.sum(-1) - r_rejected.sum(-1)  # (B,)
    loss = _pair_mean(-F.logsigmoid(margin), batch)
    metrics: Metrics = {
        "pref/token_reward_chosen": masked_mean(r_chosen, batch.chosen_mask).detach(),
        "pref/token_reward_rejected": masked_mean(r_rejected, batch.rejected_mask).detach(),
        "pref/margin": masked_mean(margin, _selected(batch)).detach(),
    }
    loss = _add_occupancy(loss, metrics, cfg.occupancy, _SeqLogps(batch), batch)
    metrics["pref/loss"] = loss.detach()
    return loss, metrics


# --------------------------------------------------------------------------------------------------
# MPO: DPO on easy pairs, then RL on hard prompts anchored to the DPO model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MPOConfig:
    """Mixed Preference Optimization (arXiv 2403.19443, reference section 23), the pieces of both stages.

    Stage 1: DPO on the easy pairs (largest reward-model score gap), ``mpo_stage1_loss``.
    Stage 2: RL on the hard pairs' prompts with the stage-1 model as both initial policy and reference:
    run any RL objective (the paper uses PPO) with a KL term (kl_coef > 0) and logp_ref from the
    stage-1 model. Not TRL's "MPO" (InternVL's mixed loss), a different method.
    """

    dpo: DPOConfig = DPOConfig()
    easy_fraction: float = 0.5
    """Share of pairs, by descending score gap, trained in stage 1 [inferred: the paper splits by gap;
    the median split is this module's default]."""

    def __post_init__(self) -> None:
        if not 0.0 < self.easy_fraction <= 1.0:
            raise ValueError(f"easy_fraction must be in (0, 1], got {self.easy_fraction}")


def mpo_split(score_gap: Tensor, easy_fraction: float) -> Tensor:
    """(N,) reward-model score gaps r(y_w) - r(y_l) of the whole preference set -> (N,) bool easy mask.

    The ceil(easy_fraction * N) pairs with the largest gap are easy (stage 1); the rest are hard (stage 2).
    Call once on the whole dataset, not per batch.
    """
    n_easy = math.ceil(easy_fraction * score_gap.numel())
    order = torch.sort(-score_gap, stable=True).indices
    easy = torch.zeros_like(score_gap, dtype=torch.bool)
    easy[order[:n_easy]] = True
    return easy


def mpo_stage1_loss(cfg: MPOConfig, batch: PreferenceBatch) -> tuple[Tensor, Metrics]:
    """Stage 1: DPO restricted to the easy pairs, given as ``batch.pair_mask`` (from ``mpo_split``)."""
    if batch.pair_mask is None:
        raise ValueError("MPO stage 1 needs batch.pair_mask = the easy pairs (see mpo_split)")
    return dpo_loss(cfg.dpo, batch)
