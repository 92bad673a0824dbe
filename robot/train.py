"""`robot train`: SAC/RLPD on a task, with demos, periodic evaluation, checkpoints and exact resume.

Data flow (DESIGN.md): config -> env + demos -> agent -> actor loop (obs -> act -> step -> replay) ->
learner (mixed online/demo batches, UTD k) -> periodic eval -> metrics, checkpoints, curve.

Determinism and resume: every source of randomness is either derived from the seed per episode
(env resets) or is a generator whose state is checkpointed (torch, NumPy, replay samplers, the
random-action generator). Checkpoints are taken only at episode boundaries, so no simulator state
needs saving, and a run resumed after kill -9 replays the same steps as an uninterrupted one.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import MixedSampler, ReplayBuffer
from envs.real import make_env, parse_server_address
from policies.image_sac import ImageAgentConfig, ImageSACAgent, obs_spec_of
from policies.sac import SACAgent, SACConfig
from robot.core.checkpoint import (
    atomic_directory,
    atomic_write_text,
    checkpoint_path,
    latest_checkpoint,
    load_state,
    prune_checkpoints,
    save_state,
)
from robot.core.device import resolve_device, retain_freed_memory
from robot.core.metrics import MeanAggregator, MetricsWriter
from robot.core.seeding import get_rng_state, seed_everything, set_rng_state
from robot.demos import episode_seed, run_episode
from robot.interventions import (
    EXECUTED_ACTION_KEY,
    INTERVENTION_KEY,
    InterventionConfig,
    InterventionWrapper,
    make_intervention_source,
)
from robot.runtime.config import RuntimeConfig, RuntimeKind


@dataclass
class TrainConfig:
    """Everything `robot train` needs; saved as config.json in the run folder."""

    task: str = "pick-cube"
    """Task name (see `robot tasks`)."""
    seed: int = 0
    """Seed of env resets, networks, exploration and replay sampling."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda[:N]'."""
    total_env_steps: int = 20_000
    """Environment steps to train for."""
    max_wall_minutes: float = 0.0
    """Stop earlier, after this much wall-clock time (a booked robot slot, a lent GPU), with a final evaluation
    and checkpoint; 0: no limit."""
    random_steps: int = 1_000
    """Uniformly random actions for the first steps (exploration before the policy acts)."""
    learning_starts: int = 1_000
    """Environment steps before the first gradient update."""
    num_demos: int = 20
    """Scripted expert demonstrations put in the demo buffer; 0 disables demos."""
    demo_noise: float = 0.1
    """Std of the Gaussian noise injected into the expert's actions."""
    demo_store: str = ""
    """Episode store with demos (from `robot collect-demos`); empty: collect num_demos with the expert."""
    demo_ratio: float = 0.5
    """Share of each batch drawn from demos (RLPD symmetric sampling: 0.5)."""
    replay_capacity: int = 1_000_000
    """Online replay buffer size in transitions."""
    demo_capacity: int = 100_000
    """Demo buffer size in transitions."""
    eval_every: int = 2_000
    """Evaluate the deterministic policy every this many environment steps."""
    eval_episodes: int = 20
    """Episodes per evaluation (fixed seeds, the same every round)."""
    checkpoint_every: int = 5_000
    """Checkpoint at the first episode end after every this many environment steps."""
    keep_checkpoints: int = 2
    """Committed checkpoints kept on disk (older ones are deleted)."""
    log_every: int = 500
    """Write aggregated training metrics every this many environment steps."""
    run_root: str = "runs"
    """Folder under which run folders are created."""
    name: str = ""
    """Optional suffix of the run folder name."""
    agent: SACConfig = field(default_factory=SACConfig)
    image: ImageAgentConfig = field(default_factory=ImageAgentConfig)
    """Encoder, augmentation and grasp critic of the pixel agent, used when the env config asks for
    image observations (e.g. --env.image_obs true --env.cameras front,wrist)."""
    interventions: InterventionConfig = field(default_factory=InterventionConfig)
    """Human (or scripted stand-in) takeovers; their transitions also go to the demo buffer (HIL-SERL)."""
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    """Where actor and learner run: 'sync' (this process), 'async' (two processes) or 'ray' (robot.runtime)."""
    robot_server: str = ""
    """HOST:PORT of a robot server ('robot serve': a real arm or the --twin); empty trains in the sim."""
    robot_token_file: str = ""
    """File with the robot server's token; empty reads the ROBOT_SERVER_TOKEN environment variable."""
    env: Any = None
    """Task-specific env config (a dataclass from the task registry)."""

    def __post_init__(self) -> None:
        for key in ("total_env_steps", "eval_every", "eval_episodes", "checkpoint_every", "log_every"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: expected a positive number, got {getattr(self, key)}")
        if not 0.0 <= self.demo_ratio < 1.0:
            raise ValueError(f"demo_ratio: expected a share in [0, 1), got {self.demo_ratio}")
        if self.max_wall_minutes < 0:
            raise ValueError(f"max_wall_minutes: expected >= 0 (0: no limit), got {self.max_wall_minutes}")
        if self.num_demos < 0 or self.random_steps < 0 or self.learning_starts < 0:
            raise ValueError("num_demos, random_steps and learning_starts must be >= 0")
        if self.robot_server:
            parse_server_address(self.robot_server)
            if RuntimeKind(self.runtime.kind) is not RuntimeKind.SYNC and self.runtime.num_actors > 1:
                raise ValueError(f"runtime.num_actors {self.runtime.num_actors}: one robot server serves one "
                                 "actor; use runtime.num_actors 1 with robot_server")


def save_learning_state(folder: Path, agent, online, demos) -> None:
    """Agent (weights + optimizer moments) and both replay buffers into a checkpoint folder; every runtime's
    checkpoint holds these, plus its own loop state."""
    tensors, layout = agent.state_tensors()
    save_state(folder, "agent", tensors, layout)
    online.save(folder / "replay_online.npz")
    demos.save(folder / "replay_demo.npz")


def load_learning_state(folder: Path, agent, online, demos, device) -> None:
    """The inverse of `save_learning_state`."""
    tensors, layout = load_state(folder, "agent")
    agent.load_state_tensors({k: v.to(device) for k, v in tensors.items()}, layout)
    online.load(folder / "replay_online.npz")
    demos.load(folder / "replay_demo.npz")


class Reporter(Protocol):
    """Where progress goes (the CLI shows a rich progress bar; tests pass `SilentReporter`)."""

    def start(self, total_steps: int, start_step: int) -> None: ...
    def progress(self, step: int, stats: dict[str, float]) -> None: ...
    def message(self, text: str) -> None: ...
    def finish(self) -> None: ...


class SilentReporter:
    def start(self, total_steps: int, start_step: int) -> None:
        pass

    def progress(self, step: int, stats: dict[str, float]) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def finish(self) -> None:
        pass


def build_agent(observation_space: gym.Space, action_dim: int, config: TrainConfig, device) -> SACAgent:
    """SAC on flat state vectors, or the pixel agent when the env gives an observation dict.

    Every process that runs an agent builds it here (`robot train`, the runtime's learner and actors,
    `robot eval`), so this is where the process stops handing freed tensor memory back to the kernel
    (`retain_freed_memory`)."""
    retain_freed_memory()
    if isinstance(observation_space, gym.spaces.Dict):
        return ImageSACAgent(obs_spec_of(observation_space), action_dim, config.agent, config.image, device,
                             seed=config.seed)
    return SACAgent(observation_space.shape[0], action_dim, config.agent, device)


def make_replay(observation_space: gym.Space, action_dim: int, capacity: int, config: TrainConfig, seed: int,
                device: torch.device | None = None):
    """A flat replay ring for state vectors; a frame buffer (each camera frame stored once, at most
    `image.max_replay_frames` slots) for dicts, on `device` when `image.replay_on_device` is set."""
    if isinstance(observation_space, gym.spaces.Dict):
        slots = min(capacity, config.image.max_replay_frames)
        storage = device if config.image.replay_on_device else None
        return FrameReplayBuffer(obs_spec_of(observation_space), action_dim, slots, seed=seed, device=storage)
    return ReplayBuffer(observation_space.shape[0], action_dim, capacity, seed=seed)


def add_transition(buffer, obs, action, reward, next_obs, terminated: bool, truncated: bool) -> None:
    """The frame buffer also needs `truncated` (where an episode's frames end); the flat ring does not."""
    if isinstance(buffer, FrameReplayBuffer):
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
    else:
        buffer.add(obs, action, reward, next_obs, terminated)


def evaluate(agent: SACAgent, task: str, env_config, seed: int, episodes: int, server: str = "",
             token_file: str = "") -> dict[str, float]:
    """Deterministic-policy success rate and return on a fixed set of episode seeds (on the robot server
    ``HOST:PORT`` when given)."""
    env = make_env(task, env_config, server, token_file)
    try:
        results = [
            run_episode(env, lambda o, _info: agent.act(o, deterministic=True), episode_seed(seed, 2, i))
            for i in range(episodes)
        ]
    finally:
        env.close()
    return {
        "eval/success_rate": float(np.mean([r.success for r in results])),
        "eval/return": float(np.mean([r.reward.sum() for r in results])),
        "eval/episode_length": float(np.mean([len(r) for r in results])),
    }


class Trainer:
    """Owns env, buffers and agent for one run folder; `run()` trains to `total_env_steps`."""

    def __init__(self, config: TrainConfig, run_dir: Path, reporter: Reporter | None = None) -> None:
        self.config, self.run_dir = config, Path(run_dir)
        if RuntimeKind(config.runtime.kind) is not RuntimeKind.SYNC:
            command = "local run" if RuntimeKind(config.runtime.kind) is RuntimeKind.ASYNC else "ray_runtime"
            raise ValueError(f"runtime.kind {RuntimeKind(config.runtime.kind).value!r}: this is the in-process "
                             f"trainer; start that runtime with: python -m robot.runtime.{command} {run_dir}")
        self.reporter = reporter or SilentReporter()
        self.device = resolve_device(config.device)
        seed_everything(config.seed)
        self.env = make_env(config.task, config.env, config.robot_server, config.robot_token_file)
        self.interventions: InterventionWrapper | None = None
        source = make_intervention_source(config.interventions, self.env, config.task, config.env, config.seed + 4)
        if source is not None:
            self.env = self.interventions = InterventionWrapper(self.env, source)
        space = self.env.observation_space
        self.action_low = self.env.action_space.low.astype(np.float32)
        self.action_high = self.env.action_space.high.astype(np.float32)
        act_dim = self.action_low.shape[0]
        self.agent = build_agent(space, act_dim, config, self.device)
        self.online = make_replay(space, act_dim, config.replay_capacity, config, config.seed, self.device)
        self.demos = make_replay(space, act_dim, config.demo_capacity, config, config.seed + 1, self.device)
        ratios = {"online": 1.0 - config.demo_ratio, "demo": config.demo_ratio}
        if config.num_demos == 0 and not config.demo_store and not config.interventions.fills_demo_buffer:
            ratios = {"online": 1.0, "demo": 0.0}
        self.sampler = MixedSampler({"online": self.online, "demo": self.demos}, ratios, seed=config.seed + 2)
        self.explore_rng = np.random.default_rng(config.seed + 3)
        # Counters and history: all of this is saved in each checkpoint.
        self.step = 0
        self.episode = 0
        self.updates = 0
        self.recent_success: deque[float] = deque(maxlen=20)
        self.recent_return: deque[float] = deque(maxlen=20)
        self.eval_history: list[dict[str, float]] = []

    # -- action-space scaling ----------------------------------------------------------------------
    def to_env_action(self, action: np.ndarray) -> np.ndarray:
        return self.action_low + (action + 1.0) * 0.5 * (self.action_high - self.action_low)

    def to_agent_action(self, env_action: np.ndarray) -> np.ndarray:
        return 2.0 * (env_action - self.action_low) / (self.action_high - self.action_low) - 1.0

    # -- demos ---------------------------------------------------------------------------------
    def load_demos(self) -> None:
        from robot.runtime.learner import fill_demo_buffer, observation_shapes

        fill_demo_buffer(self.demos, self.config, observation_shapes(self.env.observation_space), self.to_agent_action)
        if len(self.demos):
            source = self.config.demo_store or f"{self.config.num_demos} expert episodes"
            self.reporter.message(f"{len(self.demos)} demo transitions from {source} in the demo buffer")

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        path = checkpoint_path(self.run_dir / "checkpoints", self.step)
        with atomic_directory(path) as tmp:
            save_learning_state(tmp, self.agent, self.online, self.demos)
            rng = get_rng_state()
            save_state(tmp, "rng", {"torch_cpu": rng["torch_cpu"]})
            state = {
                "step": self.step, "episode": self.episode, "updates": self.updates,
                "recent_success": list(self.recent_success), "recent_return": list(self.recent_return),
                "eval_history": self.eval_history,
                "numpy_rng": _numpy_rng_to_json(rng["numpy"]), "python_rng": _python_rng_to_json(rng["python"]),
                "explore_rng": self.explore_rng.bit_generator.state,
                "sampler_rng": self.sampler.rng.bit_generator.state,
                "interventions": self.interventions.state_dict() if self.interventions else None,
            }
            (tmp / "trainer_state.json").write_text(json.dumps(state))
        prune_checkpoints(self.run_dir / "checkpoints", self.config.keep_checkpoints)
        return path

    def load_checkpoint(self, path: Path) -> None:
        load_learning_state(path, self.agent, self.online, self.demos, self.device)
        state = json.loads((path / "trainer_state.json").read_text())
        rng_tensors, _ = load_state(path, "rng")
        set_rng_state({
            "torch_cpu": rng_tensors["torch_cpu"], "numpy": _numpy_rng_from_json(state["numpy_rng"]),
            "python": _python_rng_from_json(state["python_rng"]),
        })
        self.explore_rng.bit_generator.state = state["explore_rng"]
        self.sampler.rng.bit_generator.state = state["sampler_rng"]
        self.step, self.episode, self.updates = state["step"], state["episode"], state["updates"]
        self.recent_success.extend(state["recent_success"])
        self.recent_return.extend(state["recent_return"])
        self.eval_history = state["eval_history"]
        if self.interventions is not None and state.get("interventions"):
            self.interventions.load_state_dict(state["interventions"])

    # -- the loop ------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        cfg = self.config
        if resume:
            ckpt = latest_checkpoint(self.run_dir / "checkpoints")
            if ckpt is None:
                raise FileNotFoundError(f"--resume: no committed checkpoint under {self.run_dir / 'checkpoints'}")
            self.load_checkpoint(ckpt)
            self.reporter.message(f"resumed from {ckpt.name} (env step {self.step})")
        else:
            self.load_demos()
        writer = MetricsWriter(self.run_dir, resume_step=self.step if resume else None)
        aggregator = MeanAggregator()
        next_checkpoint = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
        obs, _ = self.env.reset(seed=episode_seed(cfg.seed, 1, self.episode))
        ep_return, t_last, steps_last, updates_last = 0.0, time.perf_counter(), self.step, self.updates
        rates = {"perf/env_steps_per_s": 0.0, "perf/updates_per_s": 0.0}
        eval_pending = False
        deadline = time.perf_counter() + 60.0 * cfg.max_wall_minutes if cfg.max_wall_minutes > 0 else float("inf")
        self.reporter.start(cfg.total_env_steps, self.step)
        try:
            while self.step < cfg.total_env_steps:
                # ---- act ----
                if self.step < cfg.random_steps:
                    action = self.explore_rng.uniform(-1.0, 1.0, self.action_low.shape).astype(np.float32)
                else:
                    action = self.agent.act(obs)
                next_obs, reward, terminated, truncated, info = self.env.step(self.to_env_action(action))
                if info.get(INTERVENTION_KEY, False):  # the person acted: store their action (in both sources)
                    action = self.to_agent_action(info[EXECUTED_ACTION_KEY])
                    if cfg.interventions.to_demo_buffer:
                        add_transition(self.demos, obs, action, reward, next_obs, terminated, truncated)
                add_transition(self.online, obs, action, reward, next_obs, terminated, truncated)
                ep_return += float(reward)
                self.step += 1
                obs = next_obs
                episode_ended = terminated or truncated
                if episode_ended:
                    self.recent_success.append(float(info.get("is_success", False)))
                    self.recent_return.append(ep_return)
                    self.episode += 1
                    ep_return = 0.0
                # ---- learn ----
                if self.step >= cfg.learning_starts:
                    aggregator.add(self.agent.update(self.sampler.sample(cfg.agent.batch_size, cfg.agent.utd_ratio)))
                    self.updates += cfg.agent.utd_ratio
                # ---- log / eval / checkpoint ----
                if self.step % cfg.log_every == 0:
                    now = time.perf_counter()
                    rates = {
                        "perf/env_steps_per_s": (self.step - steps_last) / (now - t_last),
                        "perf/updates_per_s": (self.updates - updates_last) / (now - t_last),
                    }
                    t_last, steps_last, updates_last = now, self.step, self.updates
                    writer.write(self.step, {**aggregator.compute(), **self._episode_stats(), **rates,
                                             **self._intervention_stats()})
                last_step = self.step == cfg.total_env_steps or time.perf_counter() > deadline
                eval_pending = eval_pending or self.step % cfg.eval_every == 0 or last_step
                # One robot: evaluate between training episodes (the sim evaluates in a separate env at once).
                if eval_pending and (episode_ended or not cfg.robot_server or last_step):
                    eval_pending = False
                    result = evaluate(self.agent, cfg.task, cfg.env, cfg.seed, cfg.eval_episodes,
                                      cfg.robot_server, cfg.robot_token_file)
                    self.eval_history.append({"step": self.step, **result})
                    writer.write(self.step, result)
                    self.reporter.message(
                        f"eval @ {self.step}: success {result['eval/success_rate']:.0%}, "
                        f"return {result['eval/return']:.2f}"
                    )
                if episode_ended and self.step >= next_checkpoint:
                    self.save_checkpoint()
                    next_checkpoint = (self.step // cfg.checkpoint_every + 1) * cfg.checkpoint_every
                self.reporter.progress(self.step, {**rates, **self._episode_stats()})
                if episode_ended:  # after evaluation and checkpoint, which may use the same robot
                    obs, _ = self.env.reset(seed=episode_seed(cfg.seed, 1, self.episode))
                if last_step and self.step < cfg.total_env_steps:
                    self.reporter.message(f"max_wall_minutes ({cfg.max_wall_minutes}) reached at env step {self.step}")
                    break
            self.save_checkpoint()
        finally:
            writer.close()
            self.reporter.finish()
            self.env.close()
        summary = self.summary()
        atomic_write_text(self.run_dir / "eval_summary.json", json.dumps(summary, indent=2) + "\n")
        return summary

    def _episode_stats(self) -> dict[str, float]:
        if not self.recent_success:
            return {}
        return {
            "train/success_rate": float(np.mean(self.recent_success)),
            "train/return": float(np.mean(self.recent_return)),
            "train/episodes": float(self.episode),
        }

    def _intervention_stats(self) -> dict[str, float]:
        if self.interventions is None:
            return {}
        return {f"train/{k}": float(v) for k, v in self.interventions.counts().items()}

    def summary(self) -> dict[str, Any]:
        final = self.eval_history[-1] if self.eval_history else {}
        best = max(self.eval_history, key=lambda r: r["eval/success_rate"]) if self.eval_history else {}
        return {
            "task": self.config.task,
            "env_steps": self.step,
            "updates": self.updates,
            "episodes": self.episode,
            "final_success_rate": final.get("eval/success_rate"),
            "final_return": final.get("eval/return"),
            "best_success_rate": best.get("eval/success_rate"),
            "best_at_step": best.get("step"),
            "evals": self.eval_history,
            **({} if self.interventions is None else self.interventions.counts()),
        }


def _numpy_rng_to_json(state: dict) -> dict:
    return {**state, "state": {**state["state"], "key": state["state"]["key"].tolist()}}


def _numpy_rng_from_json(state: dict) -> dict:
    return {**state, "state": {**state["state"], "key": np.asarray(state["state"]["key"], dtype=np.uint32)}}


def _python_rng_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_rng_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


