"""Replay sampling rate and memory: FrameReplayBuffer vs stable-baselines3 and a plain numpy buffer.

Workload: batches of 256 transitions drawn uniformly from a full buffer of 100-step episodes.
- images: two 128x128x3 uint8 cameras + a 24-d float32 state, 7-d action, `--image_transitions`
  transitions (default 4000: ~0.4 GB for ours, ~0.8 GB for each peer that stores next_obs separately).
- state: the 24-d state alone, `--state_transitions` transitions (default 200 000).
Rows:
- ours (numpy): `FrameReplayBuffer`, host arrays, batches of NumPy arrays; next_obs by index.
- ours (torch cpu): the same with `device="cpu"`, batches of torch tensors (what a learner on the host
  gets; on a GPU the same code gathers on the device).
- SB3 DictReplayBuffer (images; SB3 has no memory-optimised dict buffer) / SB3 ReplayBuffer with
  optimize_memory_usage=True (state): batches of torch tensors, SB3 2.x defaults otherwise
  (the memory-optimised buffer needs handle_timeout_termination=False).
- numpy, next_obs stored: a plain ring of obs and next_obs arrays gathered with np.take (the cost of
  the layout alone, no buffer logic); for state the project's flat `data.ReplayBuffer` too.
Each rate is the best of `--repeats` rounds of ~`--seconds` each; rounds alternate between the rows so
load from other processes on a shared machine hits every row alike. Memory is the bytes of the
buffer's arrays per stored transition.

    python -m benchmarks.replay_sample            # writes benchmarks/results/replay_sample.json
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.buffers import DictReplayBuffer
from stable_baselines3.common.buffers import ReplayBuffer as SB3ReplayBuffer

from benchmarks.common import write_result
from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import ReplayBuffer

BATCH, EPISODE_STEPS, STATE_DIM, ACTION_DIM = 256, 100, 24, 7
IMAGE = (128, 128, 3)
CAMERAS = ("front", "wrist")


def episode(rng: np.random.Generator, images: bool) -> dict[str, object]:
    """One 100-step episode: T + 1 observations per key, T actions/rewards, truncated at the end."""
    obs = {"state": rng.standard_normal((EPISODE_STEPS + 1, STATE_DIM), dtype=np.float32)}
    if images:
        obs |= {cam: rng.integers(0, 256, (EPISODE_STEPS + 1, *IMAGE), dtype=np.uint8) for cam in CAMERAS}
    truncated = np.arange(EPISODE_STEPS) == EPISODE_STEPS - 1
    return {
        "observations": obs,
        "action": rng.uniform(-1, 1, (EPISODE_STEPS, ACTION_DIM)).astype(np.float32),
        "reward": rng.standard_normal(EPISODE_STEPS).astype(np.float32),
        "truncated": truncated,
    }


class SeparateNextObs:
    """The plain layout: obs and next_obs arrays of every key, filled and gathered with NumPy."""

    def __init__(self, shapes: dict[str, tuple[tuple[int, ...], type]], capacity: int) -> None:
        self.obs = {k: np.zeros((capacity, *s), d) for k, (s, d) in shapes.items()}
        self.next_obs = {k: np.zeros((capacity, *s), d) for k, (s, d) in shapes.items()}
        self.action = np.zeros((capacity, ACTION_DIM), np.float32)
        self.reward = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.size = 0
        self.rng = np.random.default_rng(0)

    def add_episode(self, ep: dict) -> None:
        n, i = len(ep["action"]), self.size
        for k, rows in ep["observations"].items():
            self.obs[k][i : i + n], self.next_obs[k][i : i + n] = rows[:-1], rows[1:]
        self.action[i : i + n], self.reward[i : i + n] = ep["action"], ep["reward"]
        self.size += n

    def sample(self, batch_size: int) -> dict:
        idx = self.rng.integers(0, self.size, batch_size)
        return {
            "obs": {k: np.take(v, idx, axis=0) for k, v in self.obs.items()},
            "next_obs": {k: np.take(v, idx, axis=0) for k, v in self.next_obs.items()},
            "action": np.take(self.action, idx, axis=0),
            "reward": self.reward[idx],
            "terminated": self.terminated[idx],
        }

    @property
    def nbytes(self) -> int:
        arrays = [*self.obs.values(), *self.next_obs.values(), self.action, self.reward, self.terminated]
        return sum(a.nbytes for a in arrays)


def fill_sb3(buffer: DictReplayBuffer | SB3ReplayBuffer, ep: dict, images: bool) -> None:
    obs = ep["observations"]
    for t in range(EPISODE_STEPS):
        last = bool(ep["truncated"][t])
        if images:
            o, o2 = ({k: v[t + j][None] for k, v in obs.items()} for j in (0, 1))
        else:
            o, o2 = obs["state"][t][None], obs["state"][t + 1][None]
        buffer.add(o, o2, ep["action"][t][None], ep["reward"][t : t + 1], np.array([last]),
                   [{"TimeLimit.truncated": last}])


def sb3_nbytes(buffer: DictReplayBuffer | SB3ReplayBuffer) -> int:
    arrays = [buffer.actions, buffer.rewards, buffer.dones, buffer.timeouts]
    for obs in (buffer.observations, getattr(buffer, "next_observations", None)):
        if isinstance(obs, dict):
            arrays += list(obs.values())
        elif obs is not None:
            arrays.append(obs)
    return sum(a.nbytes for a in arrays)


def build(images: bool, transitions: int) -> dict[str, tuple[Callable[[], object], int, int]]:
    """Row name -> (draw one batch, buffer bytes, transitions held), all filled with the same episodes."""
    shapes = {"state": ((STATE_DIM,), np.float32)}
    if images:
        shapes |= {cam: (IMAGE, np.uint8) for cam in CAMERAS}
    episodes = transitions // EPISODE_STEPS
    frames = episodes * (EPISODE_STEPS + 1)  # ours: T + 1 observation slots per episode
    ours = FrameReplayBuffer(shapes, ACTION_DIM, frames, seed=0)
    ours_torch = FrameReplayBuffer(shapes, ACTION_DIM, frames, seed=0, device="cpu")
    separate = SeparateNextObs(shapes, transitions)
    obs_space = gym.spaces.Dict({k: gym.spaces.Box(0 if d == np.uint8 else -np.inf, 255 if d == np.uint8 else np.inf,
                                                   s, d) for k, (s, d) in shapes.items()})
    act_space = gym.spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
    if images:
        sb3 = DictReplayBuffer(transitions, obs_space, act_space, device="cpu")
    else:  # + 1: the memory-optimised buffer never samples the slot at its write position
        sb3 = SB3ReplayBuffer(transitions + 1, obs_space["state"], act_space, device="cpu",
                             optimize_memory_usage=True, handle_timeout_termination=False)
    flat = None if images else ReplayBuffer(STATE_DIM, ACTION_DIM, transitions, seed=0)
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        ep = episode(rng, images)
        ours.add_episode(**ep)
        ours_torch.add_episode(**ep)
        separate.add_episode(ep)
        fill_sb3(sb3, ep, images)
        if flat is not None:
            s = ep["observations"]["state"]
            flat.add_many(s[:-1], ep["action"], ep["reward"], s[1:], np.zeros(EPISODE_STEPS, bool))
    sb3_name = "SB3 DictReplayBuffer" if images else "SB3 ReplayBuffer (optimize_memory_usage)"
    rows = {
        "ours (numpy)": (lambda: ours.sample(BATCH), ours.nbytes, len(ours)),
        "ours (torch cpu)": (lambda: ours_torch.sample(BATCH), ours_torch.nbytes, len(ours_torch)),
        sb3_name: (lambda: sb3.sample(BATCH), sb3_nbytes(sb3), sb3.size()),
        "numpy, next_obs stored": (lambda: separate.sample(BATCH), separate.nbytes, separate.size),
    }
    if flat is not None:
        flat_bytes = sum(getattr(flat, k).nbytes for k in ("obs", "next_obs", "action", "reward", "terminated"))
        rows["data.ReplayBuffer (flat, next_obs stored)"] = (lambda: flat.sample(BATCH), flat_bytes, len(flat))
    return rows


def rates(rows: dict[str, tuple[Callable[[], object], int, int]], seconds: float, repeats: int) -> dict[str, float]:
    """Best batches/s of each row over `repeats` alternating rounds of about `seconds` each."""
    best = dict.fromkeys(rows, 0.0)
    for _ in range(repeats):
        for name, (draw, _, _) in rows.items():
            draw()  # warm-up: first touch of pages, allocator
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                draw()
                count += 1
            best[name] = max(best[name], count / elapsed)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_transitions", type=int, default=4000, help="transitions in each image buffer")
    parser.add_argument("--state_transitions", type=int, default=200_000, help="transitions in each state buffer")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one timing round per row")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per row; the best is kept")
    parser.add_argument("--out", type=Path, default=None, help="results file (default benchmarks/results/...)")
    args = parser.parse_args(argv)

    console = Console()
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for workload, images, n in (("images", True, args.image_transitions), ("state", False, args.state_transitions)):
        rows = build(images, n)
        per_s = rates(rows, args.seconds, args.repeats)
        results[workload] = {
            name: {"batches_per_s": round(per_s[name], 1), "bytes_per_transition": round(nbytes / held, 1)}
            for name, (_, nbytes, held) in rows.items()
        }
        del rows
        gc.collect()
        what = f"2 cameras {IMAGE[0]}x{IMAGE[1]}x3 uint8 + {STATE_DIM}-d state" if images else f"{STATE_DIM}-d state"
        table = Table(title=f"replay sampling, batch {BATCH}, {what}, {n} transitions")
        for column in ("buffer", "batches/s", "bytes/transition"):
            table.add_column(column, justify="left" if column == "buffer" else "right")
        for name, r in results[workload].items():
            table.add_row(name, f"{r['batches_per_s']:.0f}", f"{r['bytes_per_transition']:.0f}")
        console.print(table)

    img, st = results["images"], results["state"]
    sb3_state = "SB3 ReplayBuffer (optimize_memory_usage)"
    summary = {
        "batches_per_s_images": img["ours (numpy)"]["batches_per_s"],
        "batches_per_s_state": st["ours (numpy)"]["batches_per_s"],
        # Same output type on both sides: torch tensors on the CPU.
        "images_ratio_vs_sb3_dict": round(img["ours (torch cpu)"]["batches_per_s"]
                                          / img["SB3 DictReplayBuffer"]["batches_per_s"], 2),
        "images_ratio_vs_numpy_next_obs_stored": round(img["ours (numpy)"]["batches_per_s"]
                                                       / img["numpy, next_obs stored"]["batches_per_s"], 2),
        "state_ratio_vs_sb3_optimized": round(st["ours (torch cpu)"]["batches_per_s"]
                                              / st[sb3_state]["batches_per_s"], 2),
        "state_ratio_vs_numpy_next_obs_stored": round(st["ours (numpy)"]["batches_per_s"]
                                                      / st["numpy, next_obs stored"]["batches_per_s"], 2),
        "bytes_per_transition_images": img["ours (numpy)"]["bytes_per_transition"],
        "memory_ratio_images_vs_next_obs_stored": round(img["ours (numpy)"]["bytes_per_transition"]
                                                        / img["numpy, next_obs stored"]["bytes_per_transition"], 3),
        "memory_ratio_state_vs_next_obs_stored": round(st["ours (numpy)"]["bytes_per_transition"]
                                                       / st["numpy, next_obs stored"]["bytes_per_transition"], 3),
    }
    console.print(summary)
    command = " ".join(["python -m benchmarks.replay_sample", *(argv if argv is not None else sys.argv[1:])])
    path = write_result("replay_sample", summary, command, args.out, results=results, workload={
        "batch": BATCH, "episode_steps": EPISODE_STEPS, "cameras": list(CAMERAS), "image_shape": list(IMAGE),
        "state_dim": STATE_DIM, "action_dim": ACTION_DIM, "image_transitions": args.image_transitions,
        "state_transitions": args.state_transitions, "seconds_per_round": args.seconds,
        "repeats_best_of": args.repeats, "torch_threads": torch.get_num_threads(),
        # The machine may be shared: other jobs' load slows every row (alternating best-of filters some).
        "load_average_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    })
    console.print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
