"""D4RL HDF5 datasets: load with validation, Q-learning transitions, export, import into a store.

D4RL files are flat: N rows of `observations`, `actions`, `rewards`, `terminals`, `timeouts` (and in
some files `next_observations`), with episodes cut where `terminals | timeouts`. The next observation of
row i is row i + 1, so a row flagged `timeouts` has no valid next observation: D4RL's
`qlearning_dataset` drops it, and so do `qlearning_transitions` and the import here.

Mapping to the episode store (T transitions, T + 1 observations per episode):
- an episode ending in a terminal row keeps every row; its final observation is `next_observations`
  of that row when the file has it, otherwise a copy of the row's own observation (never used by a
  learner: the terminal flag cuts the bootstrap), marked in the episode's `extra`.
- an episode ending in a timeout row (or at the end of the file) loses that row's action and reward,
  and the row's observation becomes the final observation; the last kept step is marked truncated.
Export inverts this: a non-terminal episode gets one extra row holding its final observation with
`timeouts=True` (zero action and reward), so import(export(store)) gives back the same episodes (with
`truncated` set on the last step of every non-terminal episode).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from data.episode_store import EpisodeStore
from data.hdf5_io import as_flags, import_h5py, open_hdf5, read_dataset
from data.schema import DataValidationError, EpisodeMetadata, FieldSpec, StoreSchema

D4RL_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def load_d4rl_hdf5(path: str | os.PathLike[str], max_episode_steps: int | None = None) -> dict[str, np.ndarray]:
    """The standard keys of a D4RL file, validated: observations (N, obs) float32, actions (N, act)
    float32, rewards (N,) float32, terminals (N,) bool, timeouts (N,) bool, plus next_observations
    (N, obs) float32 when the file has it.

    Old files without `timeouts` need `max_episode_steps` (the env's time limit) to rebuild them.
    """
    path = Path(path)
    with open_hdf5(path) as f:
        obs = read_dataset(f, "observations", path, kinds="fiu", ndim=(2,))
        n = len(obs)
        if n == 0:
            raise DataValidationError(f"{path}: key /observations has 0 rows; expected at least 1")
        out = {
            "observations": obs.astype(np.float32, copy=False),
            "actions": read_dataset(f, "actions", path, kinds="fiu", ndim=(2,), rows=n).astype(np.float32, copy=False),
            "rewards": _rewards(read_dataset(f, "rewards", path, kinds="fiu", ndim=(1, 2), rows=n), path),
            "terminals": as_flags(
                read_dataset(f, "terminals", path, kinds="biuf", ndim=(1,), rows=n), f"{path}: key /terminals"
            ),
        }
        if "timeouts" in f:
            timeouts = read_dataset(f, "timeouts", path, kinds="biuf", ndim=(1,), rows=n)
            out["timeouts"] = as_flags(timeouts, f"{path}: key /timeouts")
        elif max_episode_steps is not None:
            out["timeouts"] = rebuild_timeouts(out["terminals"], max_episode_steps)
        else:
            raise DataValidationError(
                f"{path}: key /timeouts is missing; found keys {sorted(f.keys())}. Older D4RL files have no "
                "time-out flags: pass max_episode_steps (the env's time limit) to rebuild them"
            )
        if "next_observations" in f:
            next_obs = read_dataset(f, "next_observations", path, kinds="fiu", ndim=(2,), rows=n)
            if next_obs.shape != obs.shape:
                raise DataValidationError(
                    f"{path}: key /next_observations has shape {next_obs.shape}; expected {obs.shape} "
                    "(the shape of /observations)"
                )
            out["next_observations"] = next_obs.astype(np.float32, copy=False)
    return out


def _rewards(rewards: np.ndarray, path: Path) -> np.ndarray:
    if rewards.ndim == 2:
        if rewards.shape[1] != 1:
            raise DataValidationError(f"{path}: key /rewards has shape {rewards.shape}; expected (N,) or (N, 1)")
        rewards = rewards[:, 0]  # old files store (N, 1)
    return rewards.astype(np.float32, copy=False)


def rebuild_timeouts(terminals: np.ndarray, max_episode_steps: int) -> np.ndarray:
    """Time-out flags of a file without them: the step at which an episode reaches the time limit."""
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps: expected >= 1, got {max_episode_steps}")
    timeouts = np.zeros(len(terminals), dtype=bool)
    step = 0
    for i, terminal in enumerate(terminals):
        timeouts[i] = step == max_episode_steps - 1
        step = 0 if terminal or timeouts[i] else step + 1
    return timeouts


def check_d4rl_arrays(data: Mapping[str, np.ndarray], where: str = "D4RL arrays") -> None:
    """The in-memory form of a D4RL file: same keys, shapes and dtype kinds as `load_d4rl_hdf5` checks."""
    missing = [k for k in D4RL_KEYS if k not in data]
    if missing:
        raise DataValidationError(f"{where}: keys {missing} are missing; expected {list(D4RL_KEYS)}")
    obs = np.asarray(data["observations"])
    if obs.ndim != 2 or obs.dtype.kind not in "fiu":
        raise DataValidationError(
            f"{where}: observations has shape {obs.shape} {obs.dtype}; expected (N, obs_dim) float"
        )
    n = len(obs)
    expected = {"actions": 2, "rewards": 1, "terminals": 1, "timeouts": 1}
    for key, ndim in expected.items():
        arr = np.asarray(data[key])
        if arr.ndim != ndim or len(arr) != n:
            raise DataValidationError(
                f"{where}: {key} has shape {arr.shape}; expected {'(N, dim)' if ndim == 2 else '(N,)'} with N = {n}"
            )
        if key in ("terminals", "timeouts") and arr.dtype != np.bool_:
            raise DataValidationError(f"{where}: {key} has dtype {arr.dtype}; expected bool")
    if "next_observations" in data and np.shape(data["next_observations"]) != obs.shape:
        raise DataValidationError(
            f"{where}: next_observations has shape {np.shape(data['next_observations'])}; expected {obs.shape}"
        )


def qlearning_transitions(data: Mapping[str, np.ndarray], terminate_on_end: bool = False) -> dict[str, np.ndarray]:
    """D4RL's `qlearning_dataset` on loaded arrays: (s, a, r, s', terminal) for rows i in [0, N - 1),
    s' = observations[i + 1], skipping rows flagged `timeouts` (their s' belongs to the next episode)
    unless `terminate_on_end`.
    """
    check_d4rl_arrays(data)
    n = len(data["observations"])
    rows = np.arange(max(n - 1, 0))
    if not terminate_on_end:
        rows = rows[~np.asarray(data["timeouts"])[rows]]
    return {
        "observations": np.asarray(data["observations"])[rows],
        "actions": np.asarray(data["actions"])[rows],
        "next_observations": np.asarray(data["observations"])[rows + 1],
        "rewards": np.asarray(data["rewards"])[rows],
        "terminals": np.asarray(data["terminals"])[rows],
    }


def d4rl_schema(data: Mapping[str, np.ndarray], observation_key: str = "state") -> StoreSchema:
    """Schema of a store that holds D4RL episodes: one flat float32 observation and action."""
    check_d4rl_arrays(data)
    obs_dim, act_dim = np.shape(data["observations"])[1], np.shape(data["actions"])[1]
    return StoreSchema(
        observation={observation_key: FieldSpec((obs_dim,), "float32")}, action=FieldSpec((act_dim,), "float32")
    )


def d4rl_episodes(data: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Split flat D4RL rows into store episodes (see the module docstring for the rules).

    Each episode: observations (T + 1, obs), actions (T, act), rewards (T,), terminated (T,),
    truncated (T,), rows (first, last) of the file, final_observation ("next_observations",
    "copied" or "row").
    """
    check_d4rl_arrays(data)
    terminals, timeouts = np.asarray(data["terminals"]), np.asarray(data["timeouts"])
    obs, actions, rewards = (np.asarray(data[k]) for k in ("observations", "actions", "rewards"))
    next_obs = data.get("next_observations")
    n = len(obs)
    ends = np.flatnonzero(terminals | timeouts).tolist()
    if not ends or ends[-1] != n - 1:
        ends.append(n - 1)  # a trailing episode without an end flag is cut like a time-out
    episodes, start = [], 0
    for end in ends:
        if terminals[end] and not timeouts[end]:  # D4RL drops a time-out row even when also terminal
            last = end + 1  # keep the terminal row
            if next_obs is not None:
                final, how = np.asarray(next_obs[end]), "next_observations"
            else:
                final, how = obs[end], "copied"
        else:
            last = end  # drop the time-out row: its successor is unknown
            final, how = obs[end], "row"
        if last > start:
            steps = last - start
            truncated = np.zeros(steps, dtype=bool)
            truncated[-1] = not terminals[end]
            episodes.append(
                {
                    "observations": np.concatenate([obs[start:last], final[None]]),
                    "actions": actions[start:last],
                    "rewards": rewards[start:last],
                    "terminated": terminals[start:last].copy(),
                    "truncated": truncated,
                    "rows": (start, end),
                    "final_observation": how,
                }
            )
        start = end + 1
    return episodes


def import_d4rl(
    source: str | os.PathLike[str] | Mapping[str, np.ndarray],
    store: EpisodeStore,
    metadata: EpisodeMetadata,
    observation_key: str = "state",
    max_episode_steps: int | None = None,
) -> list[int]:
    """Commit every episode of a D4RL file (or loaded arrays) to `store`; returns the new indices.

    The store's schema must be `d4rl_schema(data, observation_key)`. `metadata` is the template of
    every episode (task, robot, source); the file rows of each episode go into `extra`.
    """
    if isinstance(source, Mapping):
        data, name = source, "arrays"
    else:
        data, name = load_d4rl_hdf5(source, max_episode_steps), Path(source).name
    indices = []
    for ep in d4rl_episodes(data):
        extra = {**metadata.extra, "d4rl_source": name, "d4rl_rows": list(ep["rows"])}
        if ep["final_observation"] == "copied":
            extra["d4rl_final_observation"] = "copied from the terminal row (the file has no next_observations)"
        with store.begin_episode(replace(metadata, extra=extra)) as writer:
            writer.extend(
                {
                    "observation": {observation_key: ep["observations"][:-1]},
                    "action": ep["actions"],
                    "reward": ep["rewards"],
                    "terminated": ep["terminated"],
                    "truncated": ep["truncated"],
                }
            )
            indices.append(writer.commit({observation_key: ep["observations"][-1]}))
    return indices


def store_to_d4rl(
    store: EpisodeStore, observation_key: str | None = None, episodes: Sequence[int] | None = None
) -> dict[str, np.ndarray]:
    """D4RL arrays (with next_observations) of store episodes; the inverse of the import mapping."""
    if observation_key is None:
        flat = [k for k, spec in store.schema.observation.items() if len(spec.shape) == 1]
        if len(flat) != 1:
            raise ValueError(
                f"observation_key: the store has observations {list(store.schema.observation)}; "
                "name the flat (1-D) one to export as D4RL observations"
            )
        observation_key = flat[0]
    spec = store.schema.observation.get(observation_key)
    if spec is None or len(spec.shape) != 1 or len(store.schema.action.shape) != 1:
        raise ValueError(
            f"observation_key: D4RL needs a 1-D observation and action; {observation_key!r} is "
            f"{spec.shape if spec else 'not in the store'} and the action {store.schema.action.shape}"
        )
    columns: dict[str, list[np.ndarray]] = {k: [] for k in (*D4RL_KEYS, "next_observations")}
    for index in range(len(store)) if episodes is None else episodes:
        ep = store.episode(index).load([f"observation/{observation_key}", "action", "reward", "terminated"])
        obs, action = ep[f"observation/{observation_key}"].astype(np.float32), ep["action"].astype(np.float32)
        reward, terminated = ep["reward"], ep["terminated"]
        steps = len(action)
        timeouts = np.zeros(steps, dtype=bool)
        next_obs = obs[1:]
        obs = obs[:steps]
        if not terminated[-1]:  # one extra time-out row carries the final observation
            obs = np.concatenate([obs, next_obs[-1:]])
            next_obs = np.concatenate([next_obs, next_obs[-1:]])
            action = np.concatenate([action, np.zeros_like(action[:1])])
            reward = np.concatenate([reward, np.zeros(1, reward.dtype)])
            terminated = np.concatenate([terminated, [False]])
            timeouts = np.concatenate([timeouts, [True]])
        for key, value in zip(
            (*D4RL_KEYS, "next_observations"), (obs, action, reward, terminated, timeouts, next_obs), strict=True
        ):
            columns[key].append(value)
    if not columns["observations"]:
        raise ValueError(f"{store.path}: no episodes to export")
    return {k: np.concatenate(v) for k, v in columns.items()}


def export_d4rl_hdf5(
    source: EpisodeStore | Mapping[str, np.ndarray],
    path: str | os.PathLike[str],
    observation_key: str | None = None,
    episodes: Sequence[int] | None = None,
) -> None:
    """Write a D4RL-layout HDF5 file from a store or from D4RL arrays.

    Written to a temporary file in the same directory and renamed into place, so `path` is either
    the old file or the complete new one.
    """
    h5py = import_h5py()
    data = store_to_d4rl(source, observation_key, episodes) if isinstance(source, EpisodeStore) else source
    check_d4rl_arrays(data)
    dtypes = {"terminals": bool, "timeouts": bool}
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key in (*D4RL_KEYS, "next_observations"):
                if key in data:
                    f.create_dataset(key, data=np.asarray(data[key], dtype=dtypes.get(key, np.float32)))
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
