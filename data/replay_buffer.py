"""Replay buffers for off-policy learners, and mixed sampling from several named sources.

`ReplayBuffer` is a fixed-capacity ring of transitions in NumPy (pinned to host memory; batches are
moved to the learner's device in one copy). `MixedSampler` draws a batch from several buffers with fixed
per-source counts (RLPD's symmetric sampling: 50 % online, 50 % demos is `{"online": 0.5, "demo": 0.5}`),
so the ratio is exact in every batch rather than only in expectation. For dict observations with camera
frames use `data.frame_replay.FrameReplayBuffer` (each frame stored once); MixedSampler mixes those too.

Time-outs are not terminal states: `terminated` is stored separately from the episode end, and only
`terminated` cuts the bootstrap in the critic target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

BATCH_KEYS = ("obs", "action", "reward", "next_obs", "terminated")


class ReplayBuffer:
    """Ring buffer of (obs, action, reward, next_obs, terminated) with flat float32 observations."""

    def __init__(self, obs_dim: int, action_dim: int, capacity: int, seed: int = 0) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity: expected a positive number of transitions, got {capacity}")
        self.capacity = capacity
        self.obs = np.zeros((capacity, obs_dim), np.float32)
        self.next_obs = np.zeros((capacity, obs_dim), np.float32)
        self.action = np.zeros((capacity, action_dim), np.float32)
        self.reward = np.zeros((capacity,), np.float32)
        self.terminated = np.zeros((capacity,), np.float32)
        self.size = 0
        self.cursor = 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self.cursor
        self.obs[i] = obs
        self.action[i] = action
        self.reward[i] = reward
        self.next_obs[i] = next_obs
        self.terminated[i] = float(terminated)
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def add_many(self, obs, action, reward, next_obs, terminated) -> None:
        """Append arrays of transitions (leading dimension = count), e.g. a whole demo episode."""
        for row in zip(obs, action, reward, next_obs, terminated, strict=True):
            self.add(*row)

    def gather(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {
            "obs": self.obs[idx],
            "action": self.action[idx],
            "reward": self.reward[idx],
            "next_obs": self.next_obs[idx],
            "terminated": self.terminated[idx],
        }

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = (rng or self.rng).integers(0, self.size, size=batch_size)
        return self.gather(idx)

    # -- exact save/load (used by resume) ------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        n = self.size
        return {
            "obs": self.obs[:n], "action": self.action[:n], "reward": self.reward[:n],
            "next_obs": self.next_obs[:n], "terminated": self.terminated[:n],
            "size": np.int64(n), "cursor": np.int64(self.cursor), "capacity": np.int64(self.capacity),
            "rng_state": _encode_state(self.rng),
        }

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        if int(state["capacity"]) != self.capacity:
            raise ValueError(f"replay capacity mismatch: saved {int(state['capacity'])}, buffer {self.capacity}")
        n = int(state["size"])
        for key in BATCH_KEYS:
            saved, mine = state[key], getattr(self, key)
            if saved.shape[1:] != mine.shape[1:]:
                raise ValueError(f"replay '{key}': saved rows of shape {saved.shape[1:]}, buffer has {mine.shape[1:]}")
            mine[:n] = saved
        self.size, self.cursor = n, int(state["cursor"])
        self.rng.bit_generator.state = _parse_state(state["rng_state"])

    def save(self, path: Path) -> None:
        """Write to `path` (.npz) via a temporary file and rename, so a crash never leaves half a file."""
        save_npz_atomic(path, self.state_dict())

    def load(self, path: Path) -> None:
        self.load_state_dict(load_npz(path))


def save_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """`arrays` to `path` (.npz) via a temporary file, fsync and rename: a crash never leaves half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(Path(path)) as saved:
        return dict(saved)


def _encode_state(rng: np.random.Generator) -> np.ndarray:
    """A generator's state as bytes (JSON inside), so it fits an .npz next to the arrays."""
    return np.frombuffer(json.dumps(rng.bit_generator.state).encode(), np.uint8)


def _parse_state(encoded: np.ndarray) -> dict:
    return json.loads(encoded.tobytes().decode())


class ReplaySource(Protocol):
    """What MixedSampler needs of a source: `ReplayBuffer` (flat) or `FrameReplayBuffer` (dict observations)."""

    def __len__(self) -> int: ...

    def sample(self, batch_size: int, rng: np.random.Generator | None = None) -> dict[str, Any]: ...


class MixedSampler:
    """Samples batches whose rows come from named buffers in fixed proportions.

    Sources are usually named online, demo, intervention and synthetic (data.schema.Source). They must
    give batches of the same structure: all `ReplayBuffer`s, or all `FrameReplayBuffer`s with the same
    observation keys and the same storage (NumPy, or tensors on one device).
    """

    def __init__(self, sources: dict[str, ReplaySource], ratios: dict[str, float], seed: int = 0) -> None:
        if set(sources) != set(ratios):
            raise ValueError(f"ratios name {sorted(ratios)} but sources are {sorted(sources)}")
        if any(r < 0 for r in ratios.values()) or not np.isclose(sum(ratios.values()), 1.0):
            raise ValueError(f"ratios: expected non-negative values summing to 1, got {ratios}")
        self.sources = sources
        self.ratios = ratios
        self.rng = np.random.default_rng(seed)

    def counts(self, batch_size: int) -> dict[str, int]:
        """Rows per source; empty sources give their share to the others."""
        live = {k: r for k, r in self.ratios.items() if len(self.sources[k]) > 0 and r > 0}
        if not live:
            raise ValueError("cannot sample: every source buffer is empty")
        total = sum(live.values())
        names = list(live)
        counts = {k: int(batch_size * live[k] / total) for k in names}
        counts[names[0]] += batch_size - sum(counts.values())
        return counts

    def sample(self, batch_size: int, num_batches: int = 1) -> dict[str, Any]:
        """`num_batches` consecutive batches of `batch_size` rows, each with the exact source ratio.

        Drawing all batches of a UTD block at once costs one gather per source instead of one per batch.
        """
        parts = {
            k: self.sources[k].sample(n * num_batches, self.rng)
            for k, n in self.counts(batch_size).items() if n > 0
        }
        if len(parts) == 1:
            return next(iter(parts.values()))
        return _interleave(parts, num_batches, batch_size)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"rng_state": _encode_state(self.rng)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        self.rng.bit_generator.state = _parse_state(state["rng_state"])


def _interleave(parts: dict[str, Any], num_batches: int, batch_size: int) -> Any:
    """Concatenate per-source batches (nested dicts of arrays) so every block of `batch_size` is mixed."""
    first_name, first = next(iter(parts.items()))
    if isinstance(first, Mapping):
        for name, part in parts.items():
            if not isinstance(part, Mapping) or set(part) != set(first):
                got = sorted(part) if isinstance(part, Mapping) else type(part).__name__
                raise ValueError(
                    f"MixedSampler: source {name!r} gives batch keys {got} but {first_name!r} gives {sorted(first)}; "
                    "mix buffers of one kind (all ReplayBuffer or all FrameReplayBuffer with the same observations)"
                )
        return {key: _interleave({n: p[key] for n, p in parts.items()}, num_batches, batch_size) for key in first}
    row_shape = tuple(first.shape[1:])
    # (num_batches, rows_of_source, ...) per source -> concatenate on the row axis -> flat again.
    chunks = [part.reshape(num_batches, -1, *row_shape) for part in parts.values()]
    if all(isinstance(c, np.ndarray) for c in chunks):
        return np.concatenate(chunks, axis=1).reshape(num_batches * batch_size, *row_shape)
    import torch

    if not all(isinstance(c, torch.Tensor) and c.device == chunks[0].device for c in chunks):
        kinds = {n: getattr(p, "device", type(p).__name__) for n, p in parts.items()}
        raise ValueError(f"MixedSampler: sources give arrays on different devices {kinds}; store them on one device")
    return torch.cat(chunks, dim=1).reshape(num_batches * batch_size, *row_shape)
