"""Learner updates/s: our SAC/RLPD learner vs stable-baselines3 SAC, same sizes, same process.

Both learners get 256-256 MLPs, batch 256, the same observation/action sizes as PandaPickCube
(21 / 4), the same critic ensemble size, and their update is timed on a filled replay buffer with no
environment in the loop. "Updates" are critic gradient steps. The goal's configuration is equal in every
respect: the same networks too. SB3 builds the recipe's network (Linear -> LayerNorm -> tanh) with its own
`create_mlp(post_linear_modules=[nn.LayerNorm])` and `activation_fn=nn.Tanh`. Rows:
- "equal": our recipe network vs SB3 with the same network, one actor step per critic step on both sides
  (SB3's gradient_steps = UTD; ours actor_every=1): the same work;
- "equal, SB3 net": both on SB3's MlpPolicy layers (ReLU, no LayerNorm);
- "recipe vs SB3 default": our recipe network vs SB3's default ReLU network, the row earlier runs called
  "equal": ours does the LayerNorm and tanh work SB3's default does not;
- "rlpd": ours as the recipe runs it (UTD critic steps, then one actor and temperature step), vs SB3 with
  the recipe network doing UTD full steps;
- "equal, ATen ops": "equal" without the fused layer kernels (policies/fused_layers.py);
- "equal, autograd": "equal" with `SACConfig.backward = autograd`, the update before the hand-derived
  backward passes (policies/sac_backprop.py).
`cpu_ratio_vs_sb3` is the smallest ratio over the "equal" and "equal, SB3 net" rows.
Measurements alternate between the learners in rounds so background load hits all alike.

On a GPU (`--device cuda`) both learners run there, and ours adds "+graph" rows: the whole update (all
UTD critic steps, actor, temperature, optimizer steps, Polyak averaging) replayed as one CUDA graph
(`SACConfig.compile = cuda-graph`). The GPU goal is stated for 10 critics at UTD 20; its figure is the
"equal+graph" row (the same work as SB3's 20 gradient steps). The GPU rows are merged into the CPU
results file.

Image rows: our pixel agent (policies/image_sac.py: small conv encoder per camera, spatial embeddings,
2 critics, DrQ shifts, target encoder) vs SB3 SAC("MultiInputPolicy") (NatureCNN per camera, separate
actor and critic extractors), two 128x128 cameras + 14-D proprio, batch `--image_batch`, UTD 1, one
full update (critic + actor + temperature) per count.

    python -m benchmarks.learner_throughput [--quick] [--compile] [--image_only]
    python -m benchmarks.learner_throughput --device cuda --image_batch 256
    python -m benchmarks.learner_throughput --phases
    python -m benchmarks.learner_throughput --default_malloc   # prints only: the allocator's share

Both learners share the process and its allocator setting: `retain_freed_memory()`, what `robot train`
sets, is applied once before any timing; `--default_malloc` leaves glibc's defaults (the "page faults"
column shows what that costs) and writes no results.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import RESULTS, machine, write_result
from data.replay_buffer import MixedSampler, ReplayBuffer
from policies.sac import SACAgent, SACConfig
from robot.core.compile import CompileMode
from robot.core.device import retain_freed_memory

OBS, ACT, BATCH = 21, 4, 256


class _Spaces(gym.Env):
    """Only spaces: SB3 needs an env object to build its networks; no stepping happens while timing."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(OBS, np.float32), {}

    def step(self, action):
        return np.random.standard_normal(OBS).astype(np.float32), 0.0, False, False, {}


SB3_NETWORK = {"layer_norm": False, "activation": "relu"}
"""SAC config fields that give our networks SB3's MlpPolicy layers (ReLU, no LayerNorm)."""


def filled_sampler() -> MixedSampler:
    """A sampler over 10 000 random transitions: the update is timed without an env in the loop."""
    buffer = ReplayBuffer(OBS, ACT, 20_000, seed=0)
    rng = np.random.default_rng(0)
    n = 10_000
    buffer.add_many(rng.normal(size=(n, OBS)), rng.uniform(-1, 1, (n, ACT)), rng.normal(size=n),
                    rng.normal(size=(n, OBS)), rng.uniform(size=n) < 0.01)
    return MixedSampler({"online": buffer}, {"online": 1.0}, seed=0)


def ours(num_critics: int, utd: int, actor_every_critic_step: bool, compile_mode: CompileMode, device: str = "cpu",
         sb3_network: bool = False, backward: str = "auto", fused_kernels: bool = True):
    """`sb3_network`: SB3's MlpPolicy layers (ReLU, no LayerNorm) instead of the LayerNorm/tanh recipe."""
    config = SACConfig(num_critics=num_critics, num_subsample=min(2, num_critics), batch_size=BATCH,
                       utd_ratio=1 if actor_every_critic_step else utd, compile=compile_mode, backward=backward,
                       fused_kernels=fused_kernels, **(SB3_NETWORK if sb3_network else {}))
    agent = SACAgent(OBS, ACT, config, torch.device(device))
    sampler = filled_sampler()

    def step():  # one environment step's worth of learning: `utd` critic steps
        if actor_every_critic_step:
            for _ in range(utd):
                agent.update(sampler.sample(BATCH, 1))
        else:
            agent.update(sampler.sample(BATCH, utd))

    return step


def sb3(num_critics: int, utd: int, device: str = "cpu", network: str = "sb3"):
    """SB3 SAC's `train(gradient_steps=utd)`; network 'sb3' (its MlpPolicy default, ReLU) or 'recipe' (Linear
    -> LayerNorm -> tanh per hidden layer, as ours, built by SB3's own `create_mlp`)."""
    from unittest import mock

    import stable_baselines3.common.policies as common_policies
    import stable_baselines3.sac.policies as sac_policies
    from stable_baselines3 import SAC
    from stable_baselines3.common.torch_layers import create_mlp
    from torch import nn

    kwargs = {"net_arch": [256, 256], "n_critics": num_critics}
    if network == "recipe":
        # SACPolicy does not pass create_mlp's post_linear_modules through; give it while the networks are built.
        with_norm = functools.partial(create_mlp, post_linear_modules=[nn.LayerNorm])
        patches = (mock.patch.object(common_policies, "create_mlp", with_norm),
                   mock.patch.object(sac_policies, "create_mlp", with_norm))
        kwargs["activation_fn"] = nn.Tanh
    else:
        patches = ()
    with contextlib.ExitStack() as stack:
        for patch in patches:
            stack.enter_context(patch)
        model = SAC("MlpPolicy", _Spaces(), batch_size=BATCH, learning_starts=2_000, device=device, verbose=0,
                    seed=0, policy_kwargs=kwargs)
    if network == "recipe":
        norms = sum(isinstance(m, nn.LayerNorm) for m in model.policy.modules())
        assert norms == 2 * (1 + 2 * num_critics), f"SB3 recipe network: {norms} LayerNorms"  # actor, critics, targets
    model.learn(2_000)  # fills the buffer only (`timed` warms up)
    return lambda: model.train(gradient_steps=utd, batch_size=BATCH)


IMAGE = 128
IMAGE_SPEC = {"front": ((IMAGE, IMAGE, 3), np.uint8), "wrist": ((IMAGE, IMAGE, 3), np.uint8),
              "state": ((14,), np.float32)}


def _image_obs(rng: np.random.Generator, rows: int) -> dict[str, np.ndarray]:
    return {k: (rng.integers(0, 256, (rows, *shape), dtype=np.uint8) if dtype == np.uint8
                else rng.normal(size=(rows, *shape)).astype(np.float32)) for k, (shape, dtype) in IMAGE_SPEC.items()}


def ours_image(batch: int, device: str = "cpu", compile_mode: CompileMode = CompileMode.NONE):
    from data.frame_replay import FrameReplayBuffer
    from policies.image_sac import ImageAgentConfig, ImageSACAgent

    config = SACConfig(num_critics=2, num_subsample=2, batch_size=batch, utd_ratio=1, compile=compile_mode)
    agent = ImageSACAgent(IMAGE_SPEC, ACT, config, ImageAgentConfig(), torch.device(device))
    # On a GPU the frames live there (ImageAgentConfig.replay_on_device), as `robot train` can keep them.
    buffer = FrameReplayBuffer(IMAGE_SPEC, ACT, 2_000, seed=0, device=None if device == "cpu" else device)
    rng = np.random.default_rng(0)
    steps = 1_000
    obs = _image_obs(rng, steps + 1)
    buffer.add_episode(obs, rng.uniform(-1, 1, (steps, ACT)), rng.normal(size=steps))
    return lambda: agent.update(buffer.sample(batch))


class _ImageSpaces(gym.Env):
    observation_space = gym.spaces.Dict({
        k: gym.spaces.Box(0, 255, shape, np.uint8) if dtype == np.uint8 else gym.spaces.Box(-np.inf, np.inf, shape)
        for k, (shape, dtype) in IMAGE_SPEC.items()
    })
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

    def reset(self, *, seed=None, options=None):
        return {k: v[0] for k, v in _image_obs(np.random.default_rng(seed), 1).items()}, {}

    def step(self, action):
        return self.reset()[0], 0.0, False, False, {}


def sb3_image(batch: int, device: str = "cpu"):
    from stable_baselines3 import SAC

    model = SAC("MultiInputPolicy", _ImageSpaces(), batch_size=batch, buffer_size=2_000, learning_starts=10**9,
                device=device, verbose=0, seed=0, policy_kwargs={"net_arch": [256, 256]})
    model.learn(1_000)  # fills the buffer only (learning_starts is never reached)
    return lambda: model.train(gradient_steps=1, batch_size=batch)


def alternate(learners: dict, utd: int, seconds: float, rounds: int) -> tuple[dict[str, float], dict[str, float]]:
    """Updates/s and minor page faults per update of each learner, timed in alternating rounds so load
    changes hit every learner alike."""
    rates, faults = dict.fromkeys(learners, 0.0), dict.fromkeys(learners, 0.0)
    for _ in range(rounds):
        for name, step in learners.items():
            rate, faults_per_update = timed(step, utd, seconds)
            rates[name] += rate / rounds
            faults[name] += faults_per_update / rounds
    return rates, faults


def image_rows(batch: int, seconds: float, rounds: int, device: str = "cpu") -> list[dict]:
    mode = CompileMode.NONE if device == "cpu" else CompileMode.CUDA_GRAPH
    totals, _ = alternate({"ours": ours_image(batch, device, mode), "sb3": sb3_image(batch, device)}, 1, seconds,
                          rounds)
    return [{"cameras": 2, "image": IMAGE, "batch": batch, "ours_updates_per_s": totals["ours"],
             "sb3_updates_per_s": totals["sb3"], "ratio": totals["ours"] / totals["sb3"]}]


@dataclass(frozen=True)
class Mode:
    """One row kind: our learner configured so, against SB3 with network `peer`."""

    name: str
    actor_every_critic_step: bool = True
    compile: CompileMode = CompileMode.NONE
    sb3_network: bool = False  # ours on SB3's MlpPolicy layers instead of the recipe's
    backward: str = "auto"
    fused_kernels: bool = True
    peer: str = "same"  # 'same': SB3 with our network; 'sb3': SB3's default network

    @property
    def peer_network(self) -> str:
        return ("sb3" if self.sb3_network else "recipe") if self.peer == "same" else self.peer

    def learner(self, num_critics: int, utd: int, device: str):
        return ours(num_critics, utd, self.actor_every_critic_step, self.compile, device, self.sb3_network,
                    self.backward, self.fused_kernels)


EQUAL_ROWS = ("equal", "equal, SB3 net")
"""The rows whose configuration is equal in every respect: the goal's figure is their smallest ratio."""


def state_rows(modes: list[Mode], device: str, seconds: float, rounds: int) -> list[dict]:
    """Rows for every (critics, UTD) configuration: each mode of our learner timed against SB3 SAC with the
    network the mode names."""
    rows = []
    for num_critics, utd in ((2, 1), (2, 20), (10, 1), (10, 20)):
        peers = sorted({mode.peer_network for mode in modes})
        learners = {f"SB3 {net}": sb3(num_critics, utd, device, net) for net in peers}
        learners |= {mode.name: mode.learner(num_critics, utd, device) for mode in modes}
        totals, faults = alternate(learners, utd, seconds, rounds)
        for mode in modes:
            peer = f"SB3 {mode.peer_network}"
            rows.append({"critics": num_critics, "utd": utd, "ours": mode.name, "sb3_network": mode.peer_network,
                         "ours_updates_per_s": totals[mode.name], "sb3_updates_per_s": totals[peer],
                         "ratio": totals[mode.name] / totals[peer],
                         "ours_page_faults_per_update": faults[mode.name],
                         "sb3_page_faults_per_update": faults[peer]})
    return rows


def print_rows(title: str, rows: list[dict], images: list[dict]) -> None:
    table = Table(title=title)
    for col in ("critics", "UTD", "ours", "SB3 network", "ours upd/s", "SB3 upd/s", "ratio",
                "page faults/upd ours, SB3"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["critics"]), str(r["utd"]), r["ours"], r["sb3_network"], f"{r['ours_updates_per_s']:.0f}",
                      f"{r['sb3_updates_per_s']:.0f}", f"{r['ratio']:.2f}",
                      f"{r['ours_page_faults_per_update']:.0f}, {r['sb3_page_faults_per_update']:.0f}")
    for r in images:
        table.add_row(f"2 (images {IMAGE}x{IMAGE}, batch {r['batch']})", "1", "image", "NatureCNN",
                      f"{r['ours_updates_per_s']:.2f}", f"{r['sb3_updates_per_s']:.2f}", f"{r['ratio']:.2f}")
    Console().print(table)


def timed(step, utd: int, seconds: float) -> tuple[float, float]:
    """(critic updates per second, minor page faults per critic update) of `step` over about `seconds`."""
    import resource

    for _ in range(3):  # warm-up (compilation; a CUDA graph's eager run and capture)
        step()
    _synchronize()
    count, start, faults = 0, time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    while time.perf_counter() - start < seconds:
        step()
        count += utd
    _synchronize()  # GPU work is asynchronous: count it only once it has run
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    return count / (time.perf_counter() - start), faults / count


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def phase_times(sb3_network: bool, updates: int = 300) -> dict[str, float]:
    """Milliseconds per update spent in each phase of our update (2 critics, UTD 1, batch 256, CPU): where
    the time goes, for the BENCHMARKS.md budget. The phases are the ones `SACAgent.update` runs, called one
    by one so each can be timed."""
    from robot.core.optim import polyak_update

    config = SACConfig(num_critics=2, num_subsample=2, batch_size=BATCH, backward="autograd",
                       **(SB3_NETWORK if sb3_network else {}))
    agent = SACAgent(OBS, ACT, config, torch.device("cpu"))
    sampler = filled_sampler()
    totals: dict[str, float] = {}

    def timed_phase(name: str, fn, *args):
        start = time.perf_counter()
        out = fn(*args)
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start
        return out

    for i in range(updates + 20):
        if i == 20:  # warm-up done
            totals.clear()
        batch = timed_phase("sample + to tensors", lambda: agent.prepare(sampler.sample(BATCH, 1)))
        loss, _ = timed_phase("critic forward (with target)", agent.critic_loss, batch, None)
        timed_phase("critic backward", loss.backward)
        timed_phase("critic Adam", agent.critic_updater.step)
        timed_phase("Polyak", polyak_update, agent.target_params, agent.critic_params, agent.config.tau)
        actor_loss, log_prob = timed_phase("actor forward", agent.actor_loss, batch)
        timed_phase("actor backward", actor_loss.backward)
        timed_phase("actor Adam", agent.actor_updater.step)
        timed_phase("temperature (backward + Adam)", agent.update_temperature, log_prob)
    return {name: 1e3 * total / updates for name, total in totals.items()}


GEMM_OPS = ("aten::mm", "aten::bmm", "aten::baddbmm", "aten::addmm")


def matmul_share(num_critics: int, sb3_network: bool, backward: str, fused_kernels: bool,
                 updates: int = 50) -> tuple[float, float, float]:
    """(ms per update in matrix products, ms per update in all ATen ops, ATen ops per update) of our update,
    from the torch profiler's self CPU times (the fused kernels are not ATen ops: not counted)."""
    from torch.profiler import ProfilerActivity, profile

    config = SACConfig(num_critics=num_critics, num_subsample=2, batch_size=BATCH, backward=backward,
                       fused_kernels=fused_kernels, **(SB3_NETWORK if sb3_network else {}))
    agent = SACAgent(OBS, ACT, config, torch.device("cpu"))
    sampler = filled_sampler()
    for _ in range(20):
        agent.update(sampler.sample(BATCH, 1))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(updates):
            agent.update(sampler.sample(BATCH, 1))
    events = prof.key_averages()
    gemm = sum(e.self_cpu_time_total for e in events if e.key in GEMM_OPS)
    total = sum(e.self_cpu_time_total for e in events)
    calls = sum(e.count for e in events if e.key.startswith("aten::"))
    return gemm / 1e3 / updates, total / 1e3 / updates, calls / updates


def print_phases() -> None:
    per_update = Table(title="per update, UTD 1, batch 256, CPU (standalone: one learner at a time)")
    for col in ("critics", "learner", "network", "ms / update", "page faults / update",
                "profiler: matrix products ms of op ms", "profiler: ATen calls"):
        per_update.add_column(col, justify="right")
    for critics in (2, 10):
        # built first, as in the throughput rows: their allocations come before ours
        sb3_steps = {"SB3 net": sb3(critics, 1), "recipe": sb3(critics, 1, network="recipe")}
        for backward, fused in (("autograd", False), ("explicit", False), ("explicit", True)):
            learner = f"ours, {backward}" + (", fused kernels" if fused else "")
            for sb3_network, network in ((False, "recipe"), (True, "SB3 net")):
                step = ours(critics, 1, True, CompileMode.NONE, sb3_network=sb3_network, backward=backward,
                            fused_kernels=fused)
                gemm, total, calls = matmul_share(critics, sb3_network, backward, fused)
                per_update.add_row(str(critics), learner, network, *(f"{v:.2f}" for v in ms_and_faults(step)),
                                   f"{gemm:.2f} of {total:.2f}", f"{calls:.0f}")
        for network, sb3_step in sb3_steps.items():
            per_update.add_row(str(critics), "SB3", network, *(f"{v:.2f}" for v in ms_and_faults(sb3_step)))
    Console().print(per_update)

    recipe, sb3_net = phase_times(False), phase_times(True)
    table = Table(title="ms per update by phase, ours with backward=autograd, 2 critics, UTD 1, batch 256, CPU")
    for col in ("phase", "recipe (LayerNorm + tanh)", "SB3 net (ReLU)"):
        table.add_column(col, justify="right")
    for name in recipe:
        table.add_row(name, f"{recipe[name]:.2f}", f"{sb3_net[name]:.2f}")
    table.add_row("total", f"{sum(recipe.values()):.2f}", f"{sum(sb3_net.values()):.2f}")
    Console().print(table)


def ms_and_faults(step, calls: int = 200) -> tuple[float, float]:
    """(milliseconds, minor page faults) per call of `step`, after a warm-up."""
    import resource

    for _ in range(20):
        step()
    faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(calls):
        step()
    wall = time.perf_counter() - start
    return 1e3 * wall / calls, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls


def write_merged(summary: dict, keep, command: str | None, **figures) -> None:
    """Write the results file with `summary` and `figures`, keeping the previous file's keys (summary and
    figures alike) for which `keep(key)` holds; `command`: None keeps the previous run's command."""
    path = RESULTS / "learner_throughput.json"
    previous = json.loads(path.read_text()) if path.is_file() else {"summary": {}, "command": ""}
    kept = {k: v for k, v in previous.items() if k not in ("summary", "command", "machine", "date") and keep(k)}
    kept_summary = {k: v for k, v in previous["summary"].items() if keep(k)}
    path = write_result("learner_throughput", {**kept_summary, **summary},
                        previous["command"] if command is None else command, **{**kept, **figures})
    print(f"wrote {path}")


def this_command() -> str:
    return "python -m benchmarks.learner_throughput " + " ".join(sys.argv[1:])


def gpu_main(args: argparse.Namespace, seconds: float, rounds: int) -> None:
    """State rows (eager and CUDA graph) and image rows on the GPU vs SB3 on the same GPU, merged into the
    results file beside the CPU rows."""
    modes = [Mode("equal", backward="autograd"), Mode("equal+graph", compile=CompileMode.CUDA_GRAPH),
             Mode("rlpd+graph", actor_every_critic_step=False, compile=CompileMode.CUDA_GRAPH)]
    rows = state_rows(modes, args.device, seconds, rounds)
    images = image_rows(args.image_batch, 2 * seconds, rounds, args.device)
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else args.device
    print_rows(f"learner updates/s (critic gradient steps), {gpu}, batch 256, 256-256 MLPs", rows, images)
    goal = next(r for r in rows if r["critics"] == 10 and r["utd"] == 20 and r["ours"] == "equal+graph")
    recipe = next(r for r in rows if r["critics"] == 10 and r["utd"] == 20 and r["ours"] == "rlpd+graph")
    summary = {"gpu_ratio_vs_sb3": goal["ratio"], "gpu_ratio_vs_sb3_rlpd_recipe": recipe["ratio"],
               "gpu_image_updates_per_s": images[0]["ours_updates_per_s"], "gpu_image_ratio_vs_sb3": images[0]["ratio"]}
    if not args.quick:
        write_merged(summary, lambda key: True, None, gpu_rows=rows, gpu_image_rows=images,
                     gpu_command=this_command(), gpu_machine=machine(), gpu_date=time.strftime("%Y-%m-%d"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timings (smoke test)")
    parser.add_argument("--compile", action="store_true", help="also time our torch.compile'd update")
    parser.add_argument("--image_batch", type=int, default=64, help="batch of the image rows (default: 64)")
    parser.add_argument("--image_only", action="store_true",
                        help="time only the image rows and add them to the existing results file")
    parser.add_argument("--device", default="cpu", help="cpu (the goal's rows) or cuda (GPU rows, merged in)")
    parser.add_argument("--phases", action="store_true",
                        help="only print where our update's time goes, phase by phase (CPU, 2 critics, UTD 1)")
    parser.add_argument("--default_malloc", action="store_true",
                        help="leave glibc malloc's defaults (no retain_freed_memory); prints, writes no results")
    args = parser.parse_args()
    if not args.default_malloc:
        retain_freed_memory()  # as robot.train.build_agent does; process-wide, so SB3 runs with it too
    if args.phases:
        print_phases()
        return
    if args.device != "cpu":
        gpu_main(args, 0.5 if args.quick else 2.5, 1)
        return
    # a --default_malloc run measures the allocator's share, not what robot train runs: printed, not written
    write = not (args.quick or args.default_malloc)
    seconds, rounds = (1.0, 1) if args.quick else (6.0, 3)
    torch.manual_seed(0)
    images = image_rows(args.image_batch, 3 * seconds, rounds)
    image_summary = {"cpu_image_updates_per_s": images[0]["ours_updates_per_s"],
                     "cpu_image_ratio_vs_sb3": images[0]["ratio"]}
    if args.image_only:
        print_rows("image learner updates/s, CPU, UTD 1", [], images)
        if write:
            write_merged(image_summary, lambda key: True, None, image_rows=images, image_command=this_command())
        return
    modes = [Mode("equal"), Mode("equal, SB3 net", sb3_network=True), Mode("recipe vs SB3 default", peer="sb3"),
             Mode("rlpd", actor_every_critic_step=False), Mode("equal, ATen ops", fused_kernels=False),
             Mode("equal, autograd", backward="autograd")]
    if args.compile:
        modes.append(Mode("equal+compile", compile=CompileMode.COMPILE, backward="autograd"))
    rows = state_rows(modes, "cpu", seconds, rounds)
    print_rows("learner updates/s (critic gradient steps), CPU, batch 256, 256-256 MLPs", rows, images)
    smallest = lambda *names: min(r["ratio"] for r in rows if r["ours"] in names)  # noqa: E731
    summary = {"cpu_ratio_vs_sb3": smallest(*EQUAL_ROWS),
               "cpu_ratio_vs_sb3_recipe_network": smallest("equal"),
               "cpu_ratio_vs_sb3_same_network": smallest("equal, SB3 net"),
               "cpu_ratio_vs_sb3_default_network": smallest("recipe vs SB3 default"),
               "cpu_ratio_vs_sb3_rlpd_recipe": smallest("rlpd"),
               "cpu_ratio_vs_sb3_aten_ops": smallest("equal, ATen ops"),
               "cpu_ratio_vs_sb3_autograd": smallest("equal, autograd"),
               **image_summary}
    if args.compile:
        summary["cpu_ratio_vs_sb3_compiled"] = smallest("equal+compile")
    if write:  # a new CPU run replaces the CPU figures; a GPU run's rows stay
        write_merged(summary, lambda key: key.startswith("gpu_"), this_command(), rows=rows, image_rows=images)


if __name__ == "__main__":
    main()
