"""Scripted experts that produce demonstrations from observations alone (no simulator state).

``PickCubeExpert`` drives ``PandaPickCubeEnv``: reach above the cube while descending, close the gripper,
lift. Gaussian action noise (its own seeded generator) makes the demonstrations cover more states.
"""

from __future__ import annotations

import enum

import numpy as np

from envs.panda_pick_cube import OBS_LAYOUT, PandaPickCubeConfig

_TCP_POS = OBS_LAYOUT["tcp_pos"]
_TCP_QUAT = OBS_LAYOUT["tcp_quat"]
_GRIPPER_WIDTH = OBS_LAYOUT["gripper_width"].start
_CUBE_POS = OBS_LAYOUT["cube_pos"]


class _Phase(enum.Enum):
    REACH = "reach"
    CLOSE = "close"
    LIFT = "lift"


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


class PickCubeExpert:
    """Scripted pick-cube policy: ``expert.reset()`` at each episode start, then ``expert(obs) -> action``.

    Args:
        noise_std: standard deviation of the Gaussian noise added to every action component (before the
            clip to [-1, 1]); 0 gives the clean script.
        seed: seed of the expert's own noise generator.
        action_scale_m: the env's ``action_scale_m`` [m], to turn a wanted displacement into an action.
        rotation: the env uses 7-D actions (the expert keeps the orientation: zero rotation + noise).
    """

    hover_m = 0.10
    """Height of the tool above the cube while still far from it in x, y [m]."""
    max_grasp_width_m = 0.07
    """Fingers that stop below this opening [m] hold the cube (open is 0.08; a cube's diagonal 0.064)."""
    lift_height_m = 0.12
    """Lift the cube this far above its starting height [m] (the env succeeds at 0.05)."""

    def __init__(
        self, noise_std: float = 0.1, seed: int = 0, action_scale_m: float = 0.04, rotation: bool = False
    ) -> None:
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.noise_std = noise_std
        self.action_scale_m = action_scale_m
        self.action_dim = 7 if rotation else 4
        self._rng = np.random.default_rng(seed)
        self.reset()

    @classmethod
    def from_config(cls, config: PandaPickCubeConfig, noise_std: float = 0.1, seed: int = 0) -> PickCubeExpert:
        """An expert matched to an env config (its action scale and 4-D or 7-D actions)."""
        return cls(noise_std, seed, action_scale_m=config.action_scale_m, rotation=config.rotation)

    def reset(self) -> None:
        """Start a new episode (the noise generator keeps running: episodes differ)."""
        self._phase = _Phase.REACH
        self._cube_start_z_m: float | None = None
        self._last_width_m = np.inf
        self._close_steps = 0
        self._grasp_pos = np.zeros(3)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
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

        rot_world_tcp = quat_to_matrix(obs[_TCP_QUAT])
        move_tcp = rot_world_tcp.T @ (goal - tcp) / self.action_scale_m
        action = np.zeros(self.action_dim)
        action[:3] = move_tcp
        action[-1] = gripper
        if self.noise_std > 0:
            action += self._rng.normal(0.0, self.noise_std, self.action_dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
