"""Task registry: the short names the CLI uses, their gymnasium ids, configs and scripted experts.

Registering with gymnasium happens when ``envs`` is imported; the MuJoCo scene is only loaded when an env
is made.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from envs.panda_peg_insert import PandaPegInsertConfig, PegInsertExpert
from envs.panda_pick_cube import PandaPickCubeConfig, PickCubeExpert
from envs.panda_reach import PandaReachConfig, ReachExpert
from envs.panda_stack_cubes import PandaStackCubesConfig, StackCubesExpert


@dataclass(frozen=True)
class TaskSpec:
    """One task: how to build its env, its config and its scripted expert."""

    name: str
    """Short CLI name, e.g. "pick-cube"."""
    gym_id: str
    """gymnasium id, e.g. "robot/PandaPickCube-v0"."""
    config_cls: type | None
    """Config dataclass passed to the env as ``config=``; None for gymnasium's own envs (no config)."""
    expert_cls: type | None
    """Scripted expert: ``expert_cls.from_config(config, noise_std, seed)``, then ``reset()`` per episode and
    ``expert(obs) -> action`` (``expert(obs, info)`` with image observations); None when the task has none."""
    max_episode_steps: int
    """Episode length enforced by gymnasium's TimeLimit (time-outs are truncations)."""
    description: str
    """One line for ``robot tasks`` and help texts."""
    entry_point: str | None
    """"module:Class" of the env, imported lazily by gymnasium; None when gymnasium registers it itself."""


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="reach",
            gym_id="robot/PandaReach-v0",
            config_cls=PandaReachConfig,
            expert_cls=ReachExpert,
            max_episode_steps=50,
            description="Panda brings its tool within 2 cm of a random target; 10 Hz tool-frame deltas.",
            entry_point="envs.panda_reach:PandaReachEnv",
        ),
        TaskSpec(
            name="pick-cube",
            gym_id="robot/PandaPickCube-v0",
            config_cls=PandaPickCubeConfig,
            expert_cls=PickCubeExpert,
            max_episode_steps=100,
            description="Panda lifts a 4.5 cm cube 5 cm off a table; 10 Hz tool-frame deltas + gripper.",
            entry_point="envs.panda_pick_cube:PandaPickCubeEnv",
        ),
        TaskSpec(
            name="peg-insert",
            gym_id="robot/PandaPegInsert-v0",
            config_cls=PandaPegInsertConfig,
            expert_cls=PegInsertExpert,
            max_episode_steps=100,
            description="Panda inserts a held peg 2 cm into a hole with 1 mm clearance, within the force bound.",
            entry_point="envs.panda_peg_insert:PandaPegInsertEnv",
        ),
        TaskSpec(
            name="stack-cubes",
            gym_id="robot/PandaStackCubes-v0",
            config_cls=PandaStackCubesConfig,
            expert_cls=StackCubesExpert,
            max_episode_steps=200,
            description="Panda stacks coloured cubes in a given order; named sub-steps in info.",
            entry_point="envs.panda_stack_cubes:PandaStackCubesEnv",
        ),
        # gymnasium's MuJoCo locomotion envs (D4RL's domains), so `robot dataset generate` and `robot train` reach
        # them through the same registry; no config class and no scripted expert.
        *(
            TaskSpec(
                name=name, gym_id=gym_id, config_cls=None, expert_cls=None, max_episode_steps=1000,
                description=f"gymnasium MuJoCo {gym_id[:-3]} (D4RL's {name} domain); no scripted expert.",
                entry_point=None,
            )
            for name, gym_id in (
                ("hopper", "Hopper-v5"), ("halfcheetah", "HalfCheetah-v5"), ("walker2d", "Walker2d-v5")
            )
        ),
    )
}


def task_names() -> list[str]:
    """Short names of all tasks, sorted."""
    return sorted(TASKS)


def get_task(name: str) -> TaskSpec:
    """Task by short name or gymnasium id; an unknown name raises ValueError listing the known ones."""
    if name in TASKS:
        return TASKS[name]
    for spec in TASKS.values():
        if spec.gym_id == name:
            return spec
    raise ValueError(f"unknown task '{name}'; known tasks: {', '.join(task_names())}")


def register_all() -> None:
    """Register every task with gymnasium (idempotent)."""
    for spec in TASKS.values():
        if spec.entry_point is not None and spec.gym_id not in gym.registry:
            gym.register(id=spec.gym_id, entry_point=spec.entry_point, max_episode_steps=spec.max_episode_steps)


def make(name: str, config: Any = None, render_mode: str | None = None) -> gym.Env:
    """Build a task's env wrapped in its TimeLimit; ``config`` defaults to the task's config class."""
    spec = get_task(name)
    if spec.config_cls is None:
        if config is not None:
            raise TypeError(f"task '{spec.name}' takes no config, got {type(config).__name__}")
        return gym.make(spec.gym_id, render_mode=render_mode)
    if config is not None and not isinstance(config, spec.config_cls):
        raise TypeError(
            f"config for task '{spec.name}' must be a {spec.config_cls.__name__}, got {type(config).__name__}"
        )
    register_all()
    return gym.make(spec.gym_id, config=config, render_mode=render_mode)


def make_expert(name: str, noise_std: float, seed: int, config: Any = None) -> Any:
    """The task's scripted expert with Gaussian action noise ``noise_std`` and its own RNG ``seed``.

    Pass the env's ``config`` when it is not the default (e.g. ``rotation=True`` or another action scale).
    """
    spec = get_task(name)
    if spec.expert_cls is None:
        raise ValueError(f"task '{spec.name}' has no scripted expert; use num_demos 0 or a demo store")
    if config is None:
        config = spec.config_cls()
    elif not isinstance(config, spec.config_cls):
        raise TypeError(
            f"config for task '{spec.name}' must be a {spec.config_cls.__name__}, got {type(config).__name__}"
        )
    return spec.expert_cls.from_config(config, noise_std=noise_std, seed=seed)
