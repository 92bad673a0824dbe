"""PandaStackCubes: stack coloured cubes in a given order (``robot/PandaStackCubes-v0``, task ``stack-cubes``).

A multi-stage task with named sub-steps for language-conditioned policies and the planner. Three 4 cm
cubes get three distinct colours from ``palette`` and random poses; the goal is a tower of the first
``stack_height`` cubes of a random order, e.g. "stack the green cube on the red cube, then the blue cube
on the green cube". Cubes beyond ``stack_height`` are distractors.

Spaces, timing and action semantics are the Panda base's (``envs.panda_base``): 4-D action
``[dx, dy, dz, gripper]`` (7-D with ``rotation``). State observation (float32, ``OBS_LAYOUT``), 35 values:
    tcp_pos (3) [m] | tcp_quat (4) | tcp_linvel (3) [m/s] | tcp_angvel (3) [rad/s] | gripper_width (1) [m] |
    cube0_pos (3) | cube0_quat (4) | cube1_pos (3) | cube1_quat (4) | cube2_pos (3) | cube2_quat (4)
with the cubes in goal order: cube0 is the tower's base, cube1 goes on it, and so on; the goal is thus
part of the state, and the colours (which a policy does not need) are in ``info`` and ``symbolic_scene()``.

Sub-steps, recomputed from the state at every step (a dropped cube sends the task back to its pick):
for each cube k >= 1 of the tower, ``2 (k - 1)`` = "pick <colour k> cube" and ``2 (k - 1) + 1`` = "place
<colour k> cube on <colour k-1> cube"; ``n_substeps`` (= "done") once every cube rests on the one below
it and none is held. ``info`` carries ``substep`` (int) and ``substep_name`` at every step, plus
``instruction`` and ``scene`` (``symbolic_scene()``) at reset.

Reward: 1 and ``terminated`` on "done"; 0 otherwise, or with ``dense_reward`` 0.9 (substep + progress) /
n_substeps - 1 (a cost, see ``PandaConfig.dense_reward``), progress in [0, 1) being the closeness of
the tool to the cube to pick or of the held cube to
its place. ``StackCubesExpert`` picks and places each cube in turn.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.panda_base import PROPRIO_BOUNDS, PROPRIO_LAYOUT, PandaConfig, PandaEnv, ScriptedExpert

N_CUBES = 3
CUBE_HALF_M = 0.02
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.2, 0.2),
    "green": (0.2, 0.7, 0.25),
    "blue": (0.2, 0.35, 0.85),
    "yellow": (0.9, 0.8, 0.15),
    "purple": (0.55, 0.25, 0.7),
    "orange": (0.95, 0.5, 0.1),
}
"""Colour names a ``palette`` may use, with their RGB."""

OBS_LAYOUT: dict[str, slice] = dict(PROPRIO_LAYOUT)
_OBS_BOUNDS = dict(PROPRIO_BOUNDS)
for _k in range(N_CUBES):
    OBS_LAYOUT[f"cube{_k}_pos"] = slice(14 + 7 * _k, 17 + 7 * _k)
    OBS_LAYOUT[f"cube{_k}_quat"] = slice(17 + 7 * _k, 21 + 7 * _k)
    _OBS_BOUNDS[f"cube{_k}_pos"] = (-10.0, 10.0)
    _OBS_BOUNDS[f"cube{_k}_quat"] = (-1.0, 1.0)
OBS_DIM = 14 + 7 * N_CUBES

_STACK_Z_TOLERANCE_M = 0.005  # a cube rests on another: centre heights differ by one side +- this


@dataclass
class PandaStackCubesConfig(PandaConfig):
    """Settings of ``PandaStackCubesEnv``: the Panda base's plus the cubes' and the goal's."""

    stack_height: int = 3
    """Cubes in the goal tower, 2 or 3 (the others are distractors): 2 (stack_height - 1) sub-steps."""
    palette: tuple[str, ...] = ("red", "green", "blue", "yellow")
    """Colours the cubes take, 3 distinct ones drawn per episode; names from ``COLORS``."""
    cube_center_xy_m: tuple[float, float] = (0.5, 0.0)
    """Centre of the region where the cubes appear [m], world frame."""
    cube_xy_half_range_m: tuple[float, float] = (0.12, 0.18)
    """Half size of that region [m]."""
    min_cube_distance_m: float = 0.1
    """Smallest distance between cube centres at reset [m]; room for the open fingers (8 cm)."""
    cube_yaw_random: bool = True
    """Draw each cube's yaw uniformly in [-pi, pi); False keeps them aligned with the world axes."""
    place_tolerance_m: float = 0.015
    """A cube counts as on another when their centres are this close in x and y [m]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stack_height not in (2, 3):
            raise ValueError(f"stack_height must be 2 or 3, got {self.stack_height!r}")
        unknown = [c for c in self.palette if c not in COLORS]
        if unknown or len(set(self.palette)) < N_CUBES or len(set(self.palette)) != len(self.palette):
            raise ValueError(
                f"palette must hold >= {N_CUBES} distinct colours from {sorted(COLORS)}, got {self.palette!r}"
            )
        if not 0.0 < self.place_tolerance_m < CUBE_HALF_M * 2:
            raise ValueError(f"place_tolerance_m must be in (0, {2 * CUBE_HALF_M}), got {self.place_tolerance_m!r}")


class PandaStackCubesEnv(PandaEnv):
    """Stack coloured cubes in a random order; see the module docstring for spaces, sub-steps and reward."""

    scene_file = "stack_cubes.xml"
    obs_layout = OBS_LAYOUT
    obs_bounds = _OBS_BOUNDS
    position_fields = ("tcp_pos", *(f"cube{k}_pos" for k in range(N_CUBES)))
    quat_fields = ("tcp_quat", *(f"cube{k}_quat" for k in range(N_CUBES)))
    object_geoms = tuple(f"cube_{i}" for i in range(N_CUBES))

    def __init__(self, config: PandaStackCubesConfig | None = None, render_mode: str | None = None) -> None:
        self.config: PandaStackCubesConfig
        super().__init__(config if config is not None else PandaStackCubesConfig(), render_mode)
        self.n_substeps = 2 * (self.config.stack_height - 1)
        """Sub-steps of the task; ``info["substep"]`` reaches this value ("done") on success."""

    def _init_task(self) -> None:
        m, d = self.model, self.data
        adr = [int(m.joint(f"cube_{i}_joint").qposadr[0]) for i in range(N_CUBES)]
        self._cube_pos = [d.qpos[a : a + 3] for a in adr]  # views, indexed by scene cube
        self._cube_quat = [d.qpos[a + 3 : a + 7] for a in adr]
        self._cube_geoms = [m.geom(f"cube_{i}").id for i in range(N_CUBES)]
        self._order = np.arange(N_CUBES)  # scene cube index of goal slot k
        self._colors = list(self.config.palette[:N_CUBES])  # colour name of scene cube i
        self._episode_rgba = self.model.geom_rgba[self._cube_geoms].copy()

    def _reset_task(self, rng: np.random.Generator) -> None:
        cfg = self.config
        self._colors = [cfg.palette[i] for i in rng.choice(len(cfg.palette), N_CUBES, replace=False)]
        for geom, color in zip(self._cube_geoms, self._colors, strict=True):
            self.model.geom_rgba[geom, :3] = COLORS[color]
        self._episode_rgba = self.model.geom_rgba[self._cube_geoms].copy()
        self._order = rng.permutation(N_CUBES)

        center, half = np.asarray(cfg.cube_center_xy_m), np.asarray(cfg.cube_xy_half_range_m)
        placed: list[np.ndarray] = []
        for _ in range(1000):
            xy = center + rng.uniform(-1.0, 1.0, 2) * half
            if all(np.linalg.norm(xy - other) >= cfg.min_cube_distance_m for other in placed):
                placed.append(xy)
                if len(placed) == N_CUBES:
                    break
        else:
            raise ValueError(
                f"cannot place {N_CUBES} cubes {cfg.min_cube_distance_m} m apart in the region "
                f"{cfg.cube_center_xy_m} +- {cfg.cube_xy_half_range_m}; enlarge it or lower min_cube_distance_m"
            )
        for i, xy in enumerate(placed):
            yaw = rng.uniform(-math.pi, math.pi) if cfg.cube_yaw_random else 0.0
            self._cube_pos[i][:] = (xy[0], xy[1], CUBE_HALF_M)
            self._cube_quat[i][:] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def _task_colors(self) -> np.ndarray:
        return self._episode_rgba

    def _observe_task(self, obs: np.ndarray) -> None:
        for k, i in enumerate(self._order):
            start = 14 + 7 * k
            obs[start : start + 3] = self._cube_pos[i]
            quat = self._cube_quat[i]
            obs[start + 3 : start + 7] = quat if quat[0] >= 0.0 else -quat

    # ------------------------------------------------------------------------------ symbolic state
    def _held(self, i: int) -> bool:
        """Scene cube ``i`` is pinched between closed fingers."""
        if not self._gripper_closed:
            return False
        offset = self._cube_pos[i] - self.robot.site_pos_world
        width = float(self._obs[13])
        return (
            abs(offset[0]) < 0.02
            and abs(offset[1]) < 0.02
            and abs(offset[2]) < 0.02
            and 2 * CUBE_HALF_M - 0.005 < width < 2 * math.sqrt(2) * CUBE_HALF_M + 0.005
        )

    def _on(self, top: int, base: int) -> bool:
        """Scene cube ``top`` rests on scene cube ``base`` (centres aligned within the tolerance)."""
        offset = self._cube_pos[top] - self._cube_pos[base]
        tol = self.config.place_tolerance_m
        aligned = abs(offset[0]) <= tol and abs(offset[1]) <= tol
        return aligned and abs(offset[2] - 2 * CUBE_HALF_M) <= _STACK_Z_TOLERANCE_M

    def current_substep(self) -> int:
        """Index of the sub-step in progress; ``n_substeps`` when the tower is complete and released."""
        order = self._order
        for k in range(1, self.config.stack_height):
            if self._held(order[k]):
                return 2 * (k - 1) + 1
            if not self._on(order[k], order[k - 1]):
                return 2 * (k - 1)
        return self.n_substeps

    def substep_name(self, substep: int) -> str:
        """Words of a sub-step, e.g. "pick green cube" or "place green cube on red cube"."""
        if substep >= self.n_substeps:
            return "done"
        k = substep // 2 + 1
        cube = f"{self._colors[self._order[k]]} cube"
        if substep % 2 == 0:
            return f"pick {cube}"
        return f"place {cube} on {self._colors[self._order[k - 1]]} cube"

    def substep_names(self) -> list[str]:
        """This episode's sub-steps in order."""
        return [self.substep_name(s) for s in range(self.n_substeps)]

    def instruction(self) -> str:
        """This episode's goal in words."""
        names = [f"the {self._colors[i]} cube" for i in self._order[: self.config.stack_height]]
        parts = [f"{names[k]} on {names[k - 1]}" for k in range(1, len(names))]
        return "stack " + ", then ".join(parts)

    def symbolic_scene(self) -> list[dict[str, Any]]:
        """Every cube: ``name``, ``color``, ``rgb``, ``position_m`` (world), ``on`` ("table", "gripper",
        another cube's name, or "moving"), and ``goal_level`` (0 = tower base, None = distractor)."""
        scene = []
        level = {int(i): k for k, i in enumerate(self._order[: self.config.stack_height])}
        for i in range(N_CUBES):
            if self._held(i):
                support = "gripper"
            elif abs(float(self._cube_pos[i][2]) - CUBE_HALF_M) <= _STACK_Z_TOLERANCE_M:
                support = "table"
            else:
                below = [j for j in range(N_CUBES) if j != i and self._on(i, j)]
                support = f"{self._colors[below[0]]} cube" if below else "moving"
            scene.append(
                {
                    "name": f"{self._colors[i]} cube",
                    "color": self._colors[i],
                    "rgb": COLORS[self._colors[i]],
                    "position_m": self._cube_pos[i].tolist(),
                    "on": support,
                    "goal_level": level.get(i),
                }
            )
        return scene

    # ------------------------------------------------------------------------------ reward
    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        substep = self.current_substep()
        success = substep == self.n_substeps
        if success:
            reward = 1.0
        elif self.config.dense_reward:
            reward = 0.9 * (substep + self._substep_progress(substep)) / self.n_substeps
        else:
            reward = 0.0
        return reward, success, {"substep": substep, "substep_name": self.substep_name(substep)}

    def _substep_progress(self, substep: int) -> float:
        """Closeness in [0, 1) of the tool to the cube to pick, or of the held cube to its place."""
        k = substep // 2 + 1
        top, base = self._order[k], self._order[k - 1]
        if substep % 2 == 0:
            distance = np.linalg.norm(self.robot.site_pos_world - self._cube_pos[top])
        else:
            place = self._cube_pos[base] + np.array([0.0, 0.0, 2 * CUBE_HALF_M])
            distance = np.linalg.norm(self._cube_pos[top] - place)
        return 1.0 - math.tanh(10.0 * float(distance))

    def _reset_info(self) -> dict[str, Any]:
        substep = self.current_substep()
        return {
            "substep": substep,
            "substep_name": self.substep_name(substep),
            "instruction": self.instruction(),
            "scene": self.symbolic_scene(),
        }


# ------------------------------------------------------------------------------------------ expert
class _Phase(enum.Enum):
    REACH = "reach"
    CLOSE = "close"
    LIFT = "lift"
    CARRY = "carry"
    LOWER = "lower"
    RELEASE = "release"
    RETREAT = "retreat"
    DONE = "done"


class StackCubesExpert(ScriptedExpert):
    """Scripted stacking: for each cube of the tower, pick it, carry it high, lower it onto the one below.

    The goal order is read from the observation's cube order. See ``ScriptedExpert`` for the arguments;
    ``stack_height`` is the env's.
    """

    config_cls = PandaStackCubesConfig
    carry_height_m = 2 * CUBE_HALF_M * N_CUBES + 0.06
    """Tool height while carrying [m]: a held cube clears a full tower."""
    max_grasp_width_m = 2 * math.sqrt(2) * CUBE_HALF_M + 0.004
    """Fingers that stop below this opening [m] hold the cube (a cube's diagonal is 5.7 cm)."""
    drop_height_m = 0.003
    """The held cube is released this far above its place [m]."""

    def __init__(
        self,
        noise_std: float = 0.1,
        seed: int = 0,
        action_scale_m: float | None = None,
        rotation: bool = False,
        stack_height: int = 3,
    ) -> None:
        self.stack_height = stack_height
        super().__init__(noise_std, seed, action_scale_m, rotation)

    @classmethod
    def _config_kwargs(cls, config: PandaStackCubesConfig) -> dict[str, Any]:
        return {"stack_height": config.stack_height}

    def reset(self) -> None:
        """Start a new episode."""
        self._level = 1  # tower level being built: cube ``level`` goes on cube ``level - 1``
        self._phase = _Phase.REACH
        self._close_steps = 0
        self._last_width_m = np.inf
        self._hold_pos = np.zeros(3)

    def __call__(self, obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> np.ndarray:
        state = self._state(obs, info)
        tcp = state[OBS_LAYOUT["tcp_pos"]]
        width = float(state[OBS_LAYOUT["gripper_width"].start])
        level = min(self._level, self.stack_height - 1)
        cube = state[OBS_LAYOUT[f"cube{level}_pos"]]
        base = state[OBS_LAYOUT[f"cube{level - 1}_pos"]]
        to_base_xy = base[:2] - cube[:2]
        gripper = 1.0
        goal = tcp.copy()

        carrying = self._phase in (_Phase.LIFT, _Phase.CARRY, _Phase.LOWER)
        if carrying and (np.linalg.norm(cube - tcp) > 0.03 or width < 2 * CUBE_HALF_M - 0.005):
            self._phase = _Phase.REACH  # dropped it (or closed on nothing): pick it again

        if self._phase is _Phase.REACH:
            gripper = -1.0
            xy_error = float(np.linalg.norm(cube[:2] - tcp[:2]))
            # Stay at carrying height until nearly over the cube, then come straight down.
            clearance = min(self.carry_height_m - cube[2], 4.0 * max(xy_error - 0.005, 0.0))
            goal = np.array([cube[0], cube[1], cube[2] + clearance])
            if xy_error < 0.006 and abs(tcp[2] - cube[2]) < 0.008:
                self._phase = _Phase.CLOSE
                self._close_steps = 0
                self._last_width_m = width
                self._hold_pos = goal
        if self._phase is _Phase.CLOSE:
            goal = self._hold_pos
            self._close_steps += 1
            settled = abs(self._last_width_m - width) < 0.002 and width < self.max_grasp_width_m
            self._last_width_m = width
            if self._close_steps >= 2 and settled:
                self._phase = _Phase.LIFT
        if self._phase is _Phase.LIFT:
            goal = np.array([tcp[0], tcp[1], self.carry_height_m])
            if tcp[2] > self.carry_height_m - 0.02:
                self._phase = _Phase.CARRY
        if self._phase is _Phase.CARRY:
            goal = np.array([tcp[0] + to_base_xy[0], tcp[1] + to_base_xy[1], self.carry_height_m])
            if np.linalg.norm(to_base_xy) < 0.006:
                self._phase = _Phase.LOWER
        if self._phase is _Phase.LOWER:
            drop_z = base[2] + 2 * CUBE_HALF_M + self.drop_height_m
            descend = max(drop_z - cube[2], -0.02)  # at most 2 cm per step near the tower
            goal = np.array([tcp[0] + to_base_xy[0], tcp[1] + to_base_xy[1], tcp[2] + descend])
            if abs(cube[2] - drop_z) < 0.003 and np.linalg.norm(to_base_xy) < 0.005:
                self._phase = _Phase.RELEASE
                self._hold_pos = tcp.copy()
                self._last_width_m = width
        if self._phase is _Phase.RELEASE:
            gripper = -1.0
            goal = self._hold_pos
            if width > self._last_width_m + 0.01:
                self._phase = _Phase.RETREAT
        if self._phase is _Phase.RETREAT:
            gripper = -1.0
            goal = np.array([tcp[0], tcp[1], cube[2] + 0.1])
            if tcp[2] > cube[2] + 0.06:
                self._level += 1
                self._phase = _Phase.DONE if self._level >= self.stack_height else _Phase.REACH
        if self._phase is _Phase.DONE:
            gripper = -1.0
            goal = tcp

        return self._action(goal - tcp, state[OBS_LAYOUT["tcp_quat"]], gripper)
