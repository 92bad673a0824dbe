"""Reward and data shaping for planner post-training (reference B6), applied before advantages.

Each function maps outcome rewards (B,) plus what a method needs (lengths, judge flags, noise rates)
to new rewards (B,). They know nothing of models or tokens; the objectives in ``objectives.py`` call
them inside their advantage step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from robot.core.policy_gradient import group_means


def overlong_penalty(lengths: Tensor, max_len: int, buffer_len: int, penalty_factor: float = 1.0) -> Tensor:
    """DAPO soft overlong punishment (arXiv 2503.14476, reference section 4), added to the task reward.

    R_len = 0 for |y| <= L_max - L_cache; ((L_max - L_cache) - |y|) / L_cache inside the buffer;
    -1 at and beyond L_max; all times penalty_factor. (verl's variant keeps falling linearly beyond L_max;
    a generation cut at L_max never gets there.) lengths (B,) -> (B,).
    """
    if not 0 < buffer_len <= max_len:
        raise ValueError(f"need 0 < buffer_len <= max_len, got buffer_len={buffer_len}, max_len={max_len}")
    expected = max_len - buffer_len
    penalty = ((expected - lengths.float()) / buffer_len).clamp(-1.0, 0.0)
    return penalty * penalty_factor


def flawed_positive_rewards(rewards: Tensor, flawed: Tensor, penalty: float = 1.0) -> Tensor:
    """FAPO: R = R_RLVR - lambda [correct and judged flawed] (arXiv 2510.22543, reference section 9).

    ``flawed`` (B,) bool comes from the judge (here: the rule-based step checker on plans); it is only
    read for correct rollouts (reward > 0). With R_RLVR = +-1 and lambda = 1 a flawed positive gets 0,
    whose GRPO advantage has the sign of (wrong - fully correct) fractions in its group: flawed shortcuts
    are exploited early and penalised once most answers are right. (B,) -> (B,).
    """
    correct = rewards > 0
    return rewards - penalty * (correct & flawed.bool()).to(rewards.dtype)


def length_penalty_rewards(
    rewards: Tensor, lengths: Tensor, group_ids: Tensor, fraction: float = 0.2, alpha: float = 0.6
) -> tuple[Tensor, Tensor]:
    """GRPO-lambda reward switch (arXiv 2505.18086, reference section 11).

    Groups are ranked by correctness ratio c_q = #correct / G (correct = reward > 0); the top
    ceil(fraction * N) groups (ties: lower group id first) get the length-penalty reward
      r_i = 1 - alpha * sigmoid((L_i - mean L_correct) / std L_correct) if correct else 0,
    mean/std (unbiased) over the correct completions of that group, z = 0 when fewer than two are correct
    (std undefined); the other groups get 0/1 correctness. alpha = 0.6 is one reimplementation's value,
    not verified in the paper. Returns (rewards (B,), penalised (B,) bool).
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction (lambda) must be in [0, 1], got {fraction}")
    _, inverse = torch.unique(group_ids, return_inverse=True)
    correct = (rewards > 0).float()  # (B,)
    ratio = group_means(correct, group_ids)  # (N,) c_q
    n_top = math.ceil(fraction * ratio.numel())
    order = torch.sort(-ratio, stable=True).indices  # (N,) best groups first
    top_group = torch.zeros_like(ratio, dtype=torch.bool)
    top_group[order[:n_top]] = True
    penalised = top_group[inverse]  # (B,)

    # Length statistics over the correct completions of each group.
    L = lengths.float()
    n_correct = torch.zeros_like(ratio).index_add_(0, inverse, correct)  # (N,)
    mean_c = torch.zeros_like(ratio).index_add_(0, inverse, L * correct) / n_correct.clamp_min(1)
    sq_dev = (L - mean_c[inverse]) ** 2 * correct
    std_c = (torch.zeros_like(ratio).index_add_(0, inverse, sq_dev) / (n_correct - 1).clamp_min(1)).sqrt()
    enough = (n_correct >= 2)[inverse]
    z = torch.where(enough, (L - mean_c[inverse]) / std_c[inverse].clamp_min(1e-6), torch.zeros_like(L))
    length_reward = correct * (1 - alpha * torch.sigmoid(z))
    return torch.where(penalised, length_reward, correct), penalised


def backward_corrected_reward(noisy_reward: Tensor, fp_rate: float, fn_rate: float) -> Tensor:
    """PGBC: R_hat = (R~ - rho0) / (1 - rho0 - rho1), with E[R_hat | R] = R (arXiv 2510.00915, section 12).

    rho0 = P(R~ = 1 | R = 0) (false positives), rho1 = P(R~ = 0 | R = 1) (false negatives); binary R~.
    An affine map of R~: a group z-score cancels it exactly, a group-mean baseline keeps only the
    1/(1 - rho0 - rho1) scale. It changes the update only without a baseline or with prompt-dependent
    rates. (B,) -> (B,).
    """
    _check_noise_rates(fp_rate, fn_rate)
    return (noisy_reward.float() - fp_rate) / (1 - fp_rate - fn_rate)


def forward_correction_weight(noisy_reward: Tensor, fn_rate: float) -> Tensor:
    """PGFC score-function weight: w = rho1 if R~ = 1 else rho1 - 1 (arXiv 2510.00915, section 12).

    E[w | R = 1] = 0 and E[w | R = 0] = -(1 - rho0 - rho1), so E[w grad log pi] is (1 - rho0 - rho1) times
    the clean gradient; only rho1 is needed. Note w = R~ - (1 - rho1): a constant shift of R~, so any
    group-mean baseline removes it entirely (the update equals the uncorrected mean-centred one) [inferred].
    (B,) -> (B,).
    """
    _check_noise_rates(0.0, fn_rate)
    return noisy_reward.float() - (1 - fn_rate)


def _check_noise_rates(fp_rate: float, fn_rate: float) -> None:
    if not (0.0 <= fp_rate < 1.0 and 0.0 <= fn_rate < 1.0 and fp_rate + fn_rate < 1.0):
        raise ValueError(
            f"noise rates must satisfy 0 <= fp_rate, fn_rate and fp_rate + fn_rate < 1; "
            f"got fp_rate={fp_rate}, fn_rate={fn_rate}"
        )
