"""Minari HDF5 datasets (`main_data.hdf5`): read episodes with validation, import into a store.

Layout: one group `episode_<id>` per episode with datasets `observations` (T + 1 rows: the reset
observation plus one per step), `actions`, `rewards`, `terminations`, `truncations` (T rows), optional
`infos/...`, and attributes such as `seed`. A Dict observation space is a group `observations/` with one
dataset per key. This is the store's own convention (T transitions, T + 1 observations), so episodes
map one to one. Reading needs only h5py, not the minari package.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from data.episode_store import EpisodeStore
from data.hdf5_io import as_flags, import_h5py, open_hdf5, read_dataset
from data.schema import DataValidationError, EpisodeMetadata, FieldSpec, StoreSchema, check_name

_EPISODE_RE = re.compile(r"^episode_(\d+)$")


@dataclass(frozen=True)
class MinariEpisode:
    id: int
    observations: dict[str, np.ndarray]  # name -> (T + 1, ...); a Box space is one name
    actions: np.ndarray  # (T, ...)
    rewards: np.ndarray  # (T,) float32
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    seed: int | None

    def __len__(self) -> int:
        return len(self.actions)


def read_minari_hdf5(path: str | os.PathLike[str], observation_key: str = "state") -> Iterator[MinariEpisode]:
    """Episodes of a Minari HDF5 file in id order, each validated as it is read.

    A Box observation becomes {observation_key: array}; a Dict observation keeps its keys.
    """
    h5py = import_h5py()
    path = Path(path)
    with open_hdf5(path) as f:
        ids = sorted((int(m[1]), name) for name in f if (m := _EPISODE_RE.match(name)))
        if not ids:
            raise DataValidationError(f"{path}: no episode_<id> groups; found keys {sorted(f.keys())[:10]}")
        for episode_id, name in ids:
            group = f[name]
            if not isinstance(group, h5py.Group):
                raise DataValidationError(f"{path}: key /{name} is a dataset; expected an episode group")
            yield _read_episode(group, episode_id, path, observation_key)


def _read_episode(group: object, episode_id: int, path: Path, observation_key: str) -> MinariEpisode:
    h5py = import_h5py()
    actions = read_dataset(group, "actions", path, kinds="biuf", ndim=(1, 2, 3))
    steps = len(actions)
    if steps == 0:
        raise DataValidationError(f"{path}: key {group.name}/actions has 0 rows; expected at least 1 step")
    if "observations" not in group:
        raise DataValidationError(f"{path}: key {group.name}/observations is missing; found keys {sorted(group)}")
    node = group["observations"]
    if isinstance(node, h5py.Group):
        observations = {}
        for key in node:
            check_name(key, f"{path}: key {node.name}/{key}: observation name")
            if isinstance(node[key], h5py.Group):
                raise DataValidationError(
                    f"{path}: key {node.name}/{key} is a group; nested Dict observations are not supported, "
                    "expected a dataset per key"
                )
            observations[key] = read_dataset(node, key, path, kinds="biuf", ndim=(1, 2, 3, 4), rows=steps + 1)
    else:
        observations = {
            observation_key: read_dataset(group, "observations", path, kinds="biuf", ndim=(1, 2, 3, 4), rows=steps + 1)
        }
    for key, value in observations.items():
        if value.ndim == 1:
            observations[key] = value[:, None]  # a scalar observation per step -> (T + 1, 1)
    flags = {}
    for key in ("terminations", "truncations"):
        flags[key] = as_flags(
            read_dataset(group, key, path, kinds="biuf", ndim=(1,), rows=steps), f"{path}: key {group.name}/{key}"
        )
    rewards = read_dataset(group, "rewards", path, kinds="biuf", ndim=(1,), rows=steps).astype(np.float32)
    seed = group.attrs.get("seed")
    seed = int(seed) if isinstance(seed, (int, np.integer)) else None
    return MinariEpisode(episode_id, observations, actions, rewards, flags["terminations"], flags["truncations"], seed)


def minari_schema(path: str | os.PathLike[str], observation_key: str = "state") -> StoreSchema:
    """Schema of a store for this file's episodes (from its first episode; float64 stored as float32)."""
    first = next(read_minari_hdf5(path, observation_key))

    def spec(rows: np.ndarray) -> FieldSpec:
        dtype = "float32" if rows.dtype.kind == "f" else rows.dtype.name
        return FieldSpec(rows.shape[1:] if rows.ndim > 1 else (1,), dtype)

    return StoreSchema(observation={k: spec(v) for k, v in first.observations.items()}, action=spec(first.actions))


def import_minari(
    path: str | os.PathLike[str], store: EpisodeStore, metadata: EpisodeMetadata, observation_key: str = "state"
) -> list[int]:
    """Commit every episode of a Minari HDF5 file to `store`; returns the new indices.

    `metadata` is the template of every episode; the Minari episode id goes into `extra` and the
    episode's seed attribute (when present) into `seed`.
    """
    name = Path(path).name
    indices = []
    for ep in read_minari_hdf5(path, observation_key):
        actions = ep.actions if ep.actions.ndim > 1 else ep.actions[:, None]
        extra = {**metadata.extra, "minari_source": name, "minari_episode_id": ep.id}
        seed = ep.seed if ep.seed is not None else metadata.seed
        with store.begin_episode(replace(metadata, seed=seed, extra=extra)) as writer:
            writer.extend(
                {
                    "observation": {k: v[:-1] for k, v in ep.observations.items()},
                    "action": actions,
                    "reward": ep.rewards,
                    "terminated": ep.terminations,
                    "truncated": ep.truncations,
                }
            )
            indices.append(writer.commit({k: v[-1] for k, v in ep.observations.items()}))
    return indices
