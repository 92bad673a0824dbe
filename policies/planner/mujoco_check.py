"""Optional check of a plan in the MuJoCo stack-cubes scene, executed by the task's scripted expert.

Slow next to the symbolic verifier (hundreds of physics-controlled steps per skill pair), so it is for
spot checks, not for scoring every rollout. The scene comes from a real ``reset(seed)`` of
``robot/PandaStackCubes-v0`` (all cubes on the table, as the env starts) and the plan from the planner.

Skills: each "pick the X cube" + "place it on ..." pair is run by ``StackCubesExpert`` (pick a cube, carry
it, lower it onto a base). The expert builds towers in the observation's cube order, so it is shown an
observation whose slot 1 holds cube X and slot 0 the target: the cube named in the plan, or for "on the
table" a free spot on the table presented as a cube sunk one cube height into it. Success is the env's own
``is_success``. A plan the symbolic model rejects (a precondition fails) is not run past that skill.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from envs.panda_stack_cubes import (
    CUBE_HALF_M,
    OBS_LAYOUT,
    PandaStackCubesConfig,
    StackCubesExpert,
    _Phase,
)
from policies.planner.data import TABLE, PlannerTask, Skill, task_from_env
from policies.planner.verifier import execute


@dataclass(frozen=True)
class MujocoExecution:
    task: PlannerTask
    """The planner task read from the env after reset (what the plan was written for)."""
    success: bool
    """The env's is_success after the last skill."""
    pairs_run: int
    """Pick-place pairs the expert carried out."""
    env_steps: int
    failure: str
    """Why execution stopped early ("" if it did not)."""


def _free_table_spot(obs: np.ndarray, config: PandaStackCubesConfig) -> np.ndarray:
    """A point in the cube region at least min_cube_distance_m from every cube (grid search)."""
    cubes = [obs[OBS_LAYOUT[f"cube{k}_pos"]][:2] for k in range(3)]
    center, half = np.asarray(config.cube_center_xy_m), np.asarray(config.cube_xy_half_range_m)
    best, best_gap = center, -1.0
    for fx in np.linspace(-1, 1, 9):
        for fy in np.linspace(-1, 1, 9):
            xy = center + np.array([fx, fy]) * half
            gap = min(float(np.linalg.norm(xy - c)) for c in cubes)
            if gap > best_gap:
                best, best_gap = xy, gap
    return best


def execute_in_mujoco(plan: Sequence[Skill], seed: int, config: PandaStackCubesConfig | None = None,
                      max_steps_per_pair: int = 400) -> MujocoExecution:
    """Reset the stack-cubes env with ``seed`` and run ``plan`` (pick/place pairs) with the scripted expert."""
    import envs

    config = config or PandaStackCubesConfig()
    env = envs.make("stack-cubes", config)
    try:
        obs, info = env.reset(seed=seed)
        base = env.unwrapped
        task = task_from_env(env)
        symbolic = execute(task, plan)
        runnable = len(plan) if symbolic.failed_step < 0 else symbolic.failed_step
        slot_of = {base._colors[base._order[k]]: k for k in range(3)}  # colour -> observation slot
        steps, pairs, failure = 0, 0, symbolic.failure
        if runnable % 2 or any(s.kind != ("pick" if i % 2 == 0 else "place") for i, s in enumerate(plan[:runnable])):
            return MujocoExecution(task, False, 0, 0, "the plan is not a sequence of pick-place pairs")
        for i in range(0, runnable, 2):
            pick, place = plan[i], plan[i + 1]
            expert = StackCubesExpert(noise_std=0.0, seed=seed, action_scale_m=config.action_scale_m,
                                      rotation=config.rotation, stack_height=2)
            table_xy = _free_table_spot(obs, config) if place.target == TABLE else None
            for _ in range(max_steps_per_pair):
                shown = np.array(obs, dtype=np.float64, copy=True)
                k = slot_of[pick.target]
                shown[OBS_LAYOUT["cube1_pos"]] = obs[OBS_LAYOUT[f"cube{k}_pos"]]
                shown[OBS_LAYOUT["cube1_quat"]] = obs[OBS_LAYOUT[f"cube{k}_quat"]]
                if table_xy is None:
                    j = slot_of[place.target]
                    shown[OBS_LAYOUT["cube0_pos"]] = obs[OBS_LAYOUT[f"cube{j}_pos"]]
                else:  # a virtual base whose top is the table: the cube is released at table height
                    shown[OBS_LAYOUT["cube0_pos"]] = (*table_xy, CUBE_HALF_M - 2 * CUBE_HALF_M - 0.003)
                obs, _, terminated, _, info = base.step(expert(shown))
                steps += 1
                if expert._phase is _Phase.DONE:
                    break
            else:
                failure = f"the expert did not finish pair {i // 2} ({pick.text()}, {place.text()})"
                break
            pairs += 1
        return MujocoExecution(task, bool(info.get("is_success", False)), pairs, steps, failure)
    finally:
        env.close()
