"""Hand-derived backward passes (policies/sac_backprop.py) against autograd: the same gradients, the same update."""

import numpy as np
import pytest
import torch

from policies import fused_layers
from policies.sac import CriticEnsemble, SACAgent, SACConfig, TanhGaussianActor
from policies.sac_backprop import actor_backward, actor_forward, critic_backward, critic_forward
from robot.core.compile import CompileMode
from robot.core.optim import OptimConfig

OBS, ACT, B = 7, 3, 24
NETWORKS = [{"layer_norm": True, "activation": "tanh"}, {"layer_norm": False, "activation": "relu"},
            {"layer_norm": True, "activation": "relu"}]


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("network", NETWORKS)
def test_critic_gradients_equal_autograd(network):
    """Weight gradients of the critic regression loss, and action gradients of the mean Q, in float64."""
    torch.manual_seed(0)
    critic = CriticEnsemble(OBS, ACT, (16, 12), num_members=4, **network).double()
    obs, action, target = torch.randn(B, OBS).double(), torch.randn(B, ACT).double(), torch.randn(B).double()

    (critic(obs, action) - target).square().mean(1).sum().backward()
    expected = grads(critic)
    critic.zero_grad(set_to_none=True)
    with torch.no_grad():
        q, tape = critic_forward(critic, obs, action)
        critic_backward(critic, tape, 2 * (q - target) / B, weights=True)
    for name, g in grads(critic).items():
        torch.testing.assert_close(g, expected[name], rtol=1e-7, atol=1e-9, msg=name)

    critic.zero_grad(set_to_none=True)
    action_var = action.clone().requires_grad_(True)
    critic(obs, action_var, detach_params=True).mean().backward()
    with torch.no_grad():
        q, tape = critic_forward(critic, obs, action)
        d_action = critic_backward(critic, tape, torch.full_like(q, 1 / q.numel()), weights=False,
                                   input_cols=slice(OBS, None))
    torch.testing.assert_close(d_action, action_var.grad, rtol=1e-7, atol=1e-9)
    assert all(p.grad is None for p in critic.parameters())  # the actor loss leaves the critic untouched


@pytest.mark.parametrize("network", NETWORKS)
def test_actor_gradients_equal_autograd_with_the_log_std_clamp_active(network):
    """L = mean(alpha log pi(a|s) - a.c) through the tanh-Gaussian, some log sigma pushed past both bounds."""
    torch.manual_seed(0)
    actor = TanhGaussianActor(OBS, ACT, SACConfig(hidden_dims=(16, 12), **network)).double()
    with torch.no_grad():
        actor.head.bias[ACT:] = torch.tensor([-9.0, 0.0, 5.0], dtype=torch.float64)  # below, inside, above
    obs, c, alpha = torch.randn(B, OBS).double(), torch.randn(B, ACT).double(), torch.tensor(0.3).double()

    torch.manual_seed(1)
    action, log_prob = actor.sample(obs)
    (alpha * log_prob - (action * c).sum(-1)).mean().backward()
    expected = grads(actor)
    actor.zero_grad(set_to_none=True)
    with torch.no_grad():
        torch.manual_seed(1)  # the same noise
        action2, log_prob2, tape = actor_forward(actor, obs)
        actor_backward(actor, tape, -c / B, alpha / B)
    torch.testing.assert_close(action2, action.detach())
    torch.testing.assert_close(log_prob2, log_prob.detach())
    for name, g in grads(actor).items():
        torch.testing.assert_close(g, expected[name], rtol=1e-7, atol=1e-9, msg=name)
    # the clamp blocks the gradient where log sigma is outside [log_std_min, log_std_max]
    assert expected["head.bias"][ACT] == 0 and expected["head.bias"][ACT + 2] == 0
    assert expected["head.bias"][ACT + 1] != 0


def random_block(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"obs": rng.normal(size=(rows, OBS)).astype(np.float32),
            "action": rng.uniform(-1, 1, (rows, ACT)).astype(np.float32),
            "reward": rng.normal(size=rows).astype(np.float32),
            "next_obs": rng.normal(size=(rows, OBS)).astype(np.float32),
            "terminated": (rng.uniform(size=rows) < 0.2).astype(np.float32)}


def trained(backward: str, updates: int = 4, device: str = "cpu", **overrides) -> tuple[torch.Tensor, dict[str, float]]:
    torch.manual_seed(0)
    config = SACConfig(hidden_dims=(32, 32), batch_size=B, backward=backward, **overrides)
    agent = SACAgent(OBS, ACT, config, torch.device(device))
    torch.manual_seed(1)
    metrics = {}
    for i in range(updates):
        metrics = agent.update(random_block(B * config.utd_ratio, seed=i))
    modules = (agent.actor, agent.critic, agent.target_critic)
    params = torch.cat([p.detach().flatten() for m in modules for p in m.parameters()] + [agent.log_alpha.view(1)])
    params = params.cpu()
    return params, {k: float(v) for k, v in metrics.items()}


@pytest.mark.parametrize("overrides", [
    {},  # the recipe: 10 critics, REDQ min over 2
    {"num_critics": 2, "num_subsample": 2},
    {"layer_norm": False, "activation": "relu"},
    {"utd_ratio": 3},
    {"num_critics": 5, "num_subsample": 3, "backup_entropy": True},
    {"optim": OptimConfig(grad_clip_norm=0.05)},
], ids=["recipe", "2 critics", "SB3 network", "UTD 3", "entropy backup", "grad clip"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused kernels", "ATen ops"])
def test_explicit_update_moves_every_parameter_where_autograd_does(overrides, fused):
    """Same seed, same blocks: after 4 updates the two paths agree to float32 rounding (they draw the same
    REDQ subsets and noise), and both moved the weights; with the fused layer kernels and without."""
    if fused and not fused_layers.available():
        pytest.skip("no C compiler: the fused kernels cannot be built here")
    explicit, explicit_metrics = trained("explicit", fused_kernels=fused, **overrides)
    reference, reference_metrics = trained("autograd", **overrides)
    untrained, _ = trained("autograd", updates=0, **overrides)
    torch.testing.assert_close(explicit, reference, rtol=0, atol=2e-5)
    assert (reference - untrained).abs().max() > 1e-3  # the comparison is between trained weights
    assert explicit_metrics.keys() == reference_metrics.keys()
    for name, value in reference_metrics.items():
        assert explicit_metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("overrides", [{}, {"layer_norm": False, "activation": "relu", "utd_ratio": 3}],
                         ids=["recipe", "SB3 network, UTD 3"])
def test_explicit_update_on_a_gpu_matches_autograd(overrides):
    """'auto' keeps autograd on a GPU; 'explicit' asked for there (ATen ops: the fused kernels are CPU code)
    gives the autograd update, with the same draws from the GPU generator."""
    explicit, _ = trained("explicit", device="cuda", **overrides)
    reference, _ = trained("autograd", device="cuda", **overrides)
    torch.testing.assert_close(explicit, reference, rtol=0, atol=5e-5)


def test_auto_picks_explicit_for_state_agents_and_autograd_where_it_cannot():
    agent = SACAgent(OBS, ACT, SACConfig(hidden_dims=(8,)), torch.device("cpu"))
    assert agent.explicit_backward
    autograd = SACAgent(OBS, ACT, SACConfig(hidden_dims=(8,), backward="autograd"), torch.device("cpu"))
    assert not autograd.explicit_backward
    with pytest.raises(ValueError, match="backward 'explicit' runs eagerly"):
        SACConfig(backward="explicit", compile=CompileMode.COMPILE)
    with pytest.raises(ValueError, match="backward: expected one of"):
        SACConfig(backward="manual")


def test_pixel_agent_keeps_autograd_and_refuses_explicit():
    from policies.image_sac import ImageAgentConfig, ImageSACAgent

    spec = {"wrist": ((32, 32, 3), np.uint8), "state": ((5,), np.float32)}
    agent = ImageSACAgent(spec, ACT, SACConfig(hidden_dims=(8,), num_critics=2), ImageAgentConfig(),
                          torch.device("cpu"))
    assert not agent.explicit_backward  # its critic loss also trains the encoder
    with pytest.raises(ValueError, match="ImageSACAgent needs backward 'autograd'"):
        ImageSACAgent(spec, ACT, SACConfig(hidden_dims=(8,), num_critics=2, backward="explicit"),
                      ImageAgentConfig(), torch.device("cpu"))
