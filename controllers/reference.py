"""Targets and their filtered references: the first-order target/gain filter and the pose error.

Quaternions are (w, x, y, z), as MuJoCo stores them, everywhere in ``controllers``.

- ``FirstOrderFilter``: the decay of a first-order low-pass toward a target held between two commands, in
  closed form (SERL / franka_ros filter every target and gain with x <- 0.005 x_target + 0.995 x per 1 kHz
  tick, i.e. a time constant of ~0.2 s).
- ``VectorReference``: a filtered vector (joint targets, gains).
- ``PoseReference``: a filtered tool pose with the workspace box on its target and the pose error
  [x - x_ref; rotation vector of R R_ref^T], hemisphere-safe.

Per-tick methods allocate nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import mujoco
import numpy as np

from controllers.limits import first_order_filter_gain

# Below this the remaining fraction of a step is numerically nothing and the filter stops costing time.
_SETTLED = 1e-12


class FirstOrderFilter:
    """x(k) = target + beta^k * offset with beta = 1 - alpha: the closed form of x <- x + alpha (target - x).

    Between two commands the target is constant, so each tick only multiplies the scalar ``decay`` = beta^k
    instead of updating the filtered state; the owner interprets ``offset`` = x(0) - target in its own
    coordinates (a position, a rotation vector, gains). alpha comes from ``first_order_filter_gain``, so
    the response is the same at any tick rate; a time constant of 0 disables filtering (x jumps).
    """

    __slots__ = ("beta", "decay", "offset")

    def __init__(self, size: int, time_constant_s: float, dt_s: float) -> None:
        self.beta = 1.0 - first_order_filter_gain(time_constant_s, dt_s)
        self.offset = np.zeros(size)
        self.decay = 0.0

    def restart(self) -> None:
        """Start a new approach from ``offset`` (written by the caller); immediate when unfiltered."""
        self.decay = 1.0 if self.beta > 0.0 else 0.0

    def settle(self) -> None:
        """Jump to the target."""
        self.decay = 0.0

    def advance(self) -> float:
        """One tick; returns the remaining fraction beta^k (0 once settled)."""
        decay = self.decay * self.beta
        if decay < _SETTLED:
            decay = 0.0
        self.decay = decay
        return decay


class VectorReference:
    """A commanded vector (``target``) and its first-order filtered ``value``, re-anchored on each command."""

    __slots__ = ("filter", "target", "value")

    def __init__(self, size: int, time_constant_s: float, dt_s: float) -> None:
        #: its ``decay`` is 0 once the value has reached the target.
        self.filter = FirstOrderFilter(size, time_constant_s, dt_s)
        self.target = np.zeros(size)
        self.value = np.zeros(size)

    def reset(self, value: np.ndarray | Sequence[float]) -> None:
        """Target = value, no motion."""
        self.target[:] = value
        self.value[:] = value
        self.filter.settle()

    def set_target(self, target: np.ndarray | Sequence[float]) -> None:
        """Approach ``target`` from the current value."""
        np.subtract(self.value, target, out=self.filter.offset)
        self.target[:] = target
        self.filter.restart()
        if self.filter.decay == 0.0:
            self.value[:] = self.target

    def advance(self) -> bool:
        """One tick of the filter; returns True when the value changed."""
        if self.filter.decay == 0.0:
            return False
        decay = self.filter.advance()
        np.multiply(self.filter.offset, decay, out=self.value)
        np.add(self.value, self.target, out=self.value)
        return True


class PoseReference:
    """A commanded tool pose, its filtered reference and the pose error, world frame.

    - The target position is clamped into the workspace box when it is set (the reference, a blend of
      two in-box poses, then stays in the box too).
    - The reference approaches the target through ``FirstOrderFilter``: position along the line, orientation
      along the geodesic, q_ref = q_target * exp(decay * v0) with v0 the rotation from target to the
      reference at the last command (the tick-by-tick slerp filter of SERL, in closed form).
    - ``update_error`` gives e = [x - x_ref; rotation vector of R R_ref^T] (axis * angle [rad], world
      frame). MuJoCo's quaternion difference takes the shorter way round (angle in [-pi, pi]), so q and -q
      give the same error: the hemisphere is handled once, here.

    Args:
        time_constant_s: target filter time constant [s]; 0 disables filtering.
        dt_s: tick period [s].
        workspace_low_m, workspace_high_m: box corners for the target position [m]; +-inf disables.
        error: optional 6-vector to hold the error (a view into the caller's work array).
    """

    def __init__(
        self,
        time_constant_s: float,
        dt_s: float,
        workspace_low_m: Sequence[float],
        workspace_high_m: Sequence[float],
        error: np.ndarray | None = None,
    ) -> None:
        #: its ``decay`` is 0 once the reference has reached the target.
        self.filter = FirstOrderFilter(6, time_constant_s, dt_s)
        self._workspace_low = np.array(workspace_low_m, dtype=float)
        self._workspace_high = np.array(workspace_high_m, dtype=float)
        self.target_pos = np.zeros(3)
        self.target_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self.ref_pos = np.zeros(3)
        self.ref_quat = np.array([1.0, 0.0, 0.0, 0.0])
        #: e = [position error (m); rotation-vector error (rad)], current minus reference, world frame.
        self.error = np.zeros(6) if error is None else error
        self._error_pos = self.error[:3]
        self._error_rot = self.error[3:]
        self._offset_pos = self.filter.offset[:3]  # ref(0) - target [m]
        self._offset_rot = self.filter.offset[3:]  # v0 with q_ref(0) = q_target * exp(v0), target frame [rad]
        self._new_pos = np.zeros(3)
        self._new_quat = np.zeros(4)
        self._quat = np.zeros(4)
        self._vec3 = np.zeros(3)
        #: whether the last accepted target was moved into the workspace box.
        self.clipped = False

    def reset(self, pos_world: np.ndarray, quat_world: np.ndarray) -> None:
        """Target = reference = this pose (not clamped into the workspace: holding is never a jump)."""
        self.target_pos[:] = pos_world
        self.target_quat[:] = quat_world
        self.ref_pos[:] = pos_world
        self.ref_quat[:] = quat_world
        self.filter.offset[:] = 0.0
        self.filter.settle()
        self.clipped = False

    def set_target(self, pos_world: np.ndarray, quat_world: np.ndarray) -> bool:
        """Command a pose: position [m], quaternion (w, x, y, z), any norm > 0 and either sign.

        Returns False, and keeps the previous target, when a value is NaN or infinite or the quaternion is
        zero. Raises ValueError for wrong shapes (a programming error, not a data error).
        """
        if np.shape(pos_world) != (3,) or np.shape(quat_world) != (4,):
            raise ValueError(
                f"target needs a position of shape (3,) and a quaternion (w, x, y, z) of shape (4,), got "
                f"shapes {np.shape(pos_world)} and {np.shape(quat_world)}"
            )
        new_pos, new_quat = self._new_pos, self._new_quat
        new_pos[:] = pos_world
        new_quat[:] = quat_world
        norm = math.sqrt(float(np.dot(new_quat, new_quat)))
        if not (math.isfinite(np.dot(new_pos, new_pos)) and math.isfinite(norm) and norm > 1e-9):
            return False
        new_quat *= 1.0 / norm
        np.minimum(new_pos, self._workspace_high, out=self._vec3)
        np.maximum(self._vec3, self._workspace_low, out=self._vec3)
        np.subtract(new_pos, self._vec3, out=new_pos)  # how far outside the box
        self.clipped = bool(np.dot(new_pos, new_pos) > 0.0)
        new_pos[:] = self._vec3
        # Re-anchor the filter at the current reference.
        np.subtract(self.ref_pos, new_pos, out=self._offset_pos)
        mujoco.mju_subQuat(self._offset_rot, self.ref_quat, new_quat)
        self.target_pos[:] = new_pos
        self.target_quat[:] = new_quat
        self.filter.restart()
        if self.filter.decay == 0.0:
            self.ref_pos[:] = new_pos
            self.ref_quat[:] = new_quat
        return True

    def advance(self) -> None:
        """One tick of the target filter."""
        if self.filter.decay == 0.0:
            return
        decay = self.filter.advance()
        np.multiply(self._offset_pos, decay, out=self.ref_pos)
        np.add(self.ref_pos, self.target_pos, out=self.ref_pos)
        self.ref_quat[:] = self.target_quat
        if decay != 0.0:
            mujoco.mju_quatIntegrate(self.ref_quat, self._offset_rot, decay)

    def update_error(self, pos_world: np.ndarray, xmat_world: np.ndarray) -> np.ndarray:
        """e = [x - x_ref; rotation vector of R R_ref^T] for the tool at (pos, row-major 3x3 rotation)."""
        np.subtract(pos_world, self.ref_pos, out=self._error_pos)
        quat, vec3 = self._quat, self._vec3
        mujoco.mju_mat2Quat(quat, xmat_world)
        mujoco.mju_subQuat(vec3, quat, self.ref_quat)  # q = q_ref * exp(vec3), reference frame, shorter way
        mujoco.mju_rotVecQuat(self._error_rot, vec3, self.ref_quat)  # ... rotated to the world frame
        return self.error
