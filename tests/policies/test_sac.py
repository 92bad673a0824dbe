"""SAC / RLPD learner: shapes, the batched ensemble, learning on a fixed batch, determinism, checkpoints."""

import numpy as np
import pytest
import torch

from policies.sac import CriticEnsemble, SACAgent, SACConfig
from robot.core.checkpoint import load_state, save_state

OBS, ACT = 6, 2


def make_agent(seed=0, **overrides) -> SACAgent:
    torch.manual_seed(seed)
    config = SACConfig(hidden_dims=(32, 32), batch_size=16, **overrides)
    return SACAgent(OBS, ACT, config, torch.device("cpu"))


def fixed_batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(n, OBS)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        "reward": rng.normal(size=n).astype(np.float32),
        "next_obs": rng.normal(size=(n, OBS)).astype(np.float32),
        "terminated": (rng.uniform(size=n) < 0.2).astype(np.float32),
    }


def test_ensemble_matches_members_evaluated_one_by_one():
    """The batched (E, in, out) matmul equals E separate MLPs with each member's own weights and head."""
    torch.manual_seed(0)
    critic = CriticEnsemble(OBS, ACT, (8, 8), num_members=5)
    obs, act = torch.randn(4, OBS), torch.randn(4, ACT)
    q = critic(obs, act)
    assert q.shape == (5, 4)
    for e in range(5):
        x = torch.cat([obs, act], -1)
        for lin, norm in zip(critic.linears, critic.norms, strict=True):
            x = x @ lin.weight[e] + lin.bias[e]
            x = torch.tanh(torch.nn.functional.layer_norm(x, (x.shape[-1],)) * norm.weight[e] + norm.bias[e])
        torch.testing.assert_close(q[e], (x @ critic.head.weight[e] + critic.head.bias[e]).squeeze(-1))
    # members differ (separate heads and trunks), and a member subset selects those rows
    assert not torch.allclose(q[0], q[1])
    torch.testing.assert_close(critic(obs, act, members=torch.tensor([3, 1])), q[[3, 1]])


def test_critic_update_lowers_td_error_on_a_fixed_batch():
    agent = make_agent(num_critics=4, num_subsample=2, tau=0.0)  # frozen target: a fixed regression problem
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    members = torch.tensor([0, 1])
    before = agent.critic_loss(batch, members)[0].item()
    for _ in range(150):
        agent.update_critic(batch)
    after = agent.critic_loss(batch, members)[0].item()
    assert after < 0.5 * before


def test_actor_loss_does_not_touch_critic_weights():
    agent = make_agent(num_critics=3)
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    loss, _ = agent.actor_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in agent.critic.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.actor.parameters())


def test_temperature_rises_when_entropy_is_below_target():
    agent = make_agent(target_entropy=100.0)  # unreachable entropy: alpha must grow
    alpha0 = agent.log_alpha.exp().item()
    agent.update_temperature(torch.zeros(16))
    assert agent.log_alpha.exp().item() > alpha0


def test_timeouts_bootstrap_and_terminals_do_not():
    agent = make_agent(num_critics=2, num_subsample=2)
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    batch["reward"] = torch.zeros(16)
    batch["terminated"] = torch.ones(16)
    torch.manual_seed(1)
    _, metrics_terminal = agent.critic_loss(batch, torch.tensor([0, 1]))
    q = agent.critic(batch["obs"], batch["action"])
    # with every row terminal and zero reward the target is exactly zero
    torch.testing.assert_close(metrics_terminal["train/critic_loss"], q.square().mean(1).sum() / 2)


def test_update_uses_utd_ratio_critic_steps_and_checks_block_size():
    agent = make_agent(utd_ratio=3)
    block = {k: np.concatenate([v] * 3) for k, v in fixed_batch().items()}
    steps_before = agent.critic_updater.optimizer.state_dict()["state"]
    metrics = agent.update(block)
    assert set(metrics) >= {"train/critic_loss", "train/actor_loss", "train/temperature"}
    assert not steps_before
    critic_steps = agent.critic_updater.optimizer.state_dict()["state"][0]["step"].item()
    actor_steps = agent.actor_updater.optimizer.state_dict()["state"][0]["step"].item()
    assert (critic_steps, actor_steps) == (3, 1)
    with pytest.raises(ValueError, match="expected utd_ratio\\*batch_size = 48 rows, got 16"):
        agent.update(fixed_batch())


def test_same_seed_same_updates_and_actions():
    results = []
    for _ in range(2):
        agent = make_agent(seed=7)
        torch.manual_seed(7)
        for i in range(5):
            agent.update(fixed_batch(seed=i))
        results.append(agent.act(np.ones(OBS, np.float32)))
    np.testing.assert_array_equal(results[0], results[1])


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    agent = make_agent(seed=1)
    for i in range(3):
        agent.update(fixed_batch(seed=i))
    save_state(tmp_path, "agent", *agent.state_tensors())
    tensors, layout = load_state(tmp_path, "agent")
    clone = make_agent(seed=99)
    clone.load_state_tensors(tensors, layout)
    saved = agent.state_tensors()[0]
    for key, value in clone.state_tensors()[0].items():
        assert torch.equal(value, saved[key]), key
    # and both continue identically (optimizer moments restored too)
    torch.manual_seed(5)
    agent.update(fixed_batch(seed=10))
    torch.manual_seed(5)
    clone.update(fixed_batch(seed=10))
    for key, value in clone.state_tensors()[0].items():
        assert torch.equal(value, agent.state_tensors()[0][key]), key


def test_config_rejects_bad_values_with_the_field_name():
    with pytest.raises(ValueError, match="num_subsample"):
        SACConfig(num_critics=2, num_subsample=3)
    with pytest.raises(ValueError, match="utd_ratio"):
        SACConfig(utd_ratio=0)


def test_compiled_update_runs_and_learns():
    """The opt-in torch.compile path runs on CPU and still lowers the TD error on a fixed batch.

    (Compiled code draws its own random numbers, so it is not compared value for value with eager.)
    """
    from robot.core.compile import CompileMode

    agent = make_agent(num_critics=3, num_subsample=2, tau=0.0, compile=CompileMode.COMPILE)
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    members = torch.tensor([0, 1])
    before = agent.critic_loss(batch, members)[0].item()
    for _ in range(150):
        agent.update_critic(batch)
    agent.update({k: v.numpy() for k, v in batch.items()})  # the actor and temperature steps compile too
    assert agent.critic_loss(batch, members)[0].item() < 0.5 * before


def test_sb3_style_network_has_no_layer_norm_uses_relu_and_learns():
    """layer_norm=False, activation='relu' (SB3's / CleanRL's MlpPolicy layers) is a working learner too."""
    agent = make_agent(num_critics=2, tau=0.0, layer_norm=False, activation="relu")
    assert agent.critic.norms is None
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in agent.actor.modules())
    assert any(isinstance(m, torch.nn.ReLU) for m in agent.actor.modules())
    x = torch.full((1, OBS + ACT), -10.0)  # far negative pre-activations: relu zeroes what tanh would not
    assert torch.equal(agent.critic.activation(x), torch.zeros_like(x))
    batch = {k: torch.as_tensor(v) for k, v in fixed_batch().items()}
    members = torch.tensor([0, 1])
    before = agent.critic_loss(batch, members)[0].item()
    for _ in range(300):
        agent.update_critic(batch)
    assert agent.critic_loss(batch, members)[0].item() < 0.5 * before
    with pytest.raises(ValueError, match="activation: expected one of"):
        SACConfig(activation="gelu")
