"""D4RL-style datasets made here with our own SAC, so offline RL has real data without any download.

For a registry task (gymnasium's Hopper-v5 / HalfCheetah-v5 / Walker2d-v5 as `hopper`, `halfcheetah`,
`walker2d`, and the Panda tasks) this produces D4RL's four levels:

| level           | how it is made                                                                         |
|-----------------|----------------------------------------------------------------------------------------|
| `random`        | uniform random actions in the env's action box                                         |
| `expert`        | the SAC policy at the end of training (`robot.train.Trainer`, the task's preset)       |
| `medium`        | the checkpoint whose evaluation return is closest to random + 1/3 x (expert - random)  |
| `medium-replay` | the trainer's online replay buffer as saved in the medium checkpoint (all steps so far) |

Why "1/3 of the way from random to expert" rather than "1/3 of the expert return": D4RL describes medium as
a policy at about a third of expert performance; measuring from the random return makes that meaningful
for tasks whose returns are negative (Panda's dense cost) or have a large random baseline. Every
checkpoint (one per `checkpoint_every` steps, all kept) is evaluated with the deterministic policy on
`eval_episodes` fixed episodes; the final checkpoint is the expert and is excluded from the medium choice
when others exist. The medium and expert datasets sample actions from the stochastic policy, as D4RL's
were; the returns used for the choice are written into each dataset's metadata.

Each episode records the reset seed it was started with (replay needs it). Medium-replay rebuilds
episode boundaries from the buffer: an episode ends where `terminated` is set or where a transition's
next observation is not the following transition's observation (a reset happened); the seeds are the
trainer's (`episode_seed(seed, 1, k)` for its k-th episode). Demo transitions (Panda presets use scripted
demos) are in a separate buffer and are not part of medium-replay.

Outputs in `out/`: `<task>-<level>.hdf5` (D4RL keys with `next_observations`, `timeouts` where a time
limit or the step budget cut an episode, `infos/qpos` and `infos/qvel` (the MuJoCo state of each row; not
for medium-replay, whose buffer does not hold it) and `metadata/*`), and/or `<task>-<level>/` (an episode
store whose episodes carry the level, steps and seed in their metadata, and for Panda tasks the arm joint
positions after each step as `info/joint_pos_<k>`). The SAC run folder is `<task>-sac/`.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import envs
from data.d4rl import export_d4rl_hdf5
from data.episode_store import EpisodeStore
from data.hdf5_io import import_h5py
from data.schema import EpisodeMetadata, FieldSpec, Source, StoreSchema
from robot.demo_store import STATE_KEY

LEVELS = ("random", "medium", "expert", "medium-replay")
FORMATS = ("d4rl", "store", "both")
# Episode-seed streams (robot.demos.episode_seed): 1 train, 2 eval, 3 demos; these are the dataset rollouts.
_STREAMS = {"random": 4, "medium": 5, "expert": 6}


@dataclass
class GenerateConfig:
    """`robot dataset generate`: which task, levels, budgets and outputs."""

    task: str = "hopper"
    """Registry task: hopper, halfcheetah, walker2d or a Panda task (see `robot tasks`)."""
    levels: tuple[str, ...] = LEVELS
    """Comma-separated levels to write: random, medium, expert, medium-replay."""
    train_steps: int = 200_000
    """SAC environment steps; the expert is the policy at the end (D4RL trained for 1M)."""
    dataset_steps: int = 100_000
    """Transitions in each of the random, medium and expert datasets (D4RL: 1M)."""
    checkpoint_every: int = 10_000
    """A checkpoint (a medium candidate) every this many training steps."""
    eval_episodes: int = 5
    """Deterministic evaluation episodes per checkpoint and random-policy episodes for the baseline return."""
    medium_fraction: float = 1 / 3
    """Medium target: random return + this share of (expert return - random return)."""
    seed: int = 0
    """Seed of training, rollouts and episode resets."""
    out: str = "datasets"
    """Output folder."""
    format: str = "both"
    """'d4rl' (HDF5), 'store' (episode store) or 'both'."""
    train_overrides: tuple[str, ...] = ()
    """Extra TrainConfig settings as KEY=VALUE (e.g. agent.utd_ratio=1), over the task's preset."""

    def __post_init__(self) -> None:
        self.levels = tuple(self.levels)
        bad = [lvl for lvl in self.levels if lvl not in LEVELS]
        if bad or not self.levels:
            raise ValueError(f"levels: expected some of {', '.join(LEVELS)}, got {', '.join(self.levels) or 'none'}")
        if self.format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        for key in ("train_steps", "dataset_steps", "checkpoint_every", "eval_episodes"):
            if getattr(self, key) <= 0:
                raise ValueError(f"{key}: expected a positive number, got {getattr(self, key)}")
        if not 0.0 < self.medium_fraction < 1.0:
            raise ValueError(f"medium_fraction: expected a share in (0, 1), got {self.medium_fraction}")
        for item in self.train_overrides:
            if "=" not in item:
                raise ValueError(f"train_overrides: expected KEY=VALUE, got {item!r}")


@dataclass
class Rollout:
    """One episode: T + 1 observations, T env-space actions; `seed` is the reset seed."""

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    seed: int | None
    success: bool | None = None
    qpos: np.ndarray | None = None
    """(T + 1, nq) MuJoCo positions at each observation (D4RL's infos/qpos); None for medium-replay."""
    qvel: np.ndarray | None = None
    """(T + 1, nv) MuJoCo velocities at each observation (D4RL's infos/qvel)."""
    joint_pos: np.ndarray | None = None
    """(T, 7) Panda arm joint positions after each step (the store's info/joint_pos_<k>); None otherwise."""

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())


@dataclass
class LevelData:
    """The episodes of one level and the facts that go into its metadata."""

    level: str
    episodes: list[Rollout]
    info: dict[str, Any] = field(default_factory=dict)


def _flat_obs(obs: Any, task: str) -> np.ndarray:
    if isinstance(obs, dict):
        raise ValueError(f"task {task}: dataset generation needs a flat state observation, not a Dict (image_obs)")
    return np.asarray(obs, dtype=np.float32)


def rollout_steps(
    task: str, env_config: Any, policy: Callable[[np.ndarray], np.ndarray], num_steps: int, seed: int, stream: int
) -> list[Rollout]:
    """Episodes of `policy(obs) -> env action` until `num_steps` transitions; the budget cuts the last one
    (marked truncated, like a time-out)."""
    from robot.demos import episode_seed

    env = envs.make(task, env_config)
    sim = env.unwrapped
    arm = sim.robot.qpos_slice if hasattr(sim, "robot") else None  # Panda arm joints
    episodes: list[Rollout] = []
    steps = 0
    try:
        while steps < num_steps:
            reset_seed = episode_seed(seed, stream, len(episodes))
            obs, _ = env.reset(seed=reset_seed)
            rows: dict[str, list] = {"obs": [_flat_obs(obs, task)], "act": [], "rew": [], "term": [], "trunc": []}
            qpos, qvel = [sim.data.qpos.copy()], [sim.data.qvel.copy()]
            success = False
            while True:
                action = np.asarray(policy(rows["obs"][-1]), dtype=np.float32)
                obs, reward, terminated, truncated, info = env.step(action)
                steps += 1
                success = success or bool(info.get("is_success", False))
                truncated = bool(truncated) or (not terminated and steps >= num_steps)
                for key, value in zip(("obs", "act", "rew", "term", "trunc"),
                                      (_flat_obs(obs, task), action, reward, terminated, truncated), strict=True):
                    rows[key].append(value)
                qpos.append(sim.data.qpos.copy())
                qvel.append(sim.data.qvel.copy())
                if terminated or truncated:
                    break
            episodes.append(Rollout(
                np.stack(rows["obs"]), np.stack(rows["act"]), np.asarray(rows["rew"], np.float32),
                np.asarray(rows["term"], bool), np.asarray(rows["trunc"], bool), reset_seed, success,
                np.stack(qpos), np.stack(qvel), np.stack(qpos)[1:, arm] if arm is not None else None,
            ))
    finally:
        env.close()
    return episodes


def uniform_policy(action_space: Any, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
    return lambda _obs: rng.uniform(low, high).astype(np.float32)


def sac_policy(agent: Any, action_space: Any, deterministic: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """The agent acts in [-1, 1]; rescale to the env's box as the Trainer does."""
    low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
    return lambda obs: low + (agent.act(obs, deterministic=deterministic) + 1.0) * 0.5 * (high - low)


def replay_episodes(buffer: dict[str, np.ndarray], action_space: Any, train_seed: int) -> list[Rollout]:
    """Episodes of a Trainer's online replay buffer (see the module docstring for the boundary rule)."""
    from robot.demos import episode_seed

    n = int(buffer["size"])
    if n == 0:
        return []
    if int(buffer["cursor"]) != n % int(buffer["capacity"]) or n >= int(buffer["capacity"]):
        raise ValueError(
            f"replay buffer: {n} transitions in a ring of {int(buffer['capacity'])} wrapped around; raise the "
            "trainer's replay_capacity above train_steps to rebuild medium-replay in order"
        )
    obs, next_obs = buffer["obs"][:n], buffer["next_obs"][:n]
    terminated = buffer["terminated"][:n] > 0.5
    low, high = action_space.low.astype(np.float32), action_space.high.astype(np.float32)
    actions = low + (buffer["action"][:n] + 1.0) * 0.5 * (high - low)
    ends = terminated.copy()
    ends[:-1] |= np.any(next_obs[:-1] != obs[1:], axis=1)
    ends[-1] = True
    episodes, start = [], 0
    for k, end in enumerate(np.flatnonzero(ends)):
        stop = end + 1
        truncated = np.zeros(stop - start, bool)
        truncated[-1] = not terminated[end]
        episodes.append(Rollout(
            np.concatenate([obs[start:stop], next_obs[end][None]]), actions[start:stop].astype(np.float32),
            buffer["reward"][start:stop].astype(np.float32), terminated[start:stop].copy(), truncated,
            episode_seed(train_seed, 1, k),
        ))
        start = stop
    return episodes


# --------------------------------------------------------------------------------------------- writing
def d4rl_arrays(episodes: Sequence[Rollout]) -> dict[str, np.ndarray]:
    """One row per transition with `next_observations`; `timeouts` on the last row of a cut episode."""
    return {
        "observations": np.concatenate([e.observations[:-1] for e in episodes]),
        "actions": np.concatenate([e.actions for e in episodes]),
        "rewards": np.concatenate([e.rewards for e in episodes]),
        "terminals": np.concatenate([e.terminated for e in episodes]),
        "timeouts": np.concatenate([e.truncated for e in episodes]),
        "next_observations": np.concatenate([e.observations[1:] for e in episodes]),
    }


def write_d4rl(path: Path, episodes: Sequence[Rollout], metadata: dict[str, Any]) -> None:
    """D4RL HDF5 plus `metadata/<key>` scalars; assembled under a temporary name, then renamed into place."""
    h5py = import_h5py()
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        export_d4rl_hdf5(d4rl_arrays(episodes), tmp)
        with h5py.File(tmp, "a") as f:
            if all(e.qpos is not None for e in episodes):
                f.create_dataset("infos/qpos", data=np.concatenate([e.qpos[:-1] for e in episodes]))
                f.create_dataset("infos/qvel", data=np.concatenate([e.qvel[:-1] for e in episodes]))
            for key, value in metadata.items():
                f.create_dataset(f"metadata/{key}", data=json.dumps(value) if isinstance(value, dict) else value)
            f.flush()
            os.fsync(f.id.get_vfd_handle())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_store(path: Path, task: str, episodes: Sequence[Rollout], extra: dict[str, Any]) -> None:
    robot = "mujoco_locomotion" if envs.get_task(task).config_cls is None else "panda_sim"
    obs_dim, act_dim = episodes[0].observations.shape[1], episodes[0].actions.shape[1]
    schema = StoreSchema(observation={STATE_KEY: FieldSpec((obs_dim,), "float32")},
                         action=FieldSpec((act_dim,), "float32"))
    with EpisodeStore.create(path, schema) as store:
        for ep in episodes:
            meta = EpisodeMetadata(task=task, robot=robot, source=Source.ONLINE, seed=ep.seed, extra=extra)
            with store.begin_episode(meta) as writer:
                steps = {
                    "observation": {STATE_KEY: ep.observations[:-1]}, "action": ep.actions, "reward": ep.rewards,
                    "terminated": ep.terminated, "truncated": ep.truncated,
                }
                if ep.joint_pos is not None:
                    steps["info"] = {f"joint_pos_{k}": ep.joint_pos[:, k] for k in range(ep.joint_pos.shape[1])}
                writer.extend(steps)
                writer.commit({STATE_KEY: ep.observations[-1]}, success=ep.success)


# --------------------------------------------------------------------------------------------- training
def _train(config: GenerateConfig, run_dir: Path, reporter: Any) -> Any:
    from robot.config import apply_overrides
    from robot.presets import default_config
    from robot.run_dir import save_config
    from robot.train import Trainer

    base = default_config(config.task)
    overrides = dict(item.split("=", 1) for item in config.train_overrides)
    fixed = {
        "seed": config.seed, "total_env_steps": config.train_steps, "checkpoint_every": config.checkpoint_every,
        "keep_checkpoints": config.train_steps // config.checkpoint_every + 2, "eval_every": config.train_steps,
        "eval_episodes": config.eval_episodes, "replay_capacity": max(base.replay_capacity, config.train_steps + 1),
    }
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        raise ValueError(f"train_overrides: {clash} are set by the generate options themselves")
    train_config = apply_overrides(base, {**overrides, **fixed})
    run_dir.mkdir(parents=True)
    save_config(run_dir, train_config)  # a complete run folder: `robot eval` and `--resume` work on it
    trainer = Trainer(train_config, run_dir, reporter)
    trainer.run()
    return train_config


def _load_agent(train_config: Any, checkpoint: Path, env: Any) -> Any:
    from policies.sac import SACAgent
    from robot.core.checkpoint import load_state
    from robot.core.device import resolve_device

    device = resolve_device(train_config.device)
    agent = SACAgent(env.observation_space.shape[0], env.action_space.shape[0], train_config.agent, device)
    tensors, layout = load_state(checkpoint, "agent")
    agent.load_state_tensors({k: v.to(device) for k, v in tensors.items()}, layout)
    return agent


def random_baseline(task: str, env_config: Any, seed: int, episodes: int) -> float:
    """Mean return of uniform actions on the evaluation episodes (`robot.train.evaluate`'s seeds)."""
    from robot.demos import episode_seed, run_episode

    env = envs.make(task, env_config)
    policy = uniform_policy(env.action_space, seed + 1)
    try:
        return float(np.mean([
            run_episode(env, lambda o, _i: policy(o), episode_seed(seed, 2, i)).reward.sum() for i in range(episodes)
        ]))
    finally:
        env.close()


def choose_medium(returns: dict[int, float], random_return: float, expert_step: int, fraction: float) -> int:
    """Step of the checkpoint closest to random + fraction x (expert - random); the expert only if alone."""
    target = random_return + fraction * (returns[expert_step] - random_return)
    candidates = [s for s in returns if s != expert_step] or [expert_step]
    return min(candidates, key=lambda s: (abs(returns[s] - target), s))


def generate(config: GenerateConfig, reporter: Any = None, say: Callable[[str], None] = lambda _t: None) -> dict:
    """Make the requested levels; returns {level: {"paths": [...], **facts}} (also in out/<task>-summary.json)."""
    from robot.config import to_dict
    from robot.core.checkpoint import atomic_write_text, list_checkpoints
    from robot.train import SilentReporter, evaluate

    spec = envs.get_task(config.task)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    targets = {}
    for level in config.levels:
        paths = []
        if config.format in ("d4rl", "both"):
            paths.append(out / f"{spec.name}-{level}.hdf5")
        if config.format in ("store", "both"):
            paths.append(out / f"{spec.name}-{level}")
        existing = [str(p) for p in paths if p.exists()]
        if existing:
            raise FileExistsError(f"{', '.join(existing)}: already exists; remove it or choose another --out")
        targets[level] = paths
    env_config = spec.config_cls() if spec.config_cls else None
    env = envs.make(spec.name, env_config)
    action_space = env.action_space
    common = {
        "task": spec.name, "generator": "robot dataset generate", "algorithm": "SAC", "seed": config.seed,
        "env_config": to_dict(env_config) if env_config is not None else {},
    }
    levels: dict[str, LevelData] = {}
    random_return = random_baseline(spec.name, env_config, config.seed, config.eval_episodes)
    if "random" in config.levels:
        say(f"random policy: {config.dataset_steps} steps")
        episodes = rollout_steps(spec.name, env_config, uniform_policy(action_space, config.seed),
                                 config.dataset_steps, config.seed, _STREAMS["random"])
        levels["random"] = LevelData("random", episodes, {"policy_return": random_return, "policy_steps": 0})
    summary: dict[str, Any] = {"random_return": random_return}
    if any(level != "random" for level in config.levels):
        run_dir = out / f"{spec.name}-sac"
        if run_dir.exists():
            raise FileExistsError(f"{run_dir}: already exists; remove it or choose another --out")
        say(f"training SAC for {config.train_steps} steps in {run_dir}")
        train_config = _train(config, run_dir, reporter or SilentReporter())
        checkpoints = {int(p.name.split("_")[-1]): p for p in list_checkpoints(run_dir / "checkpoints")}
        returns = {}
        for step, path in sorted(checkpoints.items()):
            agent = _load_agent(train_config, path, env)
            result = evaluate(agent, spec.name, env_config, config.seed, config.eval_episodes)
            returns[step] = result["eval/return"]
            say(f"checkpoint step {step}: eval return {returns[step]:.2f}")
        expert_step = max(checkpoints)
        medium_step = choose_medium(returns, random_return, expert_step, config.medium_fraction)
        summary.update({
            "checkpoint_returns": {str(k): v for k, v in returns.items()}, "expert_step": expert_step,
            "expert_return": returns[expert_step], "medium_step": medium_step, "medium_return": returns[medium_step],
            "medium_target_return": random_return + config.medium_fraction * (returns[expert_step] - random_return),
        })
        for level, step in (("medium", medium_step), ("expert", expert_step)):
            if level in config.levels:
                agent = _load_agent(train_config, checkpoints[step], env)
                say(f"{level} policy (checkpoint step {step}): {config.dataset_steps} steps")
                episodes = rollout_steps(spec.name, env_config, sac_policy(agent, action_space), config.dataset_steps,
                                         config.seed, _STREAMS[level])
                levels[level] = LevelData(level, episodes, {"policy_return": returns[step], "policy_steps": step})
        if "medium-replay" in config.levels:
            with np.load(checkpoints[medium_step] / "replay_online.npz") as saved:
                episodes = replay_episodes(dict(saved), action_space, train_config.seed)
            levels["medium-replay"] = LevelData(
                "medium-replay", episodes, {"policy_return": returns[medium_step], "policy_steps": medium_step}
            )
    env.close()
    results = {}
    for level in config.levels:
        data = levels[level]
        total = sum(len(e.actions) for e in data.episodes)
        facts = {**common, "policy_level": level, **data.info, "dataset_steps": total,
                 "dataset_episodes": len(data.episodes),
                 "dataset_return": float(np.mean([e.ret for e in data.episodes]))}
        for path in targets[level]:
            if path.suffix == ".hdf5":
                write_d4rl(path, data.episodes, facts)
            else:
                write_store(path, spec.name, data.episodes, facts)
        say(f"{level}: {len(data.episodes)} episodes, {total} steps -> {', '.join(map(str, targets[level]))}")
        results[level] = {"paths": [str(p) for p in targets[level]],
                          **{k: v for k, v in facts.items() if k != "env_config"}}
    summary["levels"] = results
    atomic_write_text(out / f"{spec.name}-summary.json", json.dumps(summary, indent=2) + "\n")
    return summary

