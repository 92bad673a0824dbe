"""Scripted demonstrations: run a task's expert and keep the successful episodes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import envs


@dataclass
class Episode:
    """One episode as aligned per-step arrays (T steps)."""

    obs: np.ndarray  # (T, obs_dim)
    action: np.ndarray  # (T, act_dim), in the env's action space
    reward: np.ndarray  # (T,)
    next_obs: np.ndarray  # (T, obs_dim)
    terminated: np.ndarray  # (T,) bool
    truncated: np.ndarray  # (T,) bool
    success: bool
    seed: int
    robot: str = "panda_sim"
    """What it ran on (`robot.demo_store.robot_label`): the sim, or a robot server's arm."""

    def __len__(self) -> int:
        return len(self.reward)


def episode_seed(base_seed: int, stream: int, index: int) -> int:
    """Independent, reproducible reset seed for episode `index` of a stream (train=1, eval=2, demo=3)."""
    return int(np.random.SeedSequence([base_seed, stream, index]).generate_state(1)[0])


def run_episode(env, policy, seed: int) -> Episode:
    """Roll out `policy(obs, info) -> action` for one episode from `env.reset(seed=seed)`.

    `info` is passed because scripted experts may need privileged state that the observation lacks
    (image or relative-frame observations); learned policies ignore it.
    """
    obs, info = env.reset(seed=seed)
    rows: dict[str, list] = {k: [] for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated")}
    success = False
    while True:
        action = np.asarray(policy(obs, info), dtype=np.float32)
        next_obs, reward, terminated, truncated, info = env.step(action)
        for key, value in zip(rows, (obs, action, reward, next_obs, terminated, truncated), strict=True):
            rows[key].append(value)
        success = success or bool(info.get("is_success", False))
        obs = next_obs
        if terminated or truncated:
            break
    arrays = {k: np.asarray(v) for k, v in rows.items()}
    return Episode(**arrays, success=success, seed=seed)


def collect_demos(
    task: str, num_episodes: int, noise_std: float, seed: int, env_config=None, max_attempts_factor: int = 5,
    server: str = "", token_file: str = "",
) -> list[Episode]:
    """`num_episodes` successful expert episodes (failed attempts are discarded, up to a cap); on the robot
    server `server` (HOST:PORT, e.g. the twin) when given, else in the sim."""
    from envs.real import make_env
    from robot.demo_store import robot_label

    env = make_env(task, env_config, server, token_file)
    expert = envs.make_expert(task, noise_std=noise_std, seed=seed, config=env_config)
    demos: list[Episode] = []
    attempt = 0
    try:
        while len(demos) < num_episodes:
            if attempt >= max_attempts_factor * max(num_episodes, 1):
                raise RuntimeError(
                    f"the {task} expert succeeded in only {len(demos)} of {attempt} episodes "
                    f"(noise_std={noise_std}); lower the demo noise"
                )
            expert.reset()
            episode = run_episode(env, expert, episode_seed(seed, 3, attempt))
            episode.robot = robot_label(env)
            attempt += 1
            if episode.success:
                demos.append(episode)
    finally:
        env.close()
    return demos
