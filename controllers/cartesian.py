"""The part of a Cartesian law that is not the law: tool-pose targets, error, null-space posture, J^T assembly.

``CartesianController`` holds a ``PoseReference`` (target, filter, workspace box, hemisphere-safe error),
a ``TaskSpace`` (Jacobian, twist, task inertia with its singular-value guard) and a ``NullSpacePosture``;
a law (``CartesianImpedanceController``, ``OperationalSpaceController``) only turns the clipped error and
the twist into a wrench and calls ``_apply_wrench``:

    tau = J^T (wrench - Lambda J M^-1 tau_0) + tau_0  =  J^T wrench + N^T tau_0

Errors are e = x - x_ref (current minus reference): position [m] and the rotation vector of R R_ref^T
[rad], world frame, clipped per axis before the law sees them. Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controllers.base import ControllerConfig, TorqueController
from controllers.limits import clip_error_
from controllers.reference import PoseReference
from controllers.robot_model import RobotModel
from controllers.task_space import NullSpacePosture, TaskSpace


@dataclass
class CartesianConfig(ControllerConfig):
    """Shared by the Cartesian laws: workspace box on the target and the null-space posture."""

    nullspace_stiffness_nm_per_rad: float = 10.0
    """Posture spring k_n [N*m/rad] toward the joint posture held at reset, projected into the task null
    space; usual 0.2-50; 0 disables."""
    nullspace_damping_ratio: float = 1.0
    """zeta_n in d_n = 2 zeta_n sqrt(k_n) [-] for the posture term; usual 0.5-1.5."""
    workspace_low_m: tuple[float, float, float] = (-math.inf, -math.inf, -math.inf)
    """Lower corner of the box that clamps target positions [m], world frame; -math.inf disables an axis."""
    workspace_high_m: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    """Upper corner of that box [m], world frame; math.inf disables an axis."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_nonnegative("nullspace_stiffness_nm_per_rad", "nullspace_damping_ratio")
        low, high = tuple(self.workspace_low_m), tuple(self.workspace_high_m)
        if len(low) != 3 or len(high) != 3 or any(not lo < hi for lo, hi in zip(low, high, strict=True)):
            raise ValueError(
                f"{type(self).__name__}.workspace_low_m {low!r} must be 3 values below workspace_high_m {high!r}"
            )


class CartesianController(TorqueController):
    """Tool-pose targets and the J^T assembly for a Cartesian law (see the module docstring).

    Args:
        robot, dt_s, stiffness, damping_ratio: as ``TorqueController``.
        config: the law's config.
        error_clip: per-axis bound on [position (m); rotation vector (rad)] errors; math.inf disables.
        inertia_inv_floor: singular-value guard on Lambda^-1 [1/kg, 1/(kg m^2)].
    """

    def __init__(
        self,
        robot: RobotModel,
        config: CartesianConfig,
        dt_s: float,
        stiffness: Sequence[float],
        damping_ratio: float,
        error_clip: Sequence[float],
        inertia_inv_floor: float,
    ) -> None:
        # [clipped error (6); twist (6)] side by side, so that -K e - D twist is one product with the
        # 6 x 12 matrix [-K, -D] (kept in step with the gain filter by ``_gains_changed``).
        self._state = np.zeros(12)
        self._gain = np.zeros((6, 12))
        flat = self._gain.reshape(-1)
        self._gain_stiffness = flat[0:72:13]  # view of the diagonal (i, i)
        self._gain_damping = flat[6:72:13]  # view of (i, 6 + i)
        super().__init__(robot, config, dt_s, stiffness, damping_ratio)
        self._pose = PoseReference(
            config.target_filter_time_constant_s,
            dt_s,
            config.workspace_low_m,
            config.workspace_high_m,
            error=self._state[:6],
        )
        self._task = TaskSpace(robot, inertia_inv_floor, twist=self._state[6:])
        self._posture_spring = NullSpacePosture(
            robot, config.nullspace_stiffness_nm_per_rad, config.nullspace_damping_ratio
        )
        self._posture = self._posture_spring if self._posture_spring.enabled else None  # None: skip it
        clip = np.array(error_clip, dtype=float)
        self._error_high = clip
        self._error_low = -clip
        self._wrench = np.zeros(6)
        self._quat = np.zeros(4)

    # ------------------------------------------------------------------------------------ commands
    def reset(self, nullspace_posture_rad: np.ndarray | None = None) -> None:
        """Hold the current tool pose: target = reference = current site pose; clear filter and status.

        The posture for the null-space spring is ``nullspace_posture_rad`` or the current joint positions.
        The rate limiter starts from the torque that holds the arm still (the bias forces when
        compensating them), so the first tick is not rate limited away from equilibrium.
        """
        robot = self.robot
        self._pose.reset(robot.site_pos_world, robot.site_quat_world(self._quat))
        self._posture_spring.reset(robot.q if nullspace_posture_rad is None else nullspace_posture_rad)
        self._clear_law_state()
        self._reset_safety()

    def set_target(self, pos_world: np.ndarray, quat_world: np.ndarray) -> bool:
        """Command a tool pose: position [m] and quaternion (w, x, y, z) of any norm and sign, world frame.

        The position is clamped into the workspace box; the law pulls toward the filtered reference,
        which approaches this target with the configured time constant from where the reference is now.
        Returns False (target refused, previous one kept, counted in ``status``) for NaN or infinite
        values or a zero quaternion.
        """
        accepted = self._pose.set_target(pos_world, quat_world)
        if accepted:
            self._on_new_target()
        return self._command_received(accepted, self._pose.clipped)

    def _on_new_target(self) -> None:
        """Hook: a target was accepted (the impedance law may restart its integral)."""

    def _clear_law_state(self) -> None:
        """Hook: forget any state the law accumulated (reset and watchdog hold)."""

    def _hold(self) -> None:
        robot = self.robot
        self._pose.reset(robot.site_pos_world, robot.site_quat_world(self._quat))
        self._clear_law_state()

    # -------------------------------------------------------------------------------------- tick parts
    def _clipped_error(self) -> np.ndarray:
        """Advance the target filter and return the clipped pose error e (internal buffer)."""
        pose, robot = self._pose, self.robot
        if pose.filter.decay != 0.0:
            pose.advance()
        error = pose.update_error(robot.site_pos_world, robot.site_xmat_world)
        return clip_error_(error, self._error_low, self._error_high)

    def _gains_changed(self) -> None:
        np.negative(self._stiffness.value, out=self._gain_stiffness)
        np.negative(self._damping, out=self._gain_damping)

    def _spring_damper(self, out: np.ndarray) -> np.ndarray:
        """out = -K e - D twist for the clipped error and the twist of this tick."""
        return np.dot(self._gain, self._state, out=out)

    def _apply_wrench(self, wrench: np.ndarray, inertia_current: bool) -> None:
        """tau = J^T wrench + N^T tau_0 into the torque buffer; ``wrench`` is consumed."""
        task, posture = self._task, self._posture
        if posture is not None:
            posture.update()
            if not inertia_current:
                self.status.inertia_guarded = task.update_inertia()
        task.torque(self._tau_full, wrench, posture)

    # -------------------------------------------------------------------------------- inspection
    @property
    def target_pos_world(self) -> np.ndarray:
        """Commanded tool position [m] (copy; after the workspace clamp)."""
        return self._pose.target_pos.copy()

    @property
    def target_quat_world(self) -> np.ndarray:
        """Commanded tool orientation (w, x, y, z), unit norm (copy)."""
        return self._pose.target_quat.copy()

    @property
    def reference_pos_world(self) -> np.ndarray:
        """Filtered reference position the law pulls toward [m] (copy)."""
        return self._pose.ref_pos.copy()

    @property
    def reference_quat_world(self) -> np.ndarray:
        """Filtered reference orientation (w, x, y, z) (copy)."""
        return self._pose.ref_quat.copy()

    @property
    def clipped_error(self) -> np.ndarray:
        """Last tick's clipped [position m; rotation-vector rad] error, current minus reference, integral term
        included when the law has one (copy)."""
        return self._pose.error.copy()

    @property
    def nullspace_posture_rad(self) -> np.ndarray:
        """Joint posture q_0 of the null-space spring [rad] (copy)."""
        return self._posture_spring.posture_rad.copy()
