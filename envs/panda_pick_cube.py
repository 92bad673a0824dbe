"""PandaPickCube: lift a cube off a table (``robot/PandaPickCube-v0``, task ``pick-cube``).

Spaces, timing and action semantics are the Panda base's (``envs.panda_base``): 4-D action
``[dx, dy, dz, gripper]`` (7-D with ``rotation``), 24-value state observation (``OBS_LAYOUT``):
    tcp_pos (3) [m] | tcp_quat (4) | tcp_linvel (3) [m/s] | tcp_angvel (3) [rad/s] |
    gripper_width (1) [m] | cube_pos (3) [m] | cube_quat (4) | cube_from_tcp (3) [m]

Reward: 1 and ``terminated`` when the cube's centre is ``lift_threshold_m`` above its resting height;
0 otherwise, or with ``dense_reward`` a shaping cost (reach + grasp + lift progress in [0, 1),
minus 1). Time-outs come from
the TimeLimit wrapper (100 steps) as ``truncated``, never as ``terminated``. ``info["is_success"]`` is set on
every step.

``PickCubeExpert`` is its scripted policy: reach above the cube while descending, close, lift.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.panda_base import (
    ARM_ACTUATORS,
    ARM_JOINTS,
    ASSETS,
    GRIPPER_OPEN_WIDTH_M,
    PROPRIO_BOUNDS,
    PROPRIO_LAYOUT,
    TCP_SITE,
    PandaConfig,
    PandaEnv,
    ScriptedExpert,
    layout_bounds,
)

__all__ = [
    "ARM_ACTUATORS",
    "ARM_JOINTS",
    "GRIPPER_OPEN_WIDTH_M",
    "OBS_DIM",
    "OBS_LAYOUT",
    "SCENE_PATH",
    "TCP_SITE",
    "PandaPickCubeConfig",
    "PandaPickCubeEnv",
    "PickCubeExpert",
]

SCENE_PATH = ASSETS / "pick_cube.xml"

OBS_LAYOUT: dict[str, slice] = {
    **PROPRIO_LAYOUT,
    "cube_pos": slice(14, 17),
    "cube_quat": slice(17, 21),
    "cube_from_tcp": slice(21, 24),
}
OBS_DIM = 24
_OBS_BOUNDS = {**PROPRIO_BOUNDS, "cube_pos": (-10.0, 10.0), "cube_quat": (-1.0, 1.0), "cube_from_tcp": (-10.0, 10.0)}
OBS_LOW, OBS_HIGH = layout_bounds(OBS_LAYOUT, _OBS_BOUNDS)


@dataclass
class PandaPickCubeConfig(PandaConfig):
    """Settings of ``PandaPickCubeEnv``: the Panda base's plus the cube's."""

    cube_center_xy_m: tuple[float, float] = (0.5, 0.0)
    """Centre of the region where the cube appears [m], world frame."""
    cube_xy_half_range_m: tuple[float, float] = (0.1, 0.1)
    """Half size of that region [m]; the cube's x, y are uniform in centre +- this."""
    cube_yaw_random: bool = True
    """Draw the cube's yaw uniformly in [-pi, pi); False keeps it aligned with the world axes."""
    lift_threshold_m: float = 0.05
    """Success when the cube's centre is this far above its resting height [m]."""


class PandaPickCubeEnv(PandaEnv):
    """Pick up a cube with a Panda; see the module docstring for spaces and reward."""

    scene_file = "pick_cube.xml"
    obs_layout = OBS_LAYOUT
    obs_bounds = _OBS_BOUNDS
    position_fields = ("tcp_pos", "cube_pos")
    quat_fields = ("tcp_quat", "cube_quat")
    reset_frame_vector_fields = ("cube_from_tcp",)
    object_geoms = ("cube",)

    def __init__(self, config: PandaPickCubeConfig | None = None, render_mode: str | None = None) -> None:
        self.config: PandaPickCubeConfig
        super().__init__(config if config is not None else PandaPickCubeConfig(), render_mode)

    def _init_task(self) -> None:
        m, d = self.model, self.data
        cube_adr = m.joint("cube_joint").qposadr[0]
        self._cube_pos = d.qpos[cube_adr : cube_adr + 3]
        self._cube_quat = d.qpos[cube_adr + 3 : cube_adr + 7]
        self._cube_rest_z_m = float(m.geom("cube").size[2])  # half side: the table top is z = 0
        self._cube_half_size_m = float(m.geom("cube").size[0])

    def _reset_task(self, rng: np.random.Generator) -> None:
        cfg = self.config
        xy = np.asarray(cfg.cube_center_xy_m) + rng.uniform(-1.0, 1.0, 2) * np.asarray(cfg.cube_xy_half_range_m)
        yaw = rng.uniform(-math.pi, math.pi) if cfg.cube_yaw_random else 0.0
        self._cube_pos[:] = (xy[0], xy[1], self._cube_rest_z_m)
        self._cube_quat[:] = (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))

    def _observe_task(self, obs: np.ndarray) -> None:
        obs[14:17] = self._cube_pos
        cube_quat = self._cube_quat
        obs[17:21] = cube_quat if cube_quat[0] >= 0.0 else -cube_quat
        # The tool-to-cube offset is what grasping needs to a centimetre; given directly, the networks need
        # not learn to subtract two nearly equal world positions.
        np.subtract(self._cube_pos, obs[0:3], out=obs[21:24])

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        cfg = self.config
        lift_m = float(self._cube_pos[2]) - self._cube_rest_z_m
        success = lift_m >= cfg.lift_threshold_m
        if success:
            reward = 1.0
        elif cfg.dense_reward:
            reward = self._shaping(lift_m)
        else:
            reward = 0.0
        return reward, success, {}

    def _shaping(self, lift_m: float) -> float:
        """Dense progress in [0, 1): 0.3 reach + 0.2 grasp + 0.5 lift (lift counts only while grasped)."""
        tcp_to_cube_m = float(np.linalg.norm(self.robot.site_pos_world - self._cube_pos))
        reach = 1.0 - math.tanh(10.0 * tcp_to_cube_m)
        width_m = float(self._obs[13])
        grasped = (
            self._gripper_closed
            and tcp_to_cube_m < 0.02
            and width_m < 2 * self._cube_half_size_m + 0.005
            and width_m > self._cube_half_size_m  # fingers stopped by the cube, not closed on nothing
        )
        lift = min(max(lift_m / self.config.lift_threshold_m, 0.0), 1.0)
        return 0.3 * reach + (0.2 + 0.5 * lift if grasped else 0.0)


# ------------------------------------------------------------------------------------------ expert
_TCP_POS = OBS_LAYOUT["tcp_pos"]
_TCP_QUAT = OBS_LAYOUT["tcp_quat"]
_GRIPPER_WIDTH = OBS_LAYOUT["gripper_width"].start
_CUBE_POS = OBS_LAYOUT["cube_pos"]


class _Phase(enum.Enum):
    REACH = "reach"
    CLOSE = "close"
    LIFT = "lift"


class PickCubeExpert(ScriptedExpert):
    """Scripted pick-cube policy: reach above the cube while descending, close, lift (see ``ScriptedExpert``)."""

    config_cls = PandaPickCubeConfig
    hover_m = 0.10
    """Height of the tool above the cube while still far from it in x, y [m]."""
    max_grasp_width_m = 0.07
    """Fingers that stop below this opening [m] hold the cube (open is 0.08; a cube's diagonal 0.064)."""
    lift_height_m = 0.12
    """Lift the cube this far above its starting height [m] (the env succeeds at 0.05)."""

    def reset(self) -> None:
        """Start a new episode (the noise generator keeps running: episodes differ)."""
        self._phase = _Phase.REACH
        self._cube_start_z_m: float | None = None
        self._last_width_m = np.inf
        self._close_steps = 0
        self._grasp_pos = np.zeros(3)

    def __call__(self, obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> np.ndarray:
        obs = self._state(obs, info)
        tcp = obs[_TCP_POS]
        cube = obs[_CUBE_POS]
        width = float(obs[_GRIPPER_WIDTH])
        if self._cube_start_z_m is None:
            self._cube_start_z_m = float(cube[2])

        xy_error = float(np.linalg.norm(cube[:2] - tcp[:2]))
        if self._phase is _Phase.LIFT and (cube[2] < tcp[2] - 0.03 or width < 0.02):
            self._phase = _Phase.REACH  # dropped it (or closed on nothing): try again

        if self._phase is _Phase.REACH:
            # Come down while closing in: stay high enough above the cube until aligned over it.
            clearance = min(self.hover_m, 4.0 * max(xy_error - 0.005, 0.0))
            goal = np.array([cube[0], cube[1], cube[2] + clearance])
            gripper = -1.0
            if xy_error < 0.008 and abs(tcp[2] - cube[2]) < 0.01:
                self._phase = _Phase.CLOSE
                self._close_steps = 0
                self._last_width_m = width
                self._grasp_pos = goal
        if self._phase is _Phase.CLOSE:
            goal = self._grasp_pos  # hold still while the fingers close
            gripper = 1.0
            self._close_steps += 1
            # Fingers stopped on the cube: flat (width ~ side) or across a diagonal (up to ~side * sqrt 2).
            settled = abs(self._last_width_m - width) < 0.002 and width < self.max_grasp_width_m
            self._last_width_m = width
            if self._close_steps >= 2 and settled:
                self._phase = _Phase.LIFT
        if self._phase is _Phase.LIFT:
            goal = np.array([tcp[0], tcp[1], self._cube_start_z_m + self.lift_height_m])
            gripper = 1.0
        return self._action(goal - tcp, obs[_TCP_QUAT], gripper)
