"""The learner side of the distributed runtimes, independent of the transport (sockets or Ray).

`LearnerCore` owns the SAC agent, the online and demo buffers and the mixed sampler. Actors hand it
whole committed episodes, numbered per actor (0, 1, 2, ... in their episode stores); it keeps, per
actor, how many it has ingested, so a resend after any crash is recognised (duplicates are ignored,
gaps refused) and `resume_from(actor)` tells a reconnecting actor where to continue.

No committed transition is lost on kill -9: an actor commits each episode to its crash-safe store
before sending it; the learner checkpoints agent, buffers and the per-actor counts together (one
atomic directory); after a restart it loads the newest checkpoint and the actors resend every episode
committed after it, from their stores.

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

import numpy as np

import envs
from data.replay_buffer import MixedSampler, ReplayBuffer
from policies.sac import SACAgent
from robot.core.checkpoint import (
    atomic_directory,
    atomic_write_text,
    checkpoint_path,
    latest_checkpoint,
    load_state,
    prune_checkpoints,
    save_state,
)
from robot.core.device import resolve_device
from robot.core.metrics import MeanAggregator, MetricsWriter
from robot.core.seeding import seed_everything
from robot.runtime.wire import weights_to_bytes

EPISODE_KEYS = ("obs", "action", "reward", "next_obs", "terminated", "intervention")


class EpisodeOrderError(ValueError):
    """An actor sent episode n while the learner expects another one (a gap)."""


def config_fingerprint(config) -> str:
    """Hash of what both sides must agree on (task, env, network shapes): actors of another config are refused."""
    import hashlib

    from robot.config import to_dict

    d = to_dict(config)
    agreed = {"task": d["task"], "env": d["env"], "hidden_dims": d["agent"]["hidden_dims"]}
    return hashlib.sha256(json.dumps(agreed, sort_keys=True).encode()).hexdigest()[:16]


class LearnerCore:
    """Agent + buffers + per-actor ingest counts; thread-safe (`ingest` and `train_step` from different threads)."""

    def __init__(self, config, run_dir: Path, log: Callable[[str], None] = print) -> None:
        self.config, self.run_dir, self.log = config, Path(run_dir), log
        self.ckpt_root = self.run_dir / "learner" / "checkpoints"
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        env = envs.make(config.task, config.env)
        self.obs_dim = env.observation_space.shape[0]
        self.action_low = env.action_space.low.astype(np.float32)
        self.action_high = env.action_space.high.astype(np.float32)
        env.close()
        act_dim = self.action_low.shape[0]
        self.agent = SACAgent(self.obs_dim, act_dim, config.agent, self.device)
        self.online = ReplayBuffer(self.obs_dim, act_dim, config.replay_capacity, seed=config.seed)
        self.demos = ReplayBuffer(self.obs_dim, act_dim, config.demo_capacity, seed=config.seed + 1)
        ratios = {"online": 1.0 - config.demo_ratio, "demo": config.demo_ratio}
        if config.demo_ratio == 0 or (config.num_demos == 0 and not config.demo_store
                                      and not config.interventions.enabled):
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
        cfg = self.config
        if cfg.demo_store:
            from robot.demo_store import read_demo_transitions

            demo = read_demo_transitions(Path(cfg.demo_store), cfg.task)
            self.demos.add_many(demo["obs"], self.to_agent_action(demo["action"]), demo["reward"],
                                demo["next_obs"], demo["terminated"])
        elif cfg.num_demos:
            from robot.demos import collect_demos

            for ep in collect_demos(cfg.task, cfg.num_demos, cfg.demo_noise, cfg.seed, cfg.env):
                self.demos.add_many(ep.obs, self.to_agent_action(ep.action), ep.reward, ep.next_obs, ep.terminated)

    def to_agent_action(self, env_action: np.ndarray) -> np.ndarray:
        scaled = 2.0 * (env_action - self.action_low) / (self.action_high - self.action_low) - 1.0
        return np.clip(scaled, -1.0, 1.0).astype(np.float32)

    def resume_from(self, actor_id: str) -> int:
        with self.lock:
            return self.received.get(actor_id, 0)

    def ingest(self, actor_id: str, index: int, arrays: dict[str, np.ndarray], success: bool = False) -> bool:
        """Add committed episode `index` of `actor_id`; False for a duplicate (already ingested)."""
        missing = [k for k in EPISODE_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"episode {index} of actor {actor_id}: missing arrays {missing}; expected {EPISODE_KEYS}")
        n = len(arrays["reward"])
        if any(len(arrays[k]) != n for k in EPISODE_KEYS) or arrays["obs"].shape[1:] != (self.obs_dim,):
            raise ValueError(f"episode {index} of actor {actor_id}: arrays of unequal length or wrong obs size")
        if not np.all(np.isfinite(arrays["obs"])) or not np.all(np.isfinite(arrays["reward"])):
            raise ValueError(f"episode {index} of actor {actor_id}: non-finite observations or rewards")
        with self.lock:
            expected = self.received.get(actor_id, 0)
            if index < expected:
                return False
            if index > expected:
                raise EpisodeOrderError(f"actor {actor_id}: got episode {index}, expected {expected} (resend from it)")
            action = self.to_agent_action(arrays["action"])
            term = arrays["terminated"].astype(np.float32)
            self.online.add_many(arrays["obs"], action, arrays["reward"], arrays["next_obs"], term)
            human = arrays["intervention"].astype(bool)
            if human.any():  # HIL-SERL: the person's transitions also go to the demo buffer
                self.demos.add_many(arrays["obs"][human], action[human], arrays["reward"][human],
                                    arrays["next_obs"][human], term[human])
            self.interventions += int(human.sum())
            self.takeovers += int(human[0]) + int((human[1:] & ~human[:-1]).sum())  # person takes control
            self.received[actor_id] = expected + 1
            self.env_steps += n
            self.successes = (self.successes + [float(success)])[-20:]
        return True

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
        """(version, safetensors bytes of the actor network) of the latest published weights."""
        with self.lock:
            version = self.version
            if self._weights_cache is None or self._weights_cache[0] != version:
                self._weights_cache = (version, weights_to_bytes(self.agent.actor.state_dict()))
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
                tensors, layout = self.agent.state_tensors()
                save_state(tmp, "agent", tensors, layout)
                self.online.save(tmp / "replay_online.npz")
                self.demos.save(tmp / "replay_demo.npz")
                state = {"received": self.received, "env_steps": self.env_steps, "updates": self.updates,
                         "version": self.version, "interventions": self.interventions, "takeovers": self.takeovers,
                         "successes": self.successes, "sampler_rng": self.sampler.rng.bit_generator.state}
                (tmp / "learner_state.json").write_text(json.dumps(state))
            self.last_checkpoint_steps = self.env_steps
        prune_checkpoints(self.ckpt_root, self.config.keep_checkpoints)
        return path

    def restore(self, path: Path) -> None:
        tensors, layout = load_state(path, "agent")
        self.agent.load_state_tensors({k: v.to(self.device) for k, v in tensors.items()}, layout)
        self.online.load(path / "replay_online.npz")
        self.demos.load(path / "replay_demo.npz")
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

    `tick()` runs every iteration (the socket learner checks for missing actors there). Metrics go to
    RUN_DIR/learner/metrics.jsonl (+ TensorBoard); the final summary to RUN_DIR/learner/summary.json.
    """
    config = core.config
    writer = MetricsWriter(core.run_dir / "learner", resume_step=core.env_steps)
    aggregator = MeanAggregator()
    last_ckpt = time.monotonic()
    next_log = (core.env_steps // config.log_every + 1) * config.log_every
    try:
        while not core.done():
            metrics = core.train_step()
            if metrics is None:
                time.sleep(0.002)
            else:
                aggregator.add(metrics)
            tick()
            if core.env_steps >= next_log:
                summary = core.summary()
                writer.write(core.env_steps, {
                    **aggregator.compute(), "train/updates": summary["updates"],
                    "train/weights_version": summary["version"], "train/interventions": summary["interventions"],
                    "train/takeovers": summary["takeovers"], "train/success_rate": summary["train_success_rate"]})
                next_log = (core.env_steps // config.log_every + 1) * config.log_every
            if core.checkpoint_due(last_ckpt):
                core.checkpoint()
                last_ckpt = time.monotonic()
        core.checkpoint()
    finally:
        writer.close()
    summary = core.summary()
    atomic_write_text(core.run_dir / "learner" / "summary.json", json.dumps(summary, indent=2) + "\n")
    core.log(f"learner: done: {summary['env_steps']} env steps, {summary['updates']} updates")
    return summary
