"""Preference objectives (policies/planner/preference.py): worked numbers and equivalences.

Sequence log-probs are masked sums over response tokens. The worked pair: chosen tokens (-1, -1),
rejected tokens (-2, -2, pad), reference -1.5 per token on both, so
    log pi(y_w) = -2, log pi_ref(y_w) = -3, log pi(y_l) = -4, log pi_ref(y_l) = -3,
    Delta_pi = -2 - (-4) = 2, Delta_ref = 0, DPO margin / beta = 2.
"""

import math

import pytest
import torch

from policies.planner.objectives import PREFERENCE_OBJECTIVES, get_preference_objective
from policies.planner.preference import (
    DPOConfig,
    INPOConfig,
    MPOConfig,
    OccupancyReg,
    PreferenceBatch,
    RPOConfig,
    TokenDPOConfig,
    dpo_loss,
    inpo_loss,
    mpo_split,
    mpo_stage1_loss,
    rpo_loss,
    token_dpo_loss,
    token_implicit_rewards,
)

T = torch.tensor
NAN = float("nan")


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).float(), torch.as_tensor(expected).float(), atol=atol, rtol=0)


def softplus(x):
    return math.log1p(math.exp(-x))  # -log sigmoid(x)


def pair(**kw):
    """One worked pair; the rejected padding holds NaN to prove it is masked out."""
    chosen = T([[-1.0, -1.0]], requires_grad=True)
    rejected = T([[-2.0, -2.0, NAN]], requires_grad=True)
    fields = dict(
        chosen_logp=chosen,
        chosen_mask=T([[1.0, 1.0]]),
        rejected_logp=rejected,
        rejected_mask=T([[1.0, 1.0, 0.0]]),
        chosen_ref_logp=T([[-1.5, -1.5]]),
        rejected_ref_logp=T([[-1.5, -1.5, NAN]]),
    )
    return PreferenceBatch(**{**fields, **kw})


def test_dpo_worked():
    batch = pair()
    loss, m = dpo_loss(DPOConfig(beta=0.1), batch)
    # -log sigmoid(0.1 * 2) = log(1 + e^-0.2) = 0.5981
    close(loss, softplus(0.2))
    close(m["pref/reward_chosen"], 0.1 * (-2 + 3))
    close(m["pref/reward_rejected"], 0.1 * (-4 + 3))
    close(m["pref/accuracy"], 1.0)
    loss.backward()
    # d/dlogp_w = -beta sigmoid(-margin) per chosen token (pushed up), +beta sigmoid(-margin) per rejected
    s = 0.1 / (1 + math.exp(0.2))
    close(batch.chosen_logp.grad, [[-s, -s]])
    close(batch.rejected_logp.grad, [[s, s, 0.0]])


def test_rpo_worked():
    # DPO (beta 0.05): log(1 + e^-0.1) = 0.6444; SFT: eta * beta * -log pi(y_w) = 0.005 * 0.05 * 2 = 0.0005
    loss, m = rpo_loss(RPOConfig(beta=0.05, eta=0.005), pair())
    close(loss, softplus(0.1) + 0.0005)
    close(m["pref/nll_chosen"], 2.0)


def test_inpo_worked():
    # eta 0.5, tau 0.25: w = tau/eta = 0.5, target 1/(2 eta) = 1. Previous iterate: chosen -2.5, rejected -3.5
    # per sequence (Delta_t = 1). h = 2 - 0.5 * 0 - 0.5 * 1 = 1.5; L = (1.5 - 1)^2 = 0.25
    batch = pair(chosen_prev_logp=T([[-1.25, -1.25]]), rejected_prev_logp=T([[-1.75, -1.75, NAN]]))
    loss, m = inpo_loss(INPOConfig(eta=0.5, tau=0.25), batch)
    close(loss, 0.25)
    close(m["pref/inpo_h"], 1.5)
    with pytest.raises(ValueError, match="prev"):
        inpo_loss(INPOConfig(), pair())
    with pytest.raises(ValueError, match="0 < tau < eta"):
        INPOConfig(eta=0.1, tau=0.2)


def test_token_dpo_equals_dpo_and_rewards_sum_to_sequence_reward():
    g = torch.Generator().manual_seed(0)
    B, Tw, Tl = 5, 4, 6
    batch = PreferenceBatch(
        chosen_logp=-torch.rand(B, Tw, generator=g),
        chosen_mask=(torch.rand(B, Tw, generator=g) < 0.8).float(),
        rejected_logp=-torch.rand(B, Tl, generator=g),
        rejected_mask=(torch.rand(B, Tl, generator=g) < 0.8).float(),
        chosen_ref_logp=-torch.rand(B, Tw, generator=g),
        rejected_ref_logp=-torch.rand(B, Tl, generator=g),
    )
    close(token_dpo_loss(TokenDPOConfig(beta=0.3), batch)[0], dpo_loss(DPOConfig(beta=0.3), batch)[0])
    # r_t = beta log(pi / pi_ref) per token; its masked sum is the sequence implicit reward
    r = token_implicit_rewards(batch.chosen_logp, batch.chosen_ref_logp, batch.chosen_mask, 0.3)
    seq = 0.3 * ((batch.chosen_logp - batch.chosen_ref_logp) * batch.chosen_mask).sum(-1)
    close(r.sum(-1), seq)
    assert (r[batch.chosen_mask == 0] == 0).all()


def test_chi2_occupancy_option_worked():
    # Sequence log-ratios: chosen -2 - (-3) = 1, rejected -4 - (-3) = -1.
    # chi2 = mean over the 2 sequences of (e^L - 1) + (e^-L - 1) = e + 1/e - 2 for both; penalty sqrt(chi2)
    chi2 = math.e + 1 / math.e - 2
    loss, m = dpo_loss(DPOConfig(beta=0.1, occupancy=OccupancyReg(coef=0.5)), pair())
    close(loss, softplus(0.2) + 0.5 * math.sqrt(chi2))
    close(m["pref/occupancy_chi2"], chi2)


def test_mpo_split_and_stage1_loss():
    # The 2 of 4 pairs with the largest score gap are easy.
    assert mpo_split(T([0.1, 2.0, 0.5, 3.0]), 0.5).tolist() == [False, True, False, True]
    assert mpo_split(T([0.1, 2.0, 0.5]), 0.5).tolist() == [False, True, True]  # ceil(1.5) = 2
    # Stage 1 is DPO on the easy pairs only: pair 2 (easy) alone gives the worked loss.
    one = pair()
    two = PreferenceBatch(
        chosen_logp=torch.cat([T([[-5.0, -5.0]]), one.chosen_logp]),
        chosen_mask=torch.ones(2, 2),
        rejected_logp=torch.cat([T([[0.0, 0.0, 0.0]]), one.rejected_logp]),
        rejected_mask=torch.cat([torch.ones(1, 3), one.rejected_mask]),
        chosen_ref_logp=torch.cat([torch.zeros(1, 2), one.chosen_ref_logp]),
        rejected_ref_logp=torch.cat([torch.zeros(1, 3), one.rejected_ref_logp]),
        pair_mask=T([False, True]),
    )
    loss, _ = mpo_stage1_loss(MPOConfig(dpo=DPOConfig(beta=0.1)), two)
    close(loss, softplus(0.2))
    with pytest.raises(ValueError, match="pair_mask"):
        mpo_stage1_loss(MPOConfig(), pair())


def test_pair_losses_invariant_to_micro_batch_split():
    g = torch.Generator().manual_seed(1)
    B = 6

    def batch(rows, n=None):
        return PreferenceBatch(
            chosen_logp=chosen[rows], chosen_mask=torch.ones(B, 3)[rows],
            rejected_logp=rejected[rows], rejected_mask=torch.ones(B, 3)[rows],
            chosen_ref_logp=ref[rows], rejected_ref_logp=ref[rows],
            chosen_prev_logp=prev[rows], rejected_prev_logp=prev[rows] - 0.1, num_pairs_global=n,
        )

    chosen = -torch.rand(B, 3, generator=g)
    rejected = -torch.rand(B, 3, generator=g)
    ref = -torch.rand(B, 3, generator=g)
    prev = -torch.rand(B, 3, generator=g)
    for name in ("dpo", "rpo", "inpo", "token_dpo"):
        cfg_cls, loss_fn = get_preference_objective(name)
        full = loss_fn(cfg_cls(), batch(slice(None)))[0]
        split = sum(loss_fn(cfg_cls(), batch(slice(a, b), n=B))[0] for a, b in [(0, 1), (1, 4), (4, 6)])
        close(split, full)


def test_registry_and_batch_validation():
    for cfg_cls, _ in PREFERENCE_OBJECTIVES.values():
        cfg_cls()
    with pytest.raises(ValueError, match="unknown preference objective 'kto'.*dpo.*mpo"):
        get_preference_objective("kto")
    with pytest.raises(ValueError, match="beta"):
        DPOConfig(beta=0.0)
    with pytest.raises(ValueError, match="chosen_mask"):
        pair(chosen_mask=torch.ones(1, 3))
