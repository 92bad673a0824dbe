"""Replay a logged episode in its simulated task: same reset seed, same actions, compare the robot state.

Why: a dataset is only as good as the claim that its actions produced its observations. Re-executing the
actions open loop from the logged initial state and watching the robot state drift apart shows whether
the log is consistent with the simulator (0 for an episode recorded in this simulator with these
settings), and how far sim and reality part ways for a real-robot episode replayed in its twin.

The task comes from the episode metadata (`task`), the reset seed from `seed`, and the env settings from
`extra["env_config"]` when the recorder saved them (`robot dataset generate` does), otherwise the task's
defaults, with image observations switched on for the cameras the store holds. Before stepping, the reset
observation is compared with the logged first observation (the whole vector, so a wrong seed that moves
an object is caught, not only the arm); a mismatch beyond `initial_tolerance` is an error.

Robot state compared at every step (only what the log holds):
- Panda tasks: `tcp_pos`, the tool position (state[0:3], m; Euclidean distance), and `joint_pos`, the arm
  joints (rad; largest absolute difference) when the episode logged them as `info/joint_pos_<k>`
  (`robot dataset generate` does);
- locomotion tasks: `joint_pos`, the observation's joint-position part (qpos without the root x; rad or
  m; largest absolute difference);
- both: `observation`, the largest absolute difference over the whole flat observation.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import envs
from data.episode_store import EpisodeStore
from data.schema import DataValidationError

PANDA_TCP = slice(0, 3)


class ReplayMismatchError(DataValidationError):
    """The simulator does not start where the log starts (wrong seed, task or env settings)."""


@dataclass
class ReplayReport:
    """Per-step divergence of the replayed robot state from the logged one, and its summary."""

    episode: int
    task: str
    seed: int
    steps: int
    """Steps replayed (fewer than logged when the env ended the episode early)."""
    logged_steps: int
    initial_error: float
    """Largest absolute difference between the reset observation and the logged first observation."""
    per_step: dict[str, np.ndarray] = field(default_factory=dict)
    """Quantity -> (steps,) divergence after each step."""
    logged_return: float = 0.0
    replayed_return: float = 0.0
    ended_early: bool = False
    video: str | None = None

    def summary(self) -> dict[str, dict[str, float]]:
        """Quantity -> mean, max and final divergence."""
        return {
            name: {"mean": float(v.mean()), "max": float(v.max()), "final": float(v[-1])}
            for name, v in self.per_step.items() if len(v)
        }

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in dataclasses.asdict(self).items() if k != "per_step"}
        out["divergence"] = self.summary()
        return out


def _state_key(store: EpisodeStore) -> str:
    flat = [k for k, s in store.schema.observation.items() if len(s.shape) == 1]
    if "state" in flat:
        return "state"
    if len(flat) != 1:
        raise DataValidationError(
            f"{store.path}: replay needs one flat state observation; the store has {list(store.schema.observation)}"
        )
    return flat[0]


def env_config_for(store: EpisodeStore, index: int) -> Any:
    """The env config the episode was recorded with (see the module docstring), or None for gymnasium envs."""
    from robot.config import from_dict

    meta = store.metadata(index)
    spec = envs.get_task(meta.task)
    if spec.config_cls is None:
        return None
    saved = meta.extra.get("env_config")
    config = from_dict(spec.config_cls(), saved) if saved else spec.config_cls()
    cameras = tuple(k for k, s in store.schema.observation.items() if len(s.shape) == 3)
    if cameras and not config.image_obs:
        size = store.schema.observation[cameras[0]].shape[:2]
        config = dataclasses.replace(config, image_obs=True, cameras=cameras, image_size=tuple(size))
    return config


def _quantities(task: str, env: Any, obs: np.ndarray) -> dict[str, np.ndarray]:
    if envs.get_task(task).config_cls is None:
        n_pos = env.unwrapped.model.nq - 1  # gymnasium locomotion: obs = qpos[1:], qvel
        return {"joint_pos": obs[:n_pos]}
    return {"tcp_pos": obs[PANDA_TCP]}


def _divergence(name: str, a: np.ndarray, b: np.ndarray) -> float:
    diff = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.linalg.norm(diff)) if name == "tcp_pos" else float(np.abs(diff).max())


def replay_episode(
    store: EpisodeStore,
    index: int,
    initial_tolerance: float = 1e-4,
    video_path: str | Path | None = None,
    camera: str | None = None,
    fps: int = 10,
) -> ReplayReport:
    """Re-execute episode `index`'s actions in its task; see the module docstring.

    `video_path`: write logged | replayed frames of `camera` side by side (the store must hold that camera).
    """
    meta = store.metadata(index)
    where = f"{store.path}: episode {index}"
    try:
        envs.get_task(meta.task)
    except ValueError as err:
        raise DataValidationError(f"{where}: metadata task {meta.task!r} is not a simulated task ({err})") from None
    if meta.seed is None:
        raise DataValidationError(f"{where}: metadata seed is None; replay needs the reset seed of the episode")
    key = _state_key(store)
    cameras = [k for k, s in store.schema.observation.items() if len(s.shape) == 3]
    if video_path is not None:
        camera = camera or (cameras[0] if cameras else None)
        if camera not in cameras:
            raise DataValidationError(
                f"{where}: side-by-side video needs logged camera frames; camera {camera!r} is not among the "
                f"store's image observations {cameras}"
            )
    keys = [f"observation/{key}", "action", "reward"] + ([f"observation/{camera}"] if video_path else [])
    episode = store.episode(index)
    step_keys = episode.keys()  # a method of Episode (not a Mapping)
    joint_keys = sorted((k for k in step_keys if k.startswith("info/joint_pos_")), key=lambda k: int(k[15:]))
    logged = episode.load(keys + joint_keys)
    logged_joints = np.stack([logged[k] for k in joint_keys], axis=1) if joint_keys else None
    states, actions = logged[f"observation/{key}"], logged["action"]
    env = envs.make(meta.task, env_config_for(store, index))
    try:
        obs, _ = env.reset(seed=int(meta.seed))
        flat = np.asarray(obs[key] if isinstance(obs, dict) else obs, np.float32)
        if flat.shape != states.shape[1:]:
            raise DataValidationError(
                f"{where}: the logged observation {key!r} has shape {states.shape[1:]} but task {meta.task} "
                f"observes {flat.shape}; the env settings differ from the recording"
            )
        initial = float(np.abs(flat.astype(np.float64) - states[0]).max())
        if initial > initial_tolerance:
            raise ReplayMismatchError(
                f"{where}: reset with seed {meta.seed} gives an initial state {initial:.3g} away from the logged one "
                f"(tolerance {initial_tolerance:g}); expected the same start (wrong seed, task or env settings?)"
            )
        report = ReplayReport(index, meta.task, int(meta.seed), 0, len(actions), initial,
                              logged_return=float(logged["reward"].sum()))
        rows: dict[str, list[float]] = {}
        frames = [obs[camera]] if video_path else []
        for t, action in enumerate(actions):
            obs, reward, terminated, truncated, _ = env.step(action)
            flat = np.asarray(obs[key] if isinstance(obs, dict) else obs, np.float32)
            report.replayed_return += float(reward)
            mine = _quantities(meta.task, env, flat)
            theirs = _quantities(meta.task, env, states[t + 1])
            for name in mine:
                rows.setdefault(name, []).append(_divergence(name, mine[name], theirs[name]))
            if logged_joints is not None:
                arm = env.unwrapped.data.qpos[env.unwrapped.robot.qpos_slice]
                rows.setdefault("joint_pos", []).append(_divergence("joint_pos", arm, logged_joints[t]))
            rows.setdefault("observation", []).append(_divergence("observation", flat, states[t + 1]))
            if video_path:
                frames.append(obs[camera])
            report.steps = t + 1
            if (terminated or truncated) and t < len(actions) - 1:
                report.ended_early = True
                break
    finally:
        env.close()
    report.per_step = {k: np.asarray(v) for k, v in rows.items()}
    if video_path:
        from data.lerobot import write_video

        logged_frames = logged[f"observation/{camera}"][: len(frames)]
        write_video(Path(video_path), (np.concatenate([a, b], axis=1) for a, b in zip(logged_frames, frames,
                                                                                     strict=True)), fps)
        report.video = str(video_path)
    return report
