"""RL objectives of the planner (policies/planner/objectives.py): worked numbers, equivalences, invariance.

Every expected value is derived in the comments. The shared toy rollout: two prompts, G = 2, T = 2,
behaviour log-probs 0 so that the ratio of a token is exp(logp).
"""

import math

import pytest
import torch

from policies.planner.objectives import (
    RL_OBJECTIVES,
    AsymREConfig,
    BAPOConfig,
    BNPOConfig,
    DAPOConfig,
    DrGRPOConfig,
    FAPOConfig,
    GRPOConfig,
    GRPOLambdaConfig,
    NFTConfig,
    OPMDBaseline,
    OPMDConfig,
    PGBCConfig,
    PGFCConfig,
    Rollout,
    STEERConfig,
    SurrogateConfig,
    TokenBatch,
    bapo_loss,
    bnpo_advantages,
    clipped_policy_loss,
    dapo_advantages,
    drgrpo_advantages,
    fapo_advantages,
    get_rl_objective,
    grpo_advantages,
    grpo_lambda_advantages,
    nft_advantages,
    nft_loss,
    opmd_advantages,
    opmd_loss,
    pgbc_advantages,
    pgfc_advantages,
    steer_loss,
)
from policies.planner.rewards import (
    backward_corrected_reward,
    forward_correction_weight,
    length_penalty_rewards,
    overlong_penalty,
)
from robot.core.policy_gradient import AdvantageEstimator, KLEstimator, KLPlacement, LossAgg, group_advantage

T = torch.tensor


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


# Prompt 0: seq0 correct (2 tokens), seq1 wrong (1 token). Prompt 1: seq2, seq3 both correct.
GROUPS = T([0, 0, 1, 1])
REWARDS = T([1.0, 0.0, 1.0, 1.0])
MASK = T([[1.0, 1.0], [1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
# Token ratios: seq0 (1.5, 1.0), seq1 (0.5, pad), seq2 and seq3 on-policy.
RHO = T([[1.5, 1.0], [0.5, 1.0], [1.0, 1.0], [1.0, 1.0]])
A_GRPO = 0.5 / math.sqrt(0.5)  # prompt 0: mean 0.5, unbiased std sqrt(0.5): A = +-0.7071


def rollout(**kw):
    return Rollout(**{"rewards": REWARDS, "group_ids": GROUPS, "mask": MASK, **kw})


def micro(adv, rows=slice(None), rho=RHO, **kw):
    logp = rho[rows].log().clone().requires_grad_(True)
    return TokenBatch(logp, torch.zeros_like(logp), MASK[rows], adv[rows], **kw)


def run_step(name, cfg, ro, logp, logp_old, splits=(), **extra):
    """The trainer's contract: advantages over the whole rollout, drop rows that are not kept, count
    tokens and sequences globally, sum the micro-batch losses. Returns (loss, grad wrt logp)."""
    _, adv_fn, loss_fn = get_rl_objective(name)
    adv = adv_fn(cfg, ro)
    keep = adv.keep
    logp = logp[keep].detach().requires_grad_(True)
    mask, values = ro.mask[keep], adv.values[keep]
    rows = {k: v[keep] for k, v in extra.items()}
    n = int(keep.sum())
    counts = dict(num_tokens_global=mask.sum(), num_seqs_global=n)
    bounds = [0, *[c for c in splits if c < n], n]
    total = 0.0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = {k: v[a:b] for k, v in rows.items()}
        batch = TokenBatch(logp[a:b], logp_old[keep][a:b], mask[a:b], values[a:b], **part, **counts)
        total = total + loss_fn(cfg, batch)[0]
    (grad,) = torch.autograd.grad(total, logp)
    return total, grad


# ---------------------------------------------------------------------------- GRPO family


def test_grpo_worked():
    cfg = GRPOConfig()
    adv = grpo_advantages(cfg, rollout())
    close(adv.values, [A_GRPO, -A_GRPO, 0, 0])
    batch = micro(adv.values, logp_ref=RHO.log())  # reference = current policy: k3 = 0
    loss, m = clipped_policy_loss(cfg, batch)
    # clip 0.2: seq0 tokens -1.2 A (clipped) and -A; seq1 (A < 0, rho 0.5 < 0.8) 0.8 |A| (clipped).
    # seq-mean-token-mean: [(-1.2 A - A) / 2 + 0.8 A / 1 + 0 + 0] / 4 = -0.3 A / 4
    close(loss, -0.3 * A_GRPO / 4)
    close(m["policy/clip_frac"], 2 / 6)  # 2 of the 6 valid tokens
    close(m["policy/kl"], 0.0)


def test_grpo_kl_in_loss_worked():
    cfg = GRPOConfig(surrogate=SurrogateConfig(agg=LossAgg.TOKEN_MEAN, kl_coef=0.04))
    adv = grpo_advantages(cfg, rollout())
    ref = RHO.log().clone()
    ref[0, 0] -= math.log(2.0)  # d = log 2 on one token: k3 = 0.5 + log 2 - 1
    loss, _ = clipped_policy_loss(cfg, micro(adv.values, logp_ref=ref))
    # token-mean over 6 tokens of (-1.2 A - A + 0.8 A) plus 0.04 k3
    k3 = 0.5 + math.log(2) - 1
    close(loss, (-1.4 * A_GRPO + 0.04 * k3) / 6)
    with pytest.raises(ValueError, match="logp_ref"):
        clipped_policy_loss(cfg, micro(adv.values))


def test_kl_in_reward_worked():
    # Prompt 1 (both correct) differs only in KL: seq2 has sum_t k1 = 0, seq3 one valid token with
    # d = log pi_old - log pi_ref = 2. Shaped rewards 1 and 1 - 0.1 * 2 = 0.8 -> A = +-0.7071.
    cfg = GRPOConfig(
        surrogate=SurrogateConfig(kl_coef=0.1, kl_estimator=KLEstimator.K1, kl_placement=KLPlacement.REWARD)
    )
    logp_old = torch.zeros(4, 2)
    logp_ref = torch.zeros(4, 2)
    logp_ref[3, 0] = -2.0  # d = logp_old - logp_ref = 2 on seq3's only token
    logp_ref[3, 1] = -50.0  # padding must not count
    adv = grpo_advantages(cfg, rollout(logp_old=logp_old, logp_ref=logp_ref))
    close(adv.values, [A_GRPO, -A_GRPO, A_GRPO, -A_GRPO])
    # the loss then has no KL term
    loss, m = clipped_policy_loss(cfg, micro(adv.values))
    assert "policy/kl" not in m
    with pytest.raises(ValueError, match="logp_old"):
        grpo_advantages(cfg, rollout())


def test_dr_grpo_worked():
    cfg = DrGRPOConfig(surrogate=SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_SUM_NORM, norm_len=4))
    adv = drgrpo_advantages(cfg, rollout())
    close(adv.values, [0.5, -0.5, 0, 0])  # mean-only
    loss, _ = clipped_policy_loss(cfg, micro(adv.values))
    # sum = -1.2 * 0.5 - 0.5 + 0.8 * 0.5 = -0.7, over N_seq * L_max = 4 * 4
    close(loss, -0.7 / 16)


def test_dapo_worked():
    # Overlong shaping with L_max = 3, L_cache = 2: length 1 -> 0, length 2 -> (1 - 2) / 2 = -0.5.
    close(overlong_penalty(T([1, 2, 3, 5]), 3, 2), [0.0, -0.5, -1.0, -1.0])
    cfg = DAPOConfig(max_response_len=3, overlong_buffer_len=2)
    adv = dapo_advantages(cfg, rollout())
    # Prompt 1 is all-correct: dropped on the task reward even though shaping (0.5 vs 1) differs.
    assert adv.keep.tolist() == [True, True, False, False]
    # Prompt 0 shaped rewards (0.5, 0): z-score still +-0.7071.
    close(adv.values[:2], [A_GRPO, -A_GRPO])
    loss, _ = run_step("dapo", cfg, rollout(), RHO.log(), torch.zeros(4, 2))
    # clip-higher 1.28: seq0 -1.28 A - A, seq1 0.8 A; token-mean over the 3 kept tokens
    close(loss, (-1.28 - 1 + 0.8) * A_GRPO / 3)


def test_dapo_drops_all_equal_groups():
    # With dynamic sampling the all-correct prompt contributes nothing, not even tokens to the
    # normaliser: the loss equals the loss of the rollout without it.
    cfg = DAPOConfig(overlong_buffer_len=0)
    full, _ = run_step("dapo", cfg, rollout(), RHO.log(), torch.zeros(4, 2))
    ro_without = Rollout(REWARDS[:2], GROUPS[:2], MASK[:2])
    without, _ = run_step("dapo", cfg, ro_without, RHO[:2].log(), torch.zeros(2, 2))
    close(full, without)
    # Without it, prompt 1's 3 zero-advantage tokens dilute the token mean: 3 / 6 of the loss.
    no_filter_cfg = DAPOConfig(overlong_buffer_len=0, dynamic_sampling=False)
    no_filter, _ = run_step("dapo", no_filter_cfg, rollout(), RHO.log(), torch.zeros(4, 2))
    close(no_filter, full * 3 / 6)


def test_dapo_overlong_filtering_drops_truncated():
    cfg = DAPOConfig(overlong_buffer_len=0, dynamic_sampling=False, mask_truncated=True)
    adv = dapo_advantages(cfg, rollout(truncated=T([False, True, False, False])))
    assert adv.keep.tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="truncated"):
        dapo_advantages(cfg, rollout())


def test_bnpo_worked_and_equivalences():
    # Fixed alpha = beta = 1: the Dr.GRPO advantage; with the same surrogate, the same loss.
    surrogate = SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_SUM)
    bnpo = BNPOConfig(surrogate=surrogate, alpha=1.0, beta=1.0)
    adv = bnpo_advantages(bnpo, rollout())
    close(adv.values, [0.5, -0.5, 0, 0])
    dr = drgrpo_advantages(DrGRPOConfig(surrogate=surrogate), rollout())
    close(clipped_policy_loss(bnpo, micro(adv.values))[0], clipped_policy_loss(bnpo, micro(dr.values))[0])
    # Dynamic: success rates 0.5 and 1 -> mu 0.75, var 0.125, k = 0.1875/0.125 - 1 = 0.5,
    # a = 0.375, b = 0.125, alpha = 1.125, beta = 1.0417; f(0.5) = 0.5^0.125 0.5^0.0417 / B(alpha, beta)
    adv = bnpo_advantages(BNPOConfig(), rollout())
    alpha, beta = 1 + 0.375 / 3, 1 + 0.125 / 3
    log_b = math.lgamma(alpha) + math.lgamma(beta) - math.lgamma(alpha + beta)
    f = math.exp((alpha - 1) * math.log(0.5) + (beta - 1) * math.log(0.5) - log_b)
    close(adv.values, [0.5 / f, -0.5 / f, 0, 0])
    close(adv.metrics["bnpo/alpha"], alpha)


def test_bapo_worked():
    # Sequences: A = +1 with ratios (1.0, 1.5); A = -1 with (0.75, 1.0); A = -1 with (1.0, pad).
    # The bound search (same numbers as the core test) picks (c_low, c_high) = (0.9, 1.6).
    rho = T([[1.0, 1.5], [0.75, 1.0], [1.0, 1.0]])
    mask = T([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    logp = rho.log().requires_grad_(True)
    batch = TokenBatch(logp, torch.zeros(3, 2), mask, T([1.0, -1.0, -1.0]))
    cfg = BAPOConfig(low_range=(0.6, 0.9), high_range=(1.2, 2.0), step_low=0.1, step_high=0.4)
    loss, m = bapo_loss(cfg, batch)
    close(m["bapo/c_low"], 0.9)
    close(m["bapo/c_high"], 1.6)
    # per token: -1, -1.5 (1.5 <= 1.6 unclipped), max(0.75, 0.9) = 0.9 (clipped), 1.0, 1.0; token-mean / 5
    close(loss, (-1 - 1.5 + 0.9 + 1 + 1) / 5)


def test_steer_worked():
    # Two one-token sequences, on-policy: p = 0.5, H = 1, A = +1 and p = 0.25, H = 0.5, A = -1.
    # Omega = 0.5 (1 - ln 2) and 0.75 (ln 4 - 0.5); exponential weights exp(-k |Omega|), k = -ln 0.8 / max,
    # so w2 = 0.8. Per-token surrogate -A = (-1, +1) -> token-mean (-w1 + 0.8) / 2.
    logp = T([[math.log(0.5)], [math.log(0.25)]]).requires_grad_(True)
    batch = TokenBatch(logp, logp.detach(), torch.ones(2, 1), T([1.0, -1.0]), entropy_old=T([[1.0], [0.5]]))
    o1, o2 = 0.5 * (1 - math.log(2)), 0.75 * (math.log(4) - 0.5)
    w1 = math.exp(math.log(0.8) / o2 * o1)
    loss, m = steer_loss(STEERConfig(), batch)
    close(loss, (-w1 + 0.8) / 2)
    close(m["steer/weight_mean"], (w1 + 0.8) / 2)
    with pytest.raises(ValueError, match="entropy_old"):
        steer_loss(STEERConfig(), TokenBatch(logp, logp.detach(), torch.ones(2, 1), T([1.0, -1.0])))


def test_grpo_lambda_worked():
    # Prompt 0: correct (1, 1, 0), lengths (2, 4, 3): accuracy 2/3. Prompt 1: (1, 0, 0): 1/3.
    # fraction 0.5 -> ceil(0.5 * 2) = 1 prompt, the more accurate one, gets the length reward:
    # correct lengths (2, 4): mean 3, std sqrt(2), z = -+0.7071; r = 1 - 0.6 sigmoid(z).
    rewards = T([1.0, 1, 0, 1, 0, 0])
    groups = T([0, 0, 0, 1, 1, 1])
    lengths = T([2, 4, 3, 1, 1, 1])
    shaped, penalised = length_penalty_rewards(rewards, lengths, groups, fraction=0.5, alpha=0.6)
    z = 1 / math.sqrt(2)
    sig = 1 / (1 + math.exp(-z))
    close(shaped, [1 - 0.6 * (1 - sig), 1 - 0.6 * sig, 0, 1, 0, 0])
    assert penalised.tolist() == [True] * 3 + [False] * 3
    # Through the objective: the shaped rewards, z-scored per prompt.
    mask = (torch.arange(4)[None] < lengths[:, None]).float()
    adv = grpo_lambda_advantages(GRPOLambdaConfig(fraction=0.5), Rollout(rewards, groups, mask))
    g0 = shaped[:3]
    close(adv.values[:3], (g0 - g0.mean()) / g0.std())
    # A single correct completion: no std, z = 0, r = 1 - 0.6 / 2.
    shaped, _ = length_penalty_rewards(T([1.0, 0.0]), T([5, 2]), T([0, 0]), fraction=1.0)
    close(shaped, [0.7, 0.0])


def test_fapo_worked():
    # R = +-1; a flawed positive loses 1 -> 0. Prompt 0: one of two correct is flawed, two wrong:
    # (0, 1, -1, -1), mean -0.25 -> the flawed positive's advantage is positive (wrong answers dominate).
    # Prompt 1: three correct (one flawed), one wrong: (0, 1, 1, -1), mean 0.25 -> negative (refinement).
    rewards = T([1.0, 1, -1, -1, 1, 1, 1, -1])
    flawed = T([True, False, False, False, True, False, False, False])
    groups = torch.arange(8) // 4
    mask = torch.ones(8, 1)
    adv = fapo_advantages(FAPOConfig(), Rollout(rewards, groups, mask, flawed=flawed))
    shaped = T([0.0, 1, -1, -1, 0, 1, 1, -1])
    expected = torch.cat([(g - g.mean()) / (g.std() + 1e-6) for g in shaped.split(4)])
    close(adv.values, expected)
    assert adv.values[0] > 0 > adv.values[4]
    close(adv.metrics["fapo/flawed_positive_frac"], 2 / 8)
    with pytest.raises(ValueError, match="flawed"):
        fapo_advantages(FAPOConfig(), Rollout(rewards, groups, mask))


# ---------------------------------------------------------------------------- noisy verifiers


def test_noisy_verifier_corrections_worked():
    # backward: (R~ - 0.2) / (1 - 0.2 - 0.1): R~ = 1 -> 8/7, R~ = 0 -> -2/7
    cfg = PGBCConfig(fp_rate=0.2, fn_rate=0.1)
    close(pgbc_advantages(cfg, rollout()).values, [8 / 7, -2 / 7, 8 / 7, 8 / 7])
    # forward: rho1 = 0.1 if R~ = 1, rho1 - 1 = -0.9 if R~ = 0
    close(pgfc_advantages(PGFCConfig(fn_rate=0.1), rollout()).values, [0.1, -0.9, 0.1, 0.1])
    # Where group normalisation cancels them: z-scoring is refused; under a group-mean baseline the
    # forward correction equals the uncorrected advantage and the backward one is a 1/0.7 rescale.
    with pytest.raises(ValueError, match="cancels"):
        PGBCConfig(estimator=AdvantageEstimator.GROUP_ZSCORE)
    with pytest.raises(ValueError, match="noise rates"):
        PGBCConfig(fp_rate=0.6, fn_rate=0.5)
    mean_fc = pgfc_advantages(PGFCConfig(fn_rate=0.1, estimator=AdvantageEstimator.GROUP_MEAN), rollout())
    close(mean_fc.values, [0.5, -0.5, 0, 0])
    mean_bc = pgbc_advantages(PGBCConfig(fp_rate=0.2, fn_rate=0.1, estimator=AdvantageEstimator.GROUP_MEAN), rollout())
    close(mean_bc.values, T([0.5, -0.5, 0, 0]) / 0.7)


def test_forward_correction_expectations_exact():
    # E[w | R = 1] = (1 - rho1) rho1 + rho1 (rho1 - 1) = 0; E[w | R = 0] = rho0 rho1 + (1 - rho0)(rho1 - 1)
    # = -(1 - rho0 - rho1). Enumerated exactly through the objective's advantage function.
    rho0, rho1 = 0.2, 0.1
    w = pgfc_advantages(PGFCConfig(fn_rate=rho1), Rollout(T([1.0, 0.0]), T([0, 1]), torch.ones(2, 1))).values
    w1, w0 = w.tolist()
    close((1 - rho1) * w1 + rho1 * w0, 0.0)
    close(rho0 * w1 + (1 - rho0) * w0, -(1 - rho0 - rho1))


def test_backward_correction_gives_unbiased_policy_gradient_monte_carlo():
    """A 4-action softmax policy, clean binary reward R(a), a verifier that flips it (FP 0.2, FN 0.1).
    The PGBC loss's gradient, averaged over N samples, matches the exact clean gradient
    grad E[R] = sum_a pi(a) R(a) (e_a - pi) within 5 standard errors per component (SE from the
    per-sample terms A_i (e_{a_i} - pi); a 5-sigma miss has probability < 1e-6 per component and the
    seed is fixed). The uncorrected gradient is (1 - 0.2 - 0.1) = 0.7 times the clean one: biased."""
    rho0, rho1, N = 0.2, 0.1, 200_000
    gen = torch.Generator().manual_seed(0)
    theta = T([0.5, -0.2, 0.1, 0.0], requires_grad=True)
    clean = T([1.0, 0.0, 1.0, 0.0])
    pi = torch.softmax(theta.detach(), 0)
    exact = (pi * clean)[:, None] * (torch.eye(4) - pi)  # row a: pi(a) R(a) (e_a - pi)
    exact = exact.sum(0)

    actions = torch.multinomial(pi, N, replacement=True, generator=gen)
    r = clean[actions]
    u = torch.rand(N, generator=gen)
    noisy = torch.where(r == 1, (u >= rho1).float(), (u < rho0).float())

    def mc_gradient(cfg, objective):
        _, adv_fn, loss_fn = get_rl_objective(objective)
        ro = Rollout(noisy, torch.arange(N), torch.ones(N, 1))
        adv = adv_fn(cfg, ro).values
        theta.grad = None
        logp = torch.log_softmax(theta, 0)[actions][:, None]  # (N, 1): one "token" per sample
        loss, _ = loss_fn(cfg, TokenBatch(logp, logp.detach(), torch.ones(N, 1), adv))
        loss.backward()  # one token per sequence: loss = -(1/N) sum_i A_i rho_i, rho = 1
        per_sample = adv[:, None] * (torch.eye(4)[actions] - pi)  # (N, 4)
        return -theta.grad.clone(), per_sample.std(0) / math.sqrt(N)

    corrected, se = mc_gradient(PGBCConfig(fp_rate=rho0, fn_rate=rho1), "pgbc")
    assert ((corrected - exact).abs() <= 5 * se).all(), (corrected, exact, se)
    uncorrected, se_u = mc_gradient(PGBCConfig(), "pgbc")  # rates 0: plain REINFORCE on R~
    close(uncorrected, 0.7 * exact, atol=float(5 * se_u.max()))
    assert ((uncorrected - exact).abs() > 5 * se_u).any()


def test_backward_corrected_reward_is_unbiased_monte_carlo():
    """E[R_hat | R] = R for both clean rewards: 100k noisy draws per value (FP 0.1, FN 0.2, the benchmark's
    rates), within 5 standard errors; the raw noisy reward is off by rho0 and rho1 (far outside that)."""
    rho0, rho1, N = 0.1, 0.2, 100_000
    gen = torch.Generator().manual_seed(3)
    for clean in (0.0, 1.0):
        u = torch.rand(N, generator=gen)
        noisy = (u >= rho1).float() if clean else (u < rho0).float()
        r_hat = backward_corrected_reward(noisy, rho0, rho1)
        se = float(r_hat.std()) / math.sqrt(N)
        assert abs(float(r_hat.mean()) - clean) < 5 * se, (clean, float(r_hat.mean()), se)
        assert abs(float(noisy.mean()) - clean) > 20 * se  # uncorrected: E[R~ | R] = rho0 or 1 - rho1


def test_where_group_normalisation_cancels_the_noise_corrections():
    """Both corrections are a R~ + b with one (a > 0, b) for every completion, so per group:
    z-score: identical to the uncorrected advantage (the correction has no effect);
    mean / leave-one-out: the offset cancels, backward leaves the scale a = 1/(1 - rho0 - rho1), forward
    (a = 1) is exactly uncorrected; Adam then divides the scale out, so the parameter updates coincide;
    no baseline: the offset survives and the update differs."""
    rho0, rho1 = 0.1, 0.2
    gen = torch.Generator().manual_seed(4)
    groups = torch.arange(8).repeat_interleave(8)  # 8 prompts x G = 8
    noisy = (torch.rand(64, generator=gen) < 0.4).float()
    noisy[:8] = 1.0  # one all-equal group: its advantage is 0 in every normalised form
    bc = backward_corrected_reward(noisy, rho0, rho1)
    fc = forward_correction_weight(noisy, rho1)
    Z, M, L = AdvantageEstimator.GROUP_ZSCORE, AdvantageEstimator.GROUP_MEAN, AdvantageEstimator.LEAVE_ONE_OUT
    plain = {e: group_advantage(noisy, groups, e, eps=1e-8) for e in (Z, M, L)}
    close(group_advantage(bc, groups, Z, eps=1e-8), plain[Z], atol=1e-5)
    close(group_advantage(fc, groups, Z, eps=1e-8), plain[Z], atol=1e-5)
    for e in (M, L):
        close(group_advantage(bc, groups, e), plain[e] / (1 - rho0 - rho1))
        close(group_advantage(fc, groups, e), plain[e])
    assert not torch.allclose(bc, noisy / (1 - rho0 - rho1))  # no baseline: an offset, not a rescale

    # Three Adam steps of a linear softmax policy on fixed samples: LOO(R_hat) and LOO(R~) give the same
    # parameters (Adam is invariant to a constant gradient scale); the baseline-free R_hat does not.
    features = torch.randn(64, 5, generator=gen)
    actions = torch.randint(0, 3, (64,), generator=gen)

    def adam_steps(adv):
        torch.manual_seed(0)
        policy = torch.nn.Linear(5, 3)
        opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
        for _ in range(3):
            logp = torch.log_softmax(policy(features), -1).gather(1, actions[:, None])[:, 0]
            opt.zero_grad()
            (-(adv * logp).mean()).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in policy.parameters()])

    uncorrected = adam_steps(group_advantage(noisy, groups, L))
    close(adam_steps(group_advantage(bc, groups, L)), uncorrected, atol=1e-5)
    assert (adam_steps(bc) - uncorrected).abs().max() > 1e-3


# ---------------------------------------------------------------------------- REINFORCE family, NFT


LOGP_R = T([[-1.0, -2.0], [-0.5, 0.0], [-1.0, -1.0], [-1.0, 0.0]])


def test_opmd_worked():
    cfg = OPMDConfig()
    adv = opmd_advantages(cfg, rollout())
    close(adv.values, [0.5, -0.5, 0, 0])
    logp = LOGP_R.clone().requires_grad_(True)
    loss, _ = opmd_loss(cfg, TokenBatch(logp, logp.detach(), MASK, adv.values))
    # -A logp: 0.5, 1.0 (seq0), -0.25 (seq1), zeros; token-mean 1.25 / 6, then / (1 + tau) = / 2
    close(loss, 1.25 / 6 / 2)
    # log-partition baseline: b = log((e + 1) / 2) = 0.6201 for prompt 0, b = 1 for prompt 1
    adv = opmd_advantages(OPMDConfig(baseline=OPMDBaseline.LOGSUMEXP), rollout())
    b = math.log((math.e + 1) / 2)
    close(adv.values, [1 - b, -b, 0, 0])
    # REC-form k2 to the behaviour policy: logp_old = logp - 0.5 on all 6 tokens adds 0.1 * 0.125
    cfg = OPMDConfig(old_k2_coef=0.1)
    loss_k2, _ = opmd_loss(cfg, TokenBatch(logp, logp.detach() - 0.5, MASK, T([0.5, -0.5, 0, 0])))
    close(loss_k2, 1.25 / 6 / 2 + 0.1 * 0.125)


def test_asymre_worked():
    _, adv_fn, loss_fn = get_rl_objective("asymre")
    adv = adv_fn(AsymREConfig(), rollout())
    # baseline = mean - 0.1: prompt 0 -> 0.4: A = (0.6, -0.4); prompt 1 -> 0.9: A = (0.1, 0.1)
    close(adv.values, [0.6, -0.4, 0.1, 0.1])
    logp = LOGP_R.clone().requires_grad_(True)
    loss, _ = loss_fn(AsymREConfig(), TokenBatch(logp, logp.detach(), MASK, adv.values))
    # -A logp: 0.6, 1.2 | -0.2 | 0.1, 0.1 | 0.1 -> 1.9 over 6 tokens
    close(loss, 1.9 / 6)


def test_nft_worked():
    # Prompt 0: rewards (1, 0, 0, 0) -> r_hat 0.25; prompt 1 all correct -> dropped.
    rewards = T([1.0, 0, 0, 0, 1, 1])
    groups = T([0, 0, 0, 0, 1, 1])
    adv = nft_advantages(NFTConfig(), Rollout(rewards, groups, torch.ones(6, 1)))
    close(adv.values, [0.75, -0.25, -0.25, -0.25, 0.02, 0.02])  # r_hat clamped to 0.98 in prompt 1
    assert adv.keep.tolist() == [True] * 4 + [False] * 2
    # Ratios: positive 1.1; negatives 1.0, 0.5, 2.0. Prompt weight (1 - r_hat) = 0.75.
    # positive: -log 1.1; negative: -log((1 - 0.25 R) / 0.75): R = 1 -> 0; R = 0.5 -> -log(0.875/0.75);
    # R = 2 -> argument 0.5/0.75 < 1 is floored at 1 -> 0 (its gradient is kept).
    rho = T([[1.1], [1.0], [0.5], [2.0]])
    logp = rho.log().requires_grad_(True)
    loss, _ = nft_loss(NFTConfig(), TokenBatch(logp, torch.zeros(4, 1), torch.ones(4, 1), adv.values[:4]))
    close(loss, 0.75 * (-math.log(1.1) - math.log(0.875 / 0.75)) / 4)
    loss.backward()
    # floored token: d/dlogp -log(proxy) straight-through = r_hat R / (1 - r_hat) / 1 = 0.25 * 2 / 0.75;
    # x 0.75 prompt weight / 4 tokens
    close(logp.grad[3, 0], 0.25 * 2 / 0.75 * 0.75 / 4)
    with pytest.raises(ValueError, match="binary"):
        nft_advantages(NFTConfig(), Rollout(T([0.5, 1.0]), T([0, 0]), torch.ones(2, 1)))


def test_nft_on_policy_gradient_equals_mean_centred_reinforce():
    # At rho = 1, NFT with the (1 - r_hat) prompt weight has the gradient of -A log pi with
    # A = 1 - r_hat (correct) / -r_hat (wrong), the Dr.GRPO advantage (NFT paper's equivalence).
    g = torch.Generator().manual_seed(1)
    rewards = T([1.0, 0, 0, 1, 1, 0, 1, 0])
    groups = torch.arange(8) // 4
    mask = (torch.rand(8, 5, generator=g) < 0.8).float()
    mask[:, 0] = 1
    logp = -torch.rand(8, 5, generator=g)
    adv = nft_advantages(NFTConfig(), Rollout(rewards, groups, mask))
    close(adv.values, rewards - rewards.view(2, 4).mean(1).repeat_interleave(4))
    ro = Rollout(rewards, groups, mask)
    _, nft_grad = run_step("nft", NFTConfig(), ro, logp, logp)
    _, reinforce_grad = run_step("asymre", AsymREConfig(baseline_shift=0.0), ro, logp, logp)
    close(nft_grad, reinforce_grad, atol=1e-6)


# ---------------------------------------------------------------------------- properties over all methods


def _random_rollout(seed, B=12, T_=6):
    g = torch.Generator().manual_seed(seed)
    groups = torch.arange(B) // 4  # 3 prompts, G = 4
    rewards = T([1.0, 0, 1, 0, 1, 1, 1, 1, 0, 0, 1, 0])
    mask = (torch.rand(B, T_, generator=g) < 0.7).float()
    mask[:, 0] = 1
    logp_old = -torch.rand(B, T_, generator=g) * 2
    logp = logp_old + 0.3 * torch.randn(B, T_, generator=g)
    ref = logp_old + 0.1 * torch.randn(B, T_, generator=g)
    flawed = torch.rand(B, generator=g) < 0.3
    ro = Rollout(rewards, groups, mask, flawed=flawed, logp_old=logp_old, logp_ref=ref)
    return ro, logp, logp_old, ref


SPLIT_INVARIANT = {
    "grpo": GRPOConfig(),
    "dr_grpo": DrGRPOConfig(),
    "dapo": DAPOConfig(max_response_len=6, overlong_buffer_len=3),
    "bnpo": BNPOConfig(),
    "grpo_lambda": GRPOLambdaConfig(),
    "fapo": FAPOConfig(),
    "pgbc": PGBCConfig(fp_rate=0.1, fn_rate=0.2, estimator=AdvantageEstimator.LEAVE_ONE_OUT),
    "pgfc": PGFCConfig(fn_rate=0.2),
    "opmd": OPMDConfig(old_k2_coef=0.1),
    "asymre": AsymREConfig(),
    "nft": NFTConfig(),
}


@pytest.mark.parametrize("name", sorted(SPLIT_INVARIANT))
@pytest.mark.parametrize("splits", [(1,), (3, 4, 9), (2, 5, 6, 7)], ids=["2mb", "4mb", "5mb"])
def test_loss_and_gradient_invariant_to_micro_batch_split(name, splits):
    # BAPO and STEER are excluded: their bounds / weights depend on the micro-batch by design.
    ro, logp, logp_old, ref = _random_rollout(seed=3)
    cfg = SPLIT_INVARIANT[name]
    full, full_grad = run_step(name, cfg, ro, logp, logp_old, logp_ref=ref)
    split, split_grad = run_step(name, cfg, ro, logp, logp_old, splits, logp_ref=ref)
    torch.testing.assert_close(split, full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(split_grad, full_grad, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(RL_OBJECTIVES))
def test_positive_advantage_tokens_get_their_log_prob_pushed_up(name):
    # On-policy, reference = current policy (KL gradient 0): the loss gradient is negative on tokens of
    # sequences with A > 0 and positive on those with A < 0, so gradient descent raises / lowers them.
    ro, _, logp_old, _ = _random_rollout(seed=4)
    cfg_cls, adv_fn, loss_fn = get_rl_objective(name)
    cfg = SPLIT_INVARIANT.get(name, cfg_cls())
    adv = adv_fn(cfg, ro).values
    logp = logp_old.clone().requires_grad_(True)
    entropy = torch.full_like(logp, 1.0)
    batch = TokenBatch(logp, logp_old, ro.mask, adv, logp_ref=logp_old, entropy_old=entropy)
    loss, metrics = loss_fn(cfg, batch)
    loss.backward()
    valid = ro.mask.bool()
    pos = valid & (adv[:, None] > 0)
    neg = valid & (adv[:, None] < 0)
    assert pos.any() and neg.any()
    assert (logp.grad[pos] < 0).all() and (logp.grad[neg] > 0).all()
    assert all(torch.as_tensor(v).isfinite().all() for v in metrics.values())


def test_registry_and_configs():
    for name, (cfg_cls, _, _) in RL_OBJECTIVES.items():
        cfg_cls()  # every method has working defaults
        assert get_rl_objective(name).config is cfg_cls
    with pytest.raises(ValueError, match="unknown RL objective 'ppo'.*dapo.*grpo"):
        get_rl_objective("ppo")
    with pytest.raises(ValueError, match="norm_len"):
        SurrogateConfig(agg=LossAgg.SEQ_MEAN_TOKEN_SUM_NORM)
    with pytest.raises(ValueError, match="dual_clip"):
        SurrogateConfig(dual_clip=1.0)
    with pytest.raises(ValueError, match="KL in the loss"):
        BNPOConfig(surrogate=SurrogateConfig(kl_coef=0.1, kl_placement=KLPlacement.REWARD))
    with pytest.raises(ValueError, match="shape"):
        TokenBatch(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3), torch.zeros(2))
