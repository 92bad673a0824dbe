"""The actor side of the distributed runtimes, independent of the transport (sockets or Ray).

`ActorCore` runs the env with the latest weights it was given, records every step into its own
crash-safe episode store (`RUN_DIR/actors/<id>/episodes`, committed per episode, with the per-step
`intervention` flag set where a person acted; source "intervention" for an episode where one did,
else "online"; robot "panda_sim", or the robot server's arm) and hands committed episodes to the
transport. The env is `envs.real.make_env`: the sim, or with `robot_server` the twin or the real arm;
observations are flat state vectors or dicts of camera frames, acted on by the agent
`robot.train.build_agent` makes (weights: `robot.runtime.learner.acting_state`).

It never acts on weights it should not trust:

- no weights yet, or weights from a previous learner incarnation (the learner restarted and has not
  sent its own yet);
- weights more than `runtime.max_weight_lag` learner updates behind the learner's last heartbeat;
- no heartbeat from the learner for `runtime.peer_timeout_s`.

Then it *holds*: the episode is paused (in simulation the world does not advance; on a real arm the
impedance controller keeps the last target, i.e. the zero action), it says why once (and every few
seconds while it lasts), and it continues when the reason is gone. SERL's actor keeps acting on stale
weights when its learner dies; this one cannot.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.episode_store import EpisodeStore
from data.schema import EpisodeMetadata, FieldSpec, Source, StoreSchema
from envs.real import make_env
from robot.demo_store import robot_label
from robot.demos import episode_seed
from robot.interventions import EXECUTED_ACTION_KEY, INTERVENTION_KEY, InterventionWrapper, make_intervention_source
from robot.runtime.learner import STATE_KEY, load_acting_state, observation_shapes
from robot.runtime.wire import weights_from_bytes
from robot.train import build_agent

HOLD_LOG_PERIOD_S = 5.0


def actor_dir(run_dir: Path, actor_id: str) -> Path:
    return Path(run_dir) / "actors" / actor_id


def open_actor_store(path: Path, obs_shapes: dict, act_dim: int) -> EpisodeStore:
    if (path / "zarr.json").exists():
        return EpisodeStore.open(path, mode="a")  # also removes an episode a killed actor left half-recorded
    fields = {k: FieldSpec(shape, np.dtype(dtype).name) for k, (shape, dtype) in obs_shapes.items()}
    schema = StoreSchema(observation=fields, action=FieldSpec((act_dim,), "float32"))
    return EpisodeStore.create(path, schema)


def as_observation(obs) -> dict[str, np.ndarray]:
    """An env observation as the store's observation dict (a flat vector under STATE_KEY)."""
    return dict(obs) if isinstance(obs, dict) else {STATE_KEY: np.asarray(obs, np.float32)}


class ActorCore:
    """Env + policy copy + episode store for one actor; `step()` advances one env step or holds."""

    def __init__(self, config, run_dir: Path, actor_id: str, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic, teleop_device=None) -> None:
        self.config, self.actor_id, self.log, self.clock = config, actor_id, log, clock
        self.rt = config.runtime
        self.index = int(actor_id.rsplit("-", 1)[-1]) if actor_id.rsplit("-", 1)[-1].isdigit() else 0
        torch.manual_seed(config.seed + 1000 * (self.index + 1))
        self.env = make_env(config.task, config.env, config.robot_server, config.robot_token_file)
        self.wrapper: InterventionWrapper | None = None
        source = make_intervention_source(config.interventions, self.env, config.task, config.env,
                                          config.seed + 4 + 1000 * self.index, device=teleop_device)
        if source is not None:
            self.env = self.wrapper = InterventionWrapper(self.env, source)
        space = self.env.observation_space
        self.action_low = self.env.action_space.low.astype(np.float32)
        self.action_high = self.env.action_space.high.astype(np.float32)
        act_dim = self.action_low.shape[0]
        # The whole agent on the CPU, of which only the acting networks are ever loaded and used.
        self.agent = build_agent(space, act_dim, config, torch.device("cpu"))
        self.obs_keys = list(observation_shapes(space))
        self.store = open_actor_store(actor_dir(run_dir, actor_id) / "episodes", observation_shapes(space), act_dim)
        self.episode = len(self.store)
        self.env_steps = sum(self.store.metadata(i).length for i in range(self.episode))
        if self.wrapper is not None and hasattr(self.wrapper.source, "continue_from"):
            self.wrapper.source.continue_from(self.episode, self.env_steps)  # the taper survives a restart
        self.share = -(-config.total_env_steps // self.rt.num_actors)  # this actor's part of the budget
        # Trust state.
        self.weights_incarnation: str | None = None
        self.weights_version = -1
        self.learner_incarnation: str | None = None
        self.learner_updates = 0
        self.last_heard: float | None = None
        self.hold_reason: str | None = None
        self._last_hold_log = 0.0
        self.held_steps = 0
        self.holds = 0
        # Episode in progress.
        self._writer = None
        self._obs = None
        self._rng = np.random.default_rng([config.seed, 7, self.index])

    # -- messages from the learner ---------------------------------------------------------------
    def heard_from_learner(self, incarnation: str, updates: int) -> None:
        if incarnation != self.learner_incarnation and self.learner_incarnation is not None:
            self.log(f"actor {self.actor_id}: learner restarted (incarnation {incarnation}); "
                     "waiting for its weights")
        self.learner_incarnation, self.learner_updates, self.last_heard = incarnation, int(updates), self.clock()

    def load_weights(self, incarnation: str, version: int, blob: bytes) -> None:
        load_acting_state(self.agent, weights_from_bytes(blob))
        self.weights_incarnation, self.weights_version = incarnation, int(version)

    def learner_lost(self) -> None:
        self.last_heard = None

    # -- acting ----------------------------------------------------------------------------------
    def why_hold(self) -> str | None:
        """None when the actor may act; otherwise the reason it must hold the robot."""
        now = self.clock()
        if self.last_heard is None:
            return "no connection to the learner"
        if now - self.last_heard > self.rt.peer_timeout_s:
            return f"no heartbeat from the learner for {now - self.last_heard:.1f} s"
        if self.weights_incarnation is None:
            return "no weights received yet"
        if self.weights_incarnation != self.learner_incarnation:
            return "weights come from a learner that has since restarted"
        lag = self.learner_updates - self.weights_version
        if lag > self.rt.max_weight_lag:
            return (f"weights version {self.weights_version} are {lag} updates behind the learner "
                    f"(max lag {self.rt.max_weight_lag})")
        return None

    @property
    def finished(self) -> bool:
        return self.env_steps >= self.share and self._writer is None

    def step(self) -> int | None:
        """Act one env step (or hold). Returns the store index of an episode this step committed."""
        if self.finished:
            return None
        reason = self.why_hold()
        if reason is not None:
            self._hold(reason)
            return None
        if self.hold_reason is not None:
            self.log(f"actor {self.actor_id}: resuming with weights version {self.weights_version}")
            self.hold_reason = None
        if self._writer is None:
            self._begin_episode()
        cfg = self.config
        if self.env_steps < cfg.random_steps:
            action = self._rng.uniform(-1.0, 1.0, self.action_low.shape).astype(np.float32)
        else:
            action = self.agent.act(self._obs)
        env_action = self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)
        next_obs, reward, terminated, truncated, info = self.env.step(env_action)
        human = bool(info.get(INTERVENTION_KEY, False))
        executed = np.asarray(info[EXECUTED_ACTION_KEY] if human else env_action, np.float32)
        self._writer.append({"observation": as_observation(self._obs), "action": executed,
                             "reward": float(reward), "terminated": bool(terminated), "truncated": bool(truncated),
                             "intervention": human})
        self._episode_human += int(human)
        self._success = self._success or bool(info.get("is_success", False))
        self._obs = next_obs
        self.env_steps += 1
        if terminated or truncated:
            return self._commit()
        return None

    def _hold(self, reason: str) -> None:
        now = self.clock()
        if reason != self.hold_reason or now - self._last_hold_log >= HOLD_LOG_PERIOD_S:
            self.log(f"actor {self.actor_id}: holding the robot: {reason}")
            self._last_hold_log = now
            self.holds += int(self.hold_reason is None)
        self.hold_reason = reason
        self.held_steps += 1

    def _begin_episode(self) -> None:
        self._obs, _ = self.env.reset(seed=episode_seed(self.config.seed, 10 + self.index, self.episode))
        self._episode_human, self._success = 0, False
        meta = EpisodeMetadata(task=self.config.task, robot=robot_label(self.env), source=Source.ONLINE,
                               seed=episode_seed(self.config.seed, 10 + self.index, self.episode),
                               extra={"actor_id": self.actor_id, "weights_version": self.weights_version})
        self._writer = self.store.begin_episode(meta)

    def _commit(self) -> int:
        writer, self._writer = self._writer, None
        human = self._episode_human
        index = writer.commit(as_observation(self._obs), success=self._success,
                              source=Source.INTERVENTION if human else Source.ONLINE, extra={"interventions": human})
        self.episode = index + 1
        return index

    def episode_arrays(self, index: int) -> tuple[dict[str, np.ndarray], bool]:
        """A committed episode read back from the store (what is sent is exactly what is durable)."""
        t = self.store.load_transitions(self.obs_keys, [index])
        arrays = {f"obs/{k}": v for k, v in t.observation.items()}  # T + 1 rows: each frame once
        arrays |= {"action": t.action, "reward": t.reward, "terminated": t.terminated, "truncated": t.truncated,
                   "intervention": t.intervention}
        return arrays, bool(self.store.metadata(index).success)

    def stats(self) -> dict[str, Any]:
        counts = self.wrapper.counts() if self.wrapper is not None else {}
        return {"actor_id": self.actor_id, "env_steps": self.env_steps, "episodes": self.episode,
                "weights_version": self.weights_version, "holding": self.hold_reason is not None,
                "holds": self.holds, **counts}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None
        self.store.close()
        self.env.close()
