"""The fused CPU layer kernels (policies/fused_layers.py) against autograd on the same math in float64."""

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from policies import fused_layers
from policies.sac import SACAgent, SACConfig

pytestmark = pytest.mark.skipif(not fused_layers.available(), reason="no C compiler: fused kernels not built")

EPS = 1e-5
ACT = {"tanh": torch.tanh, "relu": torch.relu}


def reference(z, bias, gamma, beta, act):
    """act(LayerNorm(z + bias) * gamma + beta) (or act(z + bias) when gamma is None), float64 autograd."""
    y = z + bias
    if gamma is not None:
        y = F.layer_norm(y, (y.shape[-1],), eps=EPS) * gamma + beta
    return ACT[act](y)


def params(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g) * s + m for s, m in ((0.3, 0.0), (0.2, 1.0), (0.2, 0.0))]


def layouts(e, b, h, seed=0):
    """(name, z, per-parameter shape): an ensemble's (E, B, H) activations, the strided view the first
    ensemble layer produces from one (B, E*H) GEMM, and one network's (N, H) with shared parameters."""
    g = torch.Generator().manual_seed(seed)
    yield "ensemble", torch.randn(e, b, h, generator=g) * 2 + 0.5, (e, 1, h)
    yield "first layer (strided)", (torch.randn(b, e * h, generator=g) * 2).view(b, e, h).transpose(0, 1), (e, 1, h)
    yield "one network", torch.randn(b, h, generator=g) * 2 - 0.5, (h,)


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("layer_norm", [True, False], ids=["LayerNorm", "no norm"])
@pytest.mark.parametrize("h", [256, 37], ids=["H=256", "H=37 (vector tails)"])
def test_forward_and_backward_match_autograd(act, layer_norm, h):
    for name, z, pshape in layouts(3, 50, h):
        bias, gamma, beta = params(pshape, seed=1)
        z64 = z.double().requires_grad_(True)
        p64 = [t.double().requires_grad_(True) for t in (bias, gamma, beta)]
        expected = reference(z64, p64[0], p64[1] if layer_norm else None, p64[2], act)
        dh = torch.randn(expected.shape, generator=torch.Generator().manual_seed(2))
        expected.backward(dh.double())

        zc = z.clone()
        if layer_norm:
            h_out, mean, rstd, no_q = fused_layers.ln_act_forward(zc, bias, gamma, beta, act, EPS)
            assert no_q is None
            torch.testing.assert_close(zc, z + bias, msg=f"{name}: z must hold z + bias for the backward")
            dz, dgamma, dbeta, dbias, no_head = fused_layers.ln_act_backward(dh, h_out, zc, mean, rstd, gamma, act,
                                                                             grads=True)
            assert no_head is None
            torch.testing.assert_close(dgamma.double(), p64[1].grad, rtol=1e-4, atol=1e-4, msg=f"{name} d gamma")
            torch.testing.assert_close(dbeta.double(), p64[2].grad, rtol=1e-4, atol=1e-4, msg=f"{name} d beta")
            dz_only = fused_layers.ln_act_backward(dh, h_out, zc, mean, rstd, gamma, act, grads=False)
            assert dz_only[1:] == (None, None, None, None)
            torch.testing.assert_close(dz_only[0], dz, rtol=0, atol=0)
        else:
            h_out, no_q = fused_layers.act_forward(zc, bias, act)
            assert h_out is zc and no_q is None  # in place
            h_out = h_out.contiguous()  # the backward reads h row after row
            dz, dbias, _ = fused_layers.act_backward(dh, h_out, act, bias)
        assert h_out.is_contiguous() and dz.is_contiguous()
        torch.testing.assert_close(h_out.double(), expected.detach(), rtol=1e-5, atol=2e-6, msg=f"{name} h")
        torch.testing.assert_close(dz.double(), z64.grad, rtol=1e-4, atol=2e-5, msg=f"{name} dz")
        torch.testing.assert_close(dbias.double(), p64[0].grad, rtol=1e-4, atol=1e-4, msg=f"{name} d bias")


def test_layer_norm_statistics_are_those_of_torch():
    z = torch.randn(2, 64, 256) * 3 + 1
    bias, gamma, beta = params((2, 1, 256), seed=3)
    _, mean, rstd, _ = fused_layers.ln_act_forward(z.clone(), bias, gamma, beta, "tanh", EPS)
    _, ref_mean, ref_rstd = torch.native_layer_norm(z + bias, (256,), None, None, EPS)
    torch.testing.assert_close(mean, ref_mean)
    torch.testing.assert_close(rstd, ref_rstd)


def test_bad_inputs_are_refused_with_the_reason():
    bias, gamma, beta = params((4,), seed=0)
    with pytest.raises(ValueError, match="float32 CPU"):
        fused_layers.ln_act_forward(torch.zeros(3, 4, dtype=torch.float64), bias, gamma, beta, "tanh", EPS)
    with pytest.raises(ValueError, match="contiguous"):
        fused_layers.act_backward(torch.zeros(4, 3).t(), torch.zeros(3, 4), "relu", bias)
    with pytest.raises(ValueError, match="contiguous"):  # the kernels write and read h row after row
        fused_layers.act_backward(torch.zeros(3, 4), torch.zeros(3, 8)[:, ::2], "relu", bias)


def test_without_a_compiler_the_agent_falls_back_to_aten_ops_and_says_so(tmp_path):
    """A fresh cache and no compiler: available() is False with a warning, and the explicit update runs."""
    code = (
        "import warnings, torch\n"
        "from policies import fused_layers\n"
        "from policies.sac import SACAgent, SACConfig\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    agent = SACAgent(5, 2, SACConfig(hidden_dims=(8,), batch_size=4), torch.device('cpu'))\n"
        "print(agent.explicit_backward, agent.fused_kernels, fused_layers.available())\n"
        "print(any('fused CPU layer kernels unavailable' in str(w.message) for w in caught))\n"
        "import numpy as np\n"
        "block = {'obs': np.ones((4, 5), np.float32), 'action': np.zeros((4, 2), np.float32),\n"
        "         'reward': np.ones(4, np.float32), 'next_obs': np.ones((4, 5), np.float32),\n"
        "         'terminated': np.zeros(4, np.float32)}\n"
        "print(float(agent.update(block)['train/critic_loss']) >= 0)\n"
    )
    env = {**os.environ, "CC": str(tmp_path / "no-such-cc"), "ROBOT_STACK_CACHE": str(tmp_path / "cache"),
           "PYTHONPATH": os.getcwd()}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "False", "True", "True"]


def test_the_agent_uses_the_kernels_only_where_they_apply():
    cpu = torch.device("cpu")
    assert SACAgent(5, 2, SACConfig(hidden_dims=(8,)), cpu).fused_kernels
    assert not SACAgent(5, 2, SACConfig(hidden_dims=(8,), fused_kernels=False), cpu).fused_kernels
    assert not SACAgent(5, 2, SACConfig(hidden_dims=(8,), backward="autograd"), cpu).fused_kernels


def test_tanh_gaussian_head_matches_autograd_with_the_clamp_active():
    """Action, log-probability and their backward through the squashed Gaussian, against float64 autograd of
    `policies.sac.squashed_gaussian` on the clamped log sigma (some rows below, some above the clamp)."""
    from policies.sac import squashed_gaussian

    g = torch.Generator().manual_seed(4)
    n, a, lo, hi = 300, 4, -5.0, 2.0
    head = torch.randn(n, 2 * a, generator=g) * 3  # log sigma in about [-9, 9]: both clamp bounds hit
    eps = torch.randn(n, a, generator=g)
    d_action, d_log_prob = torch.randn(n, a, generator=g), 0.37

    head64 = head.double().requires_grad_(True)
    mean, log_std = head64.chunk(2, dim=-1)
    action64, log_prob64 = squashed_gaussian(mean, log_std.clamp(lo, hi), eps.double())
    ((action64 * d_action.double()).sum() + d_log_prob * log_prob64.sum()).backward()

    action, log_prob = fused_layers.tanh_gaussian_forward(head, eps, lo, hi)
    torch.testing.assert_close(action.double(), action64.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_prob.double(), log_prob64.detach(), rtol=1e-5, atol=1e-4)
    d_out, d_bias = fused_layers.tanh_gaussian_backward(head, eps, action, d_action, d_log_prob, lo, hi)
    torch.testing.assert_close(d_out.double(), head64.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d_bias.double(), head64.grad.sum(0), rtol=1e-4, atol=1e-4)
    assert (head64.grad[:, a:] == 0).any()  # some log sigmas were clamped: no gradient there


@pytest.mark.parametrize("layer_norm", [True, False], ids=["LayerNorm", "no norm"])
def test_a_row_scaled_upstream_gradient_equals_the_materialised_one(layer_norm):
    """The critic's last hidden layer gets dL/dh = dL/dQ (E, B) x head weights (E, 1, H); the kernels take the
    two factors instead of the (E, B, H) product."""
    z = torch.randn(3, 40, 64)
    bias, gamma, beta = params((3, 1, 64), seed=5)
    head_w, dq = torch.randn(3, 1, 64), torch.randn(3, 40)
    if layer_norm:
        h, mean, rstd, _ = fused_layers.ln_act_forward(z, bias, gamma, beta, "tanh", EPS)
        scaled = fused_layers.ln_act_backward(head_w, h, z, mean, rstd, gamma, "tanh", True, row_scale=dq)[:4]
        plain = fused_layers.ln_act_backward(dq.unsqueeze(-1) * head_w, h, z, mean, rstd, gamma, "tanh", True)[:4]
    else:
        h = torch.relu(z + bias)
        scaled = fused_layers.act_backward(head_w, h, "relu", bias, row_scale=dq)[:2]
        plain = fused_layers.act_backward(dq.unsqueeze(-1) * head_w, h, "relu", bias)[:2]
    for got, expected in zip(scaled, plain, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="row_scale"):
        fused_layers.act_backward(head_w, h, "relu", bias, row_scale=dq[:, :7])


@pytest.mark.parametrize("act", ["tanh", "relu"])
@pytest.mark.parametrize("layer_norm", [True, False], ids=["LayerNorm", "no norm"])
@pytest.mark.parametrize("h", [256, 37], ids=["H=256", "H=37 (vector tails)"])
def test_the_q_head_in_the_last_layer_kernel_matches_autograd(act, layer_norm, h):
    """A critic's last hidden layer and its one-output head: q = h w + b in the forward kernel, and the head's
    weight gradient sum_B dL/dq * h in the backward kernel, for every member of an ensemble."""
    e, b = 3, 50
    z = torch.randn(e, b, h, generator=torch.Generator().manual_seed(7))
    bias, gamma, beta = params((e, 1, h), seed=8)
    head_w, head_b = torch.randn(e, h, 1) / h**0.5, torch.randn(e, 1, 1)
    dq = torch.randn(e, b, generator=torch.Generator().manual_seed(9))

    leaves = [t.double().requires_grad_(True) for t in (z, bias, gamma, beta, head_w, head_b)]
    norm = leaves[2:4] if layer_norm else (None, None)
    q64 = (torch.bmm(reference(leaves[0], leaves[1], *norm, act), leaves[4]) + leaves[5]).squeeze(-1)
    q64.backward(dq.double())

    zc = z.clone()
    if layer_norm:
        h_out, mean, rstd, q = fused_layers.ln_act_forward(zc, bias, gamma, beta, act, EPS, head=(head_w, head_b))
        dz, dgamma, dbeta, dbias, dhead = fused_layers.ln_act_backward(
            head_w.transpose(1, 2), h_out, zc, mean, rstd, gamma, act, True, row_scale=dq, head_grad=True)
        checks = [(dgamma, leaves[2], "d gamma"), (dbeta, leaves[3], "d beta")]
    else:
        h_out, q = fused_layers.act_forward(zc, bias, act, head=(head_w, head_b))
        dz, dbias, dhead = fused_layers.act_backward(head_w.transpose(1, 2), h_out, act, bias, row_scale=dq,
                                                     head_grad=True)
        checks = []
    torch.testing.assert_close(q.double(), q64.detach(), rtol=1e-5, atol=1e-5)
    for got, leaf, what in [(dz, leaves[0], "dz"), (dbias, leaves[1], "d bias"), (dhead, leaves[4], "d head weight"),
                            *checks]:
        torch.testing.assert_close(got.double(), leaf.grad, rtol=1e-4, atol=1e-4, msg=what)
    with pytest.raises(ValueError, match="head weight"):
        fused_layers.ln_act_forward(z.clone(), bias, gamma, beta, act, EPS, head=(head_w[:2], head_b))
