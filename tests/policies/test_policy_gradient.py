"""Shared policy-gradient blocks (robot/core/policy_gradient.py): worked numbers and properties.

Every expected value is derived in the comments from the formula in the function's docstring.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robot.core.policy_gradient import (
    AdvantageEstimator,
    KLEstimator,
    LossAgg,
    WeightScheme,
    adaptive_clip_bounds,
    advantage_weights,
    aggregate_loss,
    beta_normalized_advantage,
    beta_params_from_success_rates,
    chi2_occupancy_penalty,
    clipped_surrogate,
    entropy_change_weights,
    entropy_from_logits,
    group_advantage,
    group_all_equal,
    group_mean_advantage,
    group_zscore_advantage,
    importance_ratio,
    kl_estimate,
    leave_one_out_advantage,
    masked_mean,
    masked_sum,
    reinforce_loss,
    truncated_importance_weight,
)

T = torch.tensor

# Two interleaved groups with non-contiguous ids: group 7 has rewards [1, 0, 0, 1], group 3 [1, 1, 1, 1].
GROUP_IDS = T([7, 3, 7, 3, 7, 3, 7, 3])
REWARDS = T([1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0])


def close(actual, expected, atol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


# ---------------------------------------------------------------------------- advantages


def test_group_zscore_advantage_worked():
    # group 7: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, A = +-0.5 / sqrt(1/3) = +-0.8660; group 3: A = 0
    a = 0.5 / math.sqrt(1 / 3)
    close(group_zscore_advantage(REWARDS, GROUP_IDS), [a, 0, -a, 0, -a, 0, a, 0], atol=1e-5)


def test_group_mean_and_leave_one_out_worked():
    close(group_mean_advantage(REWARDS, GROUP_IDS), [0.5, 0, -0.5, 0, -0.5, 0, 0.5, 0])
    # RLOO: r = 1 -> 1 - mean(0, 0, 1) = 2/3; r = 0 -> 0 - mean(1, 0, 1) = -2/3
    loo = leave_one_out_advantage(REWARDS, GROUP_IDS)
    close(loo, [2 / 3, 0, -2 / 3, 0, -2 / 3, 0, 2 / 3, 0])
    # a singleton group has no other member to form a baseline: A = 0
    close(leave_one_out_advantage(T([5.0]), T([0])), [0.0])


def test_group_advantage_dispatch_and_integer_rewards():
    ints = REWARDS.long()
    for est, fn in [
        (AdvantageEstimator.GROUP_ZSCORE, group_zscore_advantage),
        (AdvantageEstimator.GROUP_MEAN, group_mean_advantage),
        (AdvantageEstimator.LEAVE_ONE_OUT, leave_one_out_advantage),
    ]:
        close(group_advantage(ints, GROUP_IDS, est), fn(REWARDS, GROUP_IDS))
    close(group_advantage(ints, GROUP_IDS, AdvantageEstimator.NONE), REWARDS)


def test_group_all_equal():
    assert group_all_equal(REWARDS, GROUP_IDS).tolist() == [False, True] * 4


def test_beta_params_method_of_moments_worked():
    # p = (0.25, 0.5, 0.75): mu = 0.5, unbiased var = (0.0625 + 0 + 0.0625) / 2 = 0.0625,
    # k = 0.25 / 0.0625 - 1 = 3, a = b = 1.5, alpha = beta = 1 + 1.5 / 3 = 1.5
    alpha, beta = beta_params_from_success_rates(T([0.25, 0.5, 0.75]))
    close(alpha, 1.5)
    close(beta, 1.5)
    with pytest.raises(ValueError, match="at least 2 prompts"):
        beta_params_from_success_rates(T([0.5]))


def test_beta_normalized_advantage_worked():
    # alpha = beta = 2: f(0.5) = 0.5 * 0.5 / B(2, 2) = 0.25 / (1/6) = 1.5, so A = (s - 0.5) / 1.5 = +-1/3
    out = beta_normalized_advantage(T([1.0, 0.0]), T([0, 0]), alpha=2.0, beta=2.0)
    close(out.advantages, [1 / 3, -1 / 3])
    # Dynamic: success rates 1/4, 1/2, 3/4 (G = 4) give alpha = beta = 1.5 (test above);
    # f(p) = sqrt(p (1 - p)) / B(1.5, 1.5) with B(1.5, 1.5) = pi / 8.
    rewards = T([1.0, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0])
    groups = T([0] * 4 + [1] * 4 + [2] * 4)
    out = beta_normalized_advantage(rewards, groups)
    close(out.alpha, 1.5)
    p = T([0.25] * 4 + [0.5] * 4 + [0.75] * 4)
    expected = (rewards - p) * (math.pi / 8) / (p * (1 - p)).sqrt()
    close(out.advantages, expected, atol=1e-5)
    # Rewards in [-1, 1] are rescaled to [0, 1] first; out-of-range rewards are refused.
    close(
        beta_normalized_advantage(T([1.0, -1.0]), T([0, 0]), alpha=2.0, beta=2.0, reward_min=-1).advantages,
        [1 / 3, -1 / 3],
    )
    with pytest.raises(ValueError, match="must lie in"):
        beta_normalized_advantage(T([2.0, 0.0]), T([0, 0]), alpha=1.0, beta=1.0)


def test_bnpo_equals_dr_grpo_at_alpha_beta_one():
    # f_Beta(p; 1, 1) = 1 on [0, 1], so A = s - p = r - mean_g r on binary rewards.
    g = torch.Generator().manual_seed(0)
    rewards = torch.randint(0, 2, (32,), generator=g).float()
    groups = torch.arange(32) // 8
    bnpo = beta_normalized_advantage(rewards, groups, alpha=1.0, beta=1.0).advantages
    close(bnpo, group_mean_advantage(rewards, groups))


def test_bnpo_proportional_to_grpo_at_alpha_beta_three_halves():
    # f(p; 3/2, 3/2) = sqrt(p (1 - p)) / B(3/2, 3/2), B = pi/8. For binary rewards the group's unbiased
    # std is sqrt(G/(G-1) p (1 - p)), so A_BNPO / A_GRPO = (pi/8) sqrt(G/(G-1)) for every sample
    # (up to GRPO's eps = 1e-6 in the denominator, hence rtol 1e-4).
    G = 8
    rewards = T([1.0, 0, 0, 0, 0, 0, 0, 0] + [1.0, 1, 1, 0, 0, 0, 0, 0] + [1.0, 1, 1, 1, 1, 1, 1, 0])
    groups = torch.arange(24) // G
    bnpo = beta_normalized_advantage(rewards, groups, alpha=1.5, beta=1.5).advantages
    grpo = group_zscore_advantage(rewards, groups)
    torch.testing.assert_close(bnpo / grpo, torch.full((24,), math.pi / 8 * math.sqrt(G / (G - 1))), rtol=1e-4, atol=0)


def test_bnpo_reward_decomposition_averages_components():
    # Two identical components average to the one-component advantage; a constant second component
    # (all groups at p = 1) contributes 0, halving it.
    rewards = T([1.0, 0, 1, 1, 0, 0, 1, 0])
    groups = torch.arange(8) // 4
    single = beta_normalized_advantage(rewards, groups, alpha=1.0, beta=1.0).advantages
    both = beta_normalized_advantage(torch.stack([rewards, rewards], 1), groups, alpha=1.0, beta=1.0)
    close(both.advantages, single)
    half = beta_normalized_advantage(torch.stack([rewards, torch.ones(8)], 1), groups, alpha=1.0, beta=1.0)
    close(half.advantages, single / 2)


# ---------------------------------------------------------------------------- importance weights


def test_importance_weights():
    close(importance_ratio(T([math.log(2.0)]), T([0.0])), [2.0])
    # log-ratio 50 is clamped to 20 (verl), so the ratio stays finite
    close(importance_ratio(T([50.0]), T([0.0])), [math.exp(20.0)], atol=1.0)
    close(truncated_importance_weight(T([0.1, 1.0, 5.0]), 0.6, 2.0), [0.6, 1.0, 2.0])
    # AWR / RED-Weight: exp(A / temp), clamped
    close(advantage_weights(T([0.0, math.log(3.0), 10.0]), 1.0, max_weight=5.0), [1.0, 3.0, 5.0])
    with pytest.raises(ValueError, match="temperature"):
        advantage_weights(T([0.0]), 0.0)


# ---------------------------------------------------------------------------- surrogates


def test_clipped_surrogate_worked():
    # logp_old = 0, so rho = exp(logp). eps_low 0.2, eps_high 0.28, dual clip c = 3.
    rho = T([[1.5, 0.5, 0.5, 2.0, 4.0, 1.0]])
    adv = T([[1.0, 1.0, -1.0, -1.0, -1.0, -2.0]])
    logp = rho.log().requires_grad_(True)
    out = clipped_surrogate(logp, torch.zeros_like(logp), adv, torch.ones_like(adv), 0.2, 0.28, dual_clip=3.0)
    # 1: A>0, rho 1.5 > 1.28: -min(1.5, 1.28) = -1.28, clipped (no gradient)
    # 2: A>0, rho 0.5: -min(0.5, 0.8) = -0.5, gradient d(-rho A)/dlogp = -rho A = -0.5
    # 3: A<0, rho 0.5 < 0.8: -min(-0.5, -0.8) = 0.8, clipped
    # 4: A<0, rho 2: -min(-2, -1.28) = 2 < 3 |A| = 3, gradient -rho A = 2
    # 5: A<0, rho 4: 4 > 3 |A| -> dual clip 3, no gradient
    # 6: A=-2, rho 1: 2, gradient -rho A = 2
    close(out.loss, [[-1.28, -0.5, 0.8, 2.0, 3.0, 2.0]])
    assert out.clipped.tolist() == [[True, False, True, False, True, False]]
    out.loss.sum().backward()
    close(logp.grad, [[0.0, -0.5, 0.0, 2.0, 0.0, 2.0]])


def test_clipped_surrogate_masks_padding_even_if_nan():
    logp = T([[0.0, float("nan")]])
    out = clipped_surrogate(logp, torch.zeros_like(logp), T([[1.0]]), T([[1, 0]]), 0.2, 0.2)
    close(out.loss, [[-1.0, 0.0]])
    with pytest.raises(ValueError, match="dual_clip"):
        clipped_surrogate(logp, logp, T([[1.0]]), T([[1, 0]]), 0.2, 0.2, dual_clip=0.5)


def test_reinforce_loss_gradient_is_minus_advantage():
    logp = T([[-1.0, -2.0]], requires_grad=True)
    reinforce_loss(logp, T([[2.0, -1.0]]), weight=T([[0.5, 1.0]])).sum().backward()
    close(logp.grad, [[-1.0, 1.0]])  # -(A w)


# Positive tokens rho 1.0, 1.5 (A = +1); negative tokens rho 0.75, 1.0, 1.0 (A = -1).
BAPO_RATIO = T([[1.0, 1.5], [0.75, 1.0], [1.0, 1.0]])
BAPO_ADV = T([[1.0], [-1.0], [-1.0]])
BAPO_MASK = T([[1, 1], [1, 1], [1, 0]])
BAPO_GRID = dict(low_range=(0.6, 0.9), high_range=(1.2, 2.0), step_low=0.1, step_high=0.4)


def test_adaptive_clip_bounds_worked():
    # Candidates: (0.6, 1.2), (0.7, 1.2), (0.8, 1.2), (0.9, 1.2), then (0.9, 1.6), (0.9, 2.0).
    # pos(c_high = 1.2) = 1.0 (rho 1.5 is clipped); neg(c_low <= 0.7) = 0.75 + 1 + 1 = 2.75, neg(c_low >= 0.8) = 2.
    # share rho0 = 0.5 needs pos >= neg: fails up to (0.9, 1.2); at (0.9, 1.6) pos = 2.5 >= 2.
    b = adaptive_clip_bounds(BAPO_RATIO, BAPO_ADV, BAPO_MASK, positive_share=0.5, **BAPO_GRID)
    close(b.low, 0.9)
    close(b.high, 1.6)
    close(b.positive_share, 2.5 / 4.5)
    # rho0 = 1/3 (the code's pos/neg target 0.5) needs pos >= neg / 2: (0.7, 1.2) has 1 < 1.375, (0.8, 1.2) 1 >= 1.
    b = adaptive_clip_bounds(BAPO_RATIO, BAPO_ADV, BAPO_MASK, positive_share=1 / 3, **BAPO_GRID)
    close(b.low, 0.8)
    close(b.high, 1.2)
    # Another rank with much more negative mass: no candidate reaches the share, the search ends at (b-, b+).
    def other_rank(sums):
        return sums + T([[0.0] * 6, [100.0] * 6])

    b = adaptive_clip_bounds(BAPO_RATIO, BAPO_ADV, BAPO_MASK, reduce_sum=other_rank, **BAPO_GRID)
    close(b.low, 0.9)
    close(b.high, 2.0)


def test_adaptive_clip_bounds_on_policy_start_bounds_suffice():
    # rho = 1 everywhere with balanced advantages: pos = neg at the first candidate, bounds stay (a-, a+).
    b = adaptive_clip_bounds(torch.ones(2, 1), T([[1.0], [-1.0]]), torch.ones(2, 1))
    close(b.low, 0.6)
    close(b.high, 1.2)


# ---------------------------------------------------------------------------- regularisers


def test_kl_estimators_worked():
    # d = log 0.5 - log 0.25 = log 2; k1 = 0.6931, k2 = 0.5 * 0.4805 = 0.2402, k3 = 0.5 + log 2 - 1 = 0.1931
    logp, ref = T([math.log(0.5)]), T([math.log(0.25)])
    d = math.log(2.0)
    close(kl_estimate(logp, ref, KLEstimator.K1), [d])
    close(kl_estimate(logp, ref, KLEstimator.K2), [0.5 * d * d])
    close(kl_estimate(logp, ref, KLEstimator.K3), [0.5 + d - 1])
    # k3 is clamped at 10 (verl) when the reference probability is vanishingly small relative to pi
    close(kl_estimate(T([0.0]), T([30.0]), KLEstimator.K3), [10.0])


def test_k1_and_k3_are_unbiased_estimates_of_kl():
    # Exact KL(p || q) for p = (0.7, 0.2, 0.1), q = (0.4, 0.4, 0.2) against the exact expectation
    # of the estimators under p (no sampling needed: enumerate the three outcomes).
    p, q = T([0.7, 0.2, 0.1]), T([0.4, 0.4, 0.2])
    kl = (p * (p / q).log()).sum()
    for est in (KLEstimator.K1, KLEstimator.K3):
        close((p * kl_estimate(p.log(), q.log(), est)).sum(), kl)


def test_entropy_from_logits():
    close(entropy_from_logits(torch.zeros(2, 4)), [math.log(4)] * 2)
    # p = (0.5, 0.5, ~0): H = log 2
    close(entropy_from_logits(T([[0.0, 0.0, -100.0]])), [math.log(2)], atol=1e-5)


def test_chi2_occupancy_penalty_worked():
    # L = (log 2, 0): chi2 = mean[(2 - 1) + (0.5 - 1), 0] = 0.25, penalty sqrt(0.25) = 0.5;
    # kl = mean[log 2 + 0.5 - 1, 0] = (log 2 - 0.5) / 2
    out = chi2_occupancy_penalty(T([math.log(2.0), 0.0]))
    close(out.chi2, 0.25)
    close(out.penalty, 0.5)
    close(out.kl, (math.log(2) - 0.5) / 2)
    # identical policies: chi2 = 0, the penalty is floored at sqrt(1e-4) = 0.01
    close(chi2_occupancy_penalty(torch.zeros(3)).penalty, 0.01)


def test_entropy_change_weights_worked():
    # On-policy (pi_old = p). Token 1: p = 0.5, H = 1, A = +1: Omega = (1/0.5) 0.5 0.5 (ln 0.5 + 1) = 0.5 (1 - ln 2)
    # Token 2: p = 0.25, H = 0.5, A = -1: Omega = (-1/0.25) 0.25 0.75 (ln 0.25 + 0.5) = -0.75 (0.5 - ln 4)
    logp = T([[math.log(0.5)], [math.log(0.25)]])
    H, A, mask = T([[1.0], [0.5]]), T([[1.0], [-1.0]]), torch.ones(2, 1)
    o1, o2 = 0.5 * (1 - math.log(2)), abs(-0.75 * (0.5 - math.log(4)))
    # exponential: k = -ln 0.8 / max|Omega| = -ln 0.8 / o2; w = exp(-k |Omega|) -> w2 = 0.8 exactly
    k = -math.log(0.8) / o2
    w = entropy_change_weights(logp, logp, H, A, mask)
    close(w, [[math.exp(-k * o1)], [0.8]])
    # linear between w_max = 1.2 at min|Omega| and w_min = 0.8 at max|Omega|
    w = entropy_change_weights(logp, logp, H, A, mask, scheme=WeightScheme.LINEAR, w_min=0.8, w_max=1.2)
    close(w, [[1.2], [0.8]])
    # padding gets weight 0; the exponential scale floors max|Omega| at 0.02
    w = entropy_change_weights(logp, logp, H, A * 0, T([[1.0], [0.0]]))
    close(w, [[1.0], [0.0]])


# ---------------------------------------------------------------------------- aggregation

AGG_LOSS = T([[1.0, 2.0, 3.0], [4.0, 99.0, 99.0]])
AGG_MASK = T([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    "mode, expected",
    [
        (LossAgg.TOKEN_MEAN, (1 + 2 + 3 + 4) / 4),  # 2.5
        (LossAgg.SEQ_MEAN_TOKEN_SUM, (6 + 4) / 2),  # 5
        (LossAgg.SEQ_MEAN_TOKEN_MEAN, (6 / 3 + 4 / 1) / 2),  # 3
        (LossAgg.SEQ_MEAN_TOKEN_SUM_NORM, (6 + 4) / (2 * 4)),  # norm_len 4: 1.25
    ],
    ids=lambda v: v.value if isinstance(v, LossAgg) else "",
)
def test_aggregate_loss_worked(mode, expected):
    close(aggregate_loss(AGG_LOSS, AGG_MASK, mode, norm_len=4), expected)


def test_aggregate_loss_errors():
    with pytest.raises(ValueError, match="norm_len"):
        aggregate_loss(AGG_LOSS, AGG_MASK, LossAgg.SEQ_MEAN_TOKEN_SUM_NORM)
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        aggregate_loss(AGG_LOSS[0], AGG_MASK[0], LossAgg.TOKEN_MEAN)


def test_local_token_mean_is_not_split_invariant():
    # The pitfall the global normaliser fixes: rows (6 over 3 tokens) and (4 over 1 token) averaged per
    # micro-batch give (2 + 4) / 2 = 3 (gradient accumulation averages), not the batch's 10 / 4 = 2.5.
    local = [aggregate_loss(AGG_LOSS[i : i + 1], AGG_MASK[i : i + 1], LossAgg.TOKEN_MEAN) for i in range(2)]
    close(sum(local) / 2, 3.0)
    glob = [
        aggregate_loss(AGG_LOSS[i : i + 1], AGG_MASK[i : i + 1], LossAgg.TOKEN_MEAN, num_tokens_global=4)
        for i in range(2)
    ]
    close(sum(glob), 2.5)


@settings(max_examples=40, deadline=None)
@given(
    B=st.integers(1, 8),
    T_=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    cuts=st.lists(st.integers(1, 7), max_size=4),
    mode=st.sampled_from(list(LossAgg)),
)
def test_aggregate_loss_invariant_to_micro_batch_split(B, T_, seed, cuts, mode):
    g = torch.Generator().manual_seed(seed)
    loss = torch.randn(B, T_, generator=g, requires_grad=True)
    mask = (torch.rand(B, T_, generator=g) < 0.7).float()
    counts = dict(num_tokens_global=mask.sum(), num_seqs_global=B, norm_len=7)
    full = aggregate_loss(loss, mask, mode, **counts)
    (full_grad,) = torch.autograd.grad(full, loss)

    bounds = sorted({0, B, *[c for c in cuts if c < B]})
    parts = [
        aggregate_loss(loss[a:b], mask[a:b], mode, **counts) for a, b in zip(bounds[:-1], bounds[1:], strict=True)
    ]
    split = torch.stack(parts).sum()
    (split_grad,) = torch.autograd.grad(split, loss)
    torch.testing.assert_close(split, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(split_grad, full_grad, atol=1e-6, rtol=1e-5)


def test_masked_reductions_ignore_nan_padding():
    x, m = T([[1.0, float("nan")], [3.0, 5.0]]), T([[1, 0], [1, 1]])
    close(masked_sum(x, m), 9.0)
    close(masked_mean(x, m, dim=-1), [1.0, 4.0])
