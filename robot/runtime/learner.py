"""The learner side of the distributed runtimes, independent of the transport (sockets or Ray).

`LearnerCore` owns the SAC agent, the online and demo buffers and the mixed sampler. Actors hand it
whole committed episodes, numbered per actor (0, 1, 2, ... in their episode stores); it keeps, per
actor, how many it has ingested, so a resend after any crash is recognised (duplicates are ignored,
gaps refused) and `resume_from(actor)` tells a reconnecting actor where to continue.

No committed transition is lost on kill -9: an actor commits each episode to its crash-safe store
before sending it; the learner checkpoints agent, buffers and the per-actor counts together (one
atomic directory); after a restart it loads the newest checkpoint and the actors resend every episode
committed after it, from their stores.

Observations: flat state vectors or dicts of camera frames (uint8) and proprio, as `robot.train` builds
them (`build_agent`, `make_replay`): an episode arrives as its T + 1 observations per key
(`obs/<key>`, each frame once, raw bytes on the wire) plus T actions, rewards and flags.

Update-to-data is fixed, not learner-speed dependent (SERL's free-running learner makes it whatever the
hardware gives): one `agent.update` (utd_ratio critic steps) per received env step after
`learning_starts`; a learner that is ahead waits for data.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import envs
from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import MixedSampler
from robot.core.checkpoint import (
    atomic_directory,
    atomic_write_text,
    checkpoint_path,
    latest_checkpoint,
    prune_checkpoints,
)
from robot.core.device import resolve_device
from robot.core.metrics import MeanAggregator, MetricsWriter
from robot.core.seeding import seed_everything
from robot.demo_store import STATE_KEY
from robot.runtime.wire import weights_to_bytes
from robot.train import build_agent, load_learning_state, make_replay, save_learning_state

"""The observation key of a flat state vector (as in the episode stores)."""
STEP_KEYS = ("action", "reward", "terminated", "truncated", "intervention")
"""Per-step arrays of an episode message; observations travel as `obs/<key>` with one more row."""
ACTING_MODULES = ("actor", "encoder", "grasp_critic")
"""The agent's modules an actor needs to act (the pixel agent's encoder and grasp critic too)."""


class EpisodeOrderError(ValueError):
    """An actor sent episode n while the learner expects another one (a gap)."""


def config_fingerprint(config) -> str:
    """Hash of what both sides must agree on (task, env, network shapes): actors of another config are refused."""
    import hashlib

    from robot.config import to_dict

    d = to_dict(config)
    agreed = {"task": d["task"], "env": d["env"], "hidden_dims": d["agent"]["hidden_dims"],
              "encoder": d["image"]["encoder"], "grasp": d["image"]["grasp"]}
    return hashlib.sha256(json.dumps(agreed, sort_keys=True).encode()).hexdigest()[:16]


class LearnerCore:
    """Agent + buffers + per-actor ingest counts; thread-safe (`ingest` and `train_step` from different threads)."""

    def __init__(self, config, run_dir: Path, log: Callable[[str], None] = print) -> None:
        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.ckpt_root = self.run_dir / "checkpoints"  # where `robot eval` and `--resume` look
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        env = envs.make(config.task, config.env)  # spaces only: a robot server serves the same ones
        space = env.observation_space
        self.obs_shapes = observation_shapes(space)
        self.action_low = env.action_space.low.astype(np.float32)
        self.action_high = env.action_space.high.astype(np.float32)
        env.close()
        act_dim = self.action_low.shape[0]
        self.agent = build_agent(space, act_dim, config, self.device)
        self.online = make_replay(space, act_dim, config.replay_capacity, config, config.seed, self.device)
        self.demos = make_replay(space, act_dim, config.demo_capacity, config, config.seed + 1, self.device)
        ratios = {"online": 1.0 - config.demo_ratio, "demo": config.demo_ratio}
        if config.demo_ratio == 0 or (config.num_demos == 0 and not config.demo_store
                                      and not config.interventions.fills_demo_buffer):
            ratios = {"online": 1.0, "demo": 0.0}
        self.sampler = MixedSampler({"online": self.online, "demo": self.demos}, ratios, seed=config.seed + 2)
        # Guards buffers, sampler and counters: ingest (transport threads) vs sampling (training thread).
        self.lock = threading.Lock()
        self.incarnation = uuid.uuid4().hex[:12]  # a restarted learner is a new incarnation
        self.fingerprint = config_fingerprint(config)
        self.received: dict[str, int] = {}
        self.env_steps = 0
        self.updates = 0
        self.version = 0
        self.interventions = 0
        self.takeovers = 0
        self.successes: list[float] = []
        self._weights_cache: tuple[int, bytes] | None = None
        self.last_checkpoint_steps = 0
        ckpt = latest_checkpoint(self.ckpt_root)
        if ckpt is not None:
            self.restore(ckpt)
            self.log(f"learner: resumed from {ckpt.name} ({self.env_steps} env steps, {self.updates} updates, "
                     f"episodes per actor {self.received})")
        else:
            self._load_demos()
        self.publish()

    # -- data ------------------------------------------------------------------------------------
    def _load_demos(self) -> None:
        """Demos before any actor connects (on the robot server when the run has one)."""
        fill_demo_buffer(self.demos, self.config, self.obs_shapes, self.to_agent_action)

    def to_agent_action(self, env_action: np.ndarray) -> np.ndarray:
        scaled = 2.0 * (env_action - self.action_low) / (self.action_high - self.action_low) - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def resume_from(self, actor_id: str) -> int:
        with self.lock:
            return self.received.get(actor_id, 0)

    def ingest(self, actor_id: str, index: int, arrays: dict[str, np.ndarray], success: bool = False) -> bool:
        """Add committed episode `index` of `actor_id`; False for a duplicate (already ingested)."""
        frames, steps = self.check_episode(actor_id, index, arrays)
        with self.lock:
            expected = self.received.get(actor_id, 0)
            if index < expected:
                return False
            if index > expected:
                raise EpisodeOrderError(f"actor {actor_id}: got episode {index}, expected {expected} (resend from it)")
            action = self.to_agent_action(steps["action"])
            add_episode(self.online, frames, action, steps["reward"], steps["terminated"], steps["truncated"])
            human = steps["intervention"]
            if human.any() and self.config.interventions.to_demo_buffer:  # HIL-SERL: also to the demo buffer
                add_steps(self.demos, frames, action, steps["reward"], steps["terminated"], steps["truncated"],
                          np.flatnonzero(human))
            self.interventions += int(human.sum())
            self.takeovers += int(human[0]) + int((human[1:] & ~human[:-1]).sum())  # person takes control
            self.received[actor_id] = expected + 1
            self.env_steps += len(action)
            self.successes = (self.successes + [float(success)])[-20:]
        return True

    def check_episode(self, actor_id: str, index: int, arrays: dict[str, np.ndarray]) -> tuple[dict, dict]:
        """(observations by key, per-step arrays) of an episode message, or one ValueError naming what is wrong."""
        where = f"episode {index} of actor {actor_id}"
        expected = [f"obs/{k}" for k in self.obs_shapes] + list(STEP_KEYS)
        missing = [k for k in expected if k not in arrays]
        if missing:
            raise ValueError(f"{where}: missing arrays {missing}; expected {expected}")
        steps = {k: np.asarray(arrays[k]) for k in STEP_KEYS}
        n = len(steps["reward"])
        if n < 1 or any(len(v) != n for v in steps.values()) or steps["action"].shape != (n, len(self.action_low)):
            shapes = {k: v.shape for k, v in steps.items()}
            raise ValueError(f"{where}: expected {n} >= 1 steps in every per-step array and actions of "
                             f"{len(self.action_low)} components, got shapes {shapes}")
        frames = {}
        for key, (shape, dtype) in self.obs_shapes.items():
            value = arrays[f"obs/{key}"]
            if value.shape != (n + 1, *shape) or value.dtype != dtype:
                raise ValueError(f"{where}: obs/{key} must be ({n + 1}, {', '.join(map(str, shape))}) {dtype} "
                                 f"(one more row than steps), got {value.shape} {value.dtype}")
            if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: non-finite values in obs/{key}")
            frames[key] = value
        if not np.all(np.isfinite(steps["reward"])) or not np.all(np.isfinite(steps["action"])):
            raise ValueError(f"{where}: non-finite rewards or actions")
        for key in ("terminated", "truncated", "intervention"):
            steps[key] = steps[key].astype(bool)
        return frames, steps

    # -- learning --------------------------------------------------------------------------------
    def allowed_updates(self) -> int:
        """Updates allowed so far: one per env step from `learning_starts` on (as the synchronous Trainer)."""
        return max(0, self.env_steps - self.config.learning_starts + 1)

    def train_step(self) -> dict[str, Any] | None:
        """One agent update if the UTD budget allows it (else None: wait for data)."""
        cfg = self.config
        with self.lock:
            if self.updates >= self.allowed_updates():
                return None
            block = self.sampler.sample(cfg.agent.batch_size, cfg.agent.utd_ratio)
        metrics = self.agent.update(block)
        with self.lock:
            self.updates += 1
            if self.updates % cfg.runtime.publish_every == 0:
                self.version = self.updates
        return metrics

    def publish(self) -> None:
        with self.lock:
            self.version = self.updates

    def weights(self) -> tuple[int, bytes]:
        """(version, safetensors bytes of the acting networks) of the latest published weights."""
        with self.lock:
            version = self.version
            if self._weights_cache is None or self._weights_cache[0] != version:
                self._weights_cache = (version, weights_to_bytes(acting_state(self.agent)))
            return self._weights_cache

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"incarnation": self.incarnation, "updates": self.updates, "version": self.version,
                    "env_steps": self.env_steps, "done": self.done_locked()}

    def done_locked(self) -> bool:
        return self.env_steps >= self.config.total_env_steps and self.updates >= self.allowed_updates()

    def done(self) -> bool:
        with self.lock:
            return self.done_locked()

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint(self) -> Path:
        """Agent, both buffers, sampler RNG and per-actor counts in one atomic directory (a consistent cut)."""
        with self.lock:
            path = checkpoint_path(self.ckpt_root, self.env_steps)
            with atomic_directory(path) as tmp:
                save_learning_state(tmp, self.agent, self.online, self.demos)
                state = {"received": self.received, "env_steps": self.env_steps, "updates": self.updates,
                         "version": self.version, "interventions": self.interventions, "takeovers": self.takeovers,
                         "successes": self.successes, "sampler_rng": self.sampler.rng.bit_generator.state}
                (tmp / "learner_state.json").write_text(json.dumps(state))
            self.last_checkpoint_steps = self.env_steps
        prune_checkpoints(self.ckpt_root, self.config.keep_checkpoints)
        return path

    def restore(self, path: Path) -> None:
        load_learning_state(path, self.agent, self.online, self.demos, self.device)
        state = json.loads((path / "learner_state.json").read_text())
        self.received = {str(k): int(v) for k, v in state["received"].items()}
        self.env_steps, self.updates = state["env_steps"], state["updates"]
        self.version, self.interventions, self.takeovers = state["version"], state["interventions"], state["takeovers"]
        self.successes = state["successes"]
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        self.last_checkpoint_steps = self.env_steps

    def checkpoint_due(self, last_time: float) -> bool:
        with self.lock:
            steps_due = self.env_steps - self.last_checkpoint_steps >= self.config.checkpoint_every
            changed = self.env_steps != self.last_checkpoint_steps
        return steps_due or (changed and time.monotonic() - last_time >= self.config.runtime.checkpoint_every_s)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {"env_steps": self.env_steps, "updates": self.updates, "version": self.version,
                    "episodes": dict(self.received), "online_size": len(self.online), "demo_size": len(self.demos),
                    "interventions": self.interventions, "takeovers": self.takeovers,
                    "train_success_rate": float(np.mean(self.successes)) if self.successes else None,
                    "temperature": float(self.agent.log_alpha.detach().exp())}


def learn_until_done(core: LearnerCore, tick: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """The learner's main loop (both transports): update within the UTD budget, log, checkpoint.

    `tick()` runs every iteration (the socket learner checks for missing actors there). As in a 'sync'
    run, metrics go to RUN_DIR/metrics.jsonl (+ TensorBoard) and checkpoints to RUN_DIR/checkpoints/;
    the final summary to RUN_DIR/learner_summary.json.
    """
    config = core.config
    # Counted from the checkpoint this learner started from: actors may have sent episodes meanwhile.
    start = core.last_checkpoint_steps
    writer = MetricsWriter(core.run_dir, resume_step=start)
    aggregator = MeanAggregator()
    last_ckpt = time.monotonic()
    logged = {"step": start, "next": (start // config.log_every + 1) * config.log_every}

    def log_row() -> None:
        summary = core.summary()
        writer.write(summary["env_steps"], {
            **aggregator.compute(), "train/updates": summary["updates"],
            "train/weights_version": summary["version"], "train/interventions": summary["interventions"],
            "train/takeovers": summary["takeovers"], "train/success_rate": summary["train_success_rate"]})
        logged.update(step=summary["env_steps"],
                      next=(summary["env_steps"] // config.log_every + 1) * config.log_every)

    try:
        while not core.done():
            metrics = core.train_step()
            if metrics is None:
                time.sleep(0.002)
            else:
                aggregator.add(metrics)
            tick()
            if core.env_steps >= logged["next"]:
                log_row()
            if core.checkpoint_due(last_ckpt):
                core.checkpoint()
                last_ckpt = time.monotonic()
        if core.env_steps > logged["step"]:  # the last stretch too (a short run may end between log steps)
            log_row()
        core.checkpoint()
    finally:
        writer.close()
    summary = core.summary()
    atomic_write_text(summary_path(core.run_dir), json.dumps(summary, indent=2) + "\n")
    core.log(f"learner: done: {summary['env_steps']} env steps, {summary['updates']} updates")
    return summary


def summary_path(run_dir: Path) -> Path:
    return Path(run_dir) / "learner_summary.json"


# ---------------------------------------------------------------------------------------------
# Observations, episodes and weights (shared by learner and actor)
# ---------------------------------------------------------------------------------------------
def observation_shapes(space: gym.Space) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Observation key -> (shape, dtype): the keys of a Dict space, or STATE_KEY for a flat vector."""
    if isinstance(space, gym.spaces.Dict):
        return {k: (tuple(sub.shape), np.dtype(sub.dtype)) for k, sub in space.spaces.items()}
    return {STATE_KEY: (tuple(space.shape), np.dtype(np.float32))}


def fill_demo_buffer(buffer, config, obs_shapes: dict, to_agent_action: Callable[[np.ndarray], np.ndarray]) -> None:
    """Demos as whole episodes into `buffer` (flat ring or frame buffer): the episodes of the run's task in
    `config.demo_store`, or `config.num_demos` scripted-expert episodes (on the run's robot server if any).
    Used by every runtime (the in-process `Trainer` and the learner here)."""
    if config.demo_store:
        from data.episode_store import EpisodeStore

        with EpisodeStore.open(Path(config.demo_store), mode="r") as store:
            missing = sorted(set(obs_shapes) - set(store.schema.observation))
            if missing:
                raise ValueError(f"{config.demo_store}: no observation(s) {missing} in the store (it has "
                                 f"{sorted(store.schema.observation)}); record demos with this env config")
            episodes = [ep.index for ep in store.episodes(task=config.task)]
            if not episodes:
                raise ValueError(f"{config.demo_store}: no episodes of task '{config.task}' in the store")
            for index in episodes:
                t = store.load_transitions(list(obs_shapes), [index])
                add_episode(buffer, t.observation, to_agent_action(t.action), t.reward, t.terminated, t.truncated)
    elif config.num_demos:
        from robot.demos import collect_demos

        for ep in collect_demos(config.task, config.num_demos, config.demo_noise, config.seed, config.env,
                                server=config.robot_server, token_file=config.robot_token_file):
            add_episode(buffer, episode_frames(ep), to_agent_action(ep.action), ep.reward, ep.terminated,
                        ep.truncated)


def episode_frames(ep) -> dict[str, np.ndarray]:
    """The T + 1 observations of a `robot.demos.Episode` by key (flat vectors, or stacked dicts)."""
    if isinstance(ep.obs[0], dict):
        rows = [*ep.obs, ep.next_obs[-1]]
        return {k: np.stack([o[k] for o in rows]) for k in rows[0]}
    return {STATE_KEY: np.concatenate([ep.obs, ep.next_obs[-1:]]).astype(np.float32)}


def add_episode(buffer, frames: dict[str, np.ndarray], action, reward, terminated, truncated) -> None:
    """A whole episode into a flat ring (obs / next_obs rows) or a frame buffer (each frame once)."""
    if isinstance(buffer, FrameReplayBuffer):
        buffer.add_episode(frames, action, reward, terminated, truncated)
    else:
        obs = frames[STATE_KEY]
        buffer.add_many(obs[:-1], action, reward, obs[1:], np.asarray(terminated, np.float32))


def add_steps(buffer, frames: dict[str, np.ndarray], action, reward, terminated, truncated, rows: np.ndarray) -> None:
    """Some steps of an episode (the person's) as transitions; the frame buffer links consecutive ones."""
    if isinstance(buffer, FrameReplayBuffer):
        for t in rows:
            buffer.add({k: v[t] for k, v in frames.items()}, action[t], float(reward[t]),
                       {k: v[t + 1] for k, v in frames.items()}, bool(terminated[t]), bool(truncated[t]))
    else:
        obs = frames[STATE_KEY]
        buffer.add_many(obs[rows], action[rows], reward[rows], obs[rows + 1], np.asarray(terminated[rows], np.float32))


def acting_state(agent) -> dict:
    """State dict of the networks that pick actions, keys prefixed by module (`actor.`, `encoder.`, ...)."""
    return {f"{name}.{k}": v for name, module in agent._modules().items() if name in ACTING_MODULES
            for k, v in module.state_dict().items()}


def load_acting_state(agent, tensors: dict) -> None:
    """The inverse of `acting_state`: every acting module must be complete (strict loading)."""
    for name, module in agent._modules().items():
        if name in ACTING_MODULES:
            module.load_state_dict({k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")})
