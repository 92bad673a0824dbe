"""Learner updates/s: our SAC/RLPD learner vs stable-baselines3 SAC, same sizes, same process.

Both learners get 256-256 MLPs, batch 256, the same observation/action sizes as PandaPickCube
(21 / 4), the same critic ensemble size, and their update is timed on a filled replay buffer with no
environment in the loop. "Updates" are critic gradient steps. Rows:
- "equal": both do one actor step per critic step (SB3's gradient_steps = UTD; ours actor_every=1) —
  the same work, the configuration the goal is stated for;
- "rlpd": ours as the recipe runs it (UTD critic steps, then one actor and temperature step).
Measurements alternate between the two learners in rounds so background load hits both alike.

    python benchmarks/learner_throughput.py [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import write_result
from data.replay_buffer import MixedSampler, ReplayBuffer
from policies.sac import SACAgent, SACConfig
from robot.core.compile import CompileMode

OBS, ACT, BATCH = 21, 4, 256


class _Spaces(gym.Env):
    """Only spaces: SB3 needs an env object to build its networks; no stepping happens while timing."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS, np.float32), {}

    def step(self, action):
        return np.random.standard_normal(OBS).astype(np.float32), 0.0, False, False, {}


def ours(num_critics: int, utd: int, actor_every_critic_step: bool, compile_mode: CompileMode):
    config = SACConfig(num_critics=num_critics, num_subsample=min(2, num_critics), batch_size=BATCH,
                       utd_ratio=1 if actor_every_critic_step else utd, compile=compile_mode)
    agent = SACAgent(OBS, ACT, config, torch.device("cpu"))
    buffer = ReplayBuffer(OBS, ACT, 20_000, seed=0)
    rng = np.random.default_rng(0)
    n = 10_000
    buffer.add_many(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
                    rng.normal(size=(n, OBS)), rng.uniform(size=n) < 0.01)
    sampler = MixedSampler({"online": buffer}, {"online": 1.0}, seed=0)

    def step():  # one environment step's worth of learning: `utd` critic steps
        if actor_every_critic_step:
            for _ in range(utd):
                agent.update(sampler.sample(BATCH, 1))
        else:
            agent.update(sampler.sample(BATCH, utd))

    return step


def sb3(num_critics: int, utd: int):
    from stable_baselines3 import SAC

    model = SAC("MlpPolicy", _Spaces(), batch_size=BATCH, learning_starts=0, device="cpu", verbose=0, seed=0,
                policy_kwargs={"net_arch": [256, 256], "n_critics": num_critics})
    model.learn(2_000)  # fills the buffer (and warms up)
    return lambda: model.train(gradient_steps=utd, batch_size=BATCH)


def timed(step, utd: int, seconds: float) -> float:
    """Critic updates per second of `step` over about `seconds`."""
    step()  # warm-up (and compilation)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += utd
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (smoke test)")
    parser.add_argument("--compile", action="store_true", help="also time our torch.compile'd update")
    args = parser.parse_args()
    seconds, rounds = (1.0, 1) if args.quick else (6.0, 3)
    torch.manual_seed(0)
    rows = []
    for num_critics in (2, 10):
        for utd in (1, 20):
            modes = [("equal", True, CompileMode.NONE), ("rlpd", False, CompileMode.NONE)]
            if args.compile:
                modes.append(("equal+compile", True, CompileMode.COMPILE))
            learners = {"sb3": sb3(num_critics, utd)}
            learners |= {name: ours(num_critics, utd, every, mode) for name, every, mode in modes}
            totals = dict.fromkeys(learners, 0.0)
            for _ in range(rounds):  # alternate so load changes hit every learner alike
                for name, step in learners.items():
                    totals[name] += timed(step, utd, seconds) / rounds
            for name in learners:
                if name == "sb3":
                    continue
                rows.append({"critics": num_critics, "utd": utd, "ours": name, "ours_updates_per_s": totals[name],
                             "sb3_updates_per_s": totals["sb3"], "ratio": totals[name] / totals["sb3"]})
    table = Table(title="learner updates/s (critic gradient steps), CPU, batch 256, 256-256 MLPs")
    for col in ("critics", "UTD", "ours", "ours upd/s", "SB3 upd/s", "ratio"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["critics"]), str(r["utd"]), r["ours"], f"{r['ours_updates_per_s']:.0f}",
                      f"{r['sb3_updates_per_s']:.0f}", f"{r['ratio']:.2f}")
    Console().print(table)
    equal = [r for r in rows if r["ours"] == "equal"]
    summary = {"cpu_ratio_vs_sb3": min(r["ratio"] for r in equal),
               "cpu_ratio_vs_sb3_rlpd_recipe": min(r["ratio"] for r in rows if r["ours"] == "rlpd")}
    if args.compile:
        summary["cpu_ratio_vs_sb3_compiled"] = min(r["ratio"] for r in rows if r["ours"] == "equal+compile")
    if not args.quick:
        path = write_result("learner_throughput", summary, "python benchmarks/learner_throughput.py "
                            + " ".join(sys.argv[1:]), rows=rows)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
