"""The 'cuda-graph' update: the whole SAC step replayed as one CUDA graph.

The GPU tests run where CUDA is (a lent GPU machine: `python -m pytest tests/policies/test_cuda_graph.py`);
on CPU only the refusal is checked. A graph that replayed stale inputs, skipped the optimizer step or
baked one REDQ subset into every replay would fail these.
"""

import numpy as np
import pytest
import torch

from policies.sac import SACAgent, SACConfig
from robot.core.compile import CompileMode, GraphedStep
from robot.core.optim import OptimConfig

OBS, ACT = 6, 2
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_graph_mode_refuses_cpu_and_lr_warmup():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        SACAgent(OBS, ACT, SACConfig(compile=CompileMode.CUDA_GRAPH), torch.device("cpu"))
    with pytest.raises(ValueError, match="warmup_steps"):
        SACConfig(compile=CompileMode.CUDA_GRAPH, optim=OptimConfig(warmup_steps=10))


def regression_data(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Terminal transitions: the TD target is the reward itself, a fixed smooth function of (s, a)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    action = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    reward = (np.sin(obs[:, 0]) + action[:, 0] * obs[:, 1]).astype(np.float32)
    return {"obs": obs, "action": action, "reward": reward, "next_obs": rng.normal(size=(n, OBS)).astype(np.float32),
            "terminated": np.ones(n, np.float32)}


def make_agent(mode: CompileMode, utd: int = 2) -> SACAgent:
    torch.manual_seed(0)
    config = SACConfig(hidden_dims=(64, 64), batch_size=64, num_critics=4, num_subsample=2, utd_ratio=utd,
                       compile=mode)
    return SACAgent(OBS, ACT, config, torch.device("cuda"))


def held_out_critic_error(agent: SACAgent, data: dict) -> float:
    batch = {k: torch.as_tensor(v, device="cuda") for k, v in data.items()}
    with torch.no_grad():
        return (agent.critic(batch["obs"], batch["action"]) - batch["reward"]).square().mean().item()


@cuda
def test_graphed_update_learns_like_eager_from_fresh_batches():
    train, test = regression_data(20_000, seed=0), regression_data(2_000, seed=1)
    rng = np.random.default_rng(0)
    errors = {}
    for mode in (CompileMode.NONE, CompileMode.CUDA_GRAPH):
        agent = make_agent(mode)
        before = held_out_critic_error(agent, test)
        for _ in range(400):
            rows = rng.integers(0, 20_000, 128)  # utd 2 x batch 64: a new block every call
            agent.update({k: v[rows] for k, v in train.items()})
        errors[mode] = (before, held_out_critic_error(agent, test))
    eager, graphed = errors[CompileMode.NONE], errors[CompileMode.CUDA_GRAPH]
    assert graphed[1] < 0.3 * graphed[0], errors  # it learned a function, not one replayed batch
    assert graphed[1] < 2.0 * eager[1], errors  # and about as well as the eager update


@cuda
def test_every_replay_steps_all_optimizers_and_polyak():
    agent = make_agent(CompileMode.CUDA_GRAPH)
    data = regression_data(128)
    data["terminated"][:] = 0.0  # bootstrapped targets: the target critics and the REDQ subset matter
    snapshots = []
    for _ in range(4):  # call 1 eager, call 2 captures and replays, calls 3-4 replay
        metrics = agent.update(data)
        snapshots.append([t.detach().clone() for t in (agent.actor.head.weight, agent.critic.head.weight,
                                                        agent.target_critic.head.weight, agent.log_alpha)])
        assert all(torch.isfinite(v).all() for v in metrics.values())
    for a, b in zip(snapshots[1:], snapshots[2:], strict=False):  # replays change actor, critics, targets, alpha
        assert all(not torch.equal(x, y) for x, y in zip(a, b, strict=True))


@cuda
def test_replays_draw_new_random_numbers_and_reject_new_shapes():
    step = GraphedStep(lambda inputs: {"noise": torch.randn(8, device="cuda") + inputs["x"]})
    x = {"x": torch.zeros(8, device="cuda")}
    outs = [step(x)["noise"] for _ in range(4)]
    assert not torch.equal(outs[2], outs[3])  # the graph's generator offset advances per replay
    with pytest.raises(ValueError, match=r"captured \(8,\)"):
        step({"x": torch.zeros(9, device="cuda")})
