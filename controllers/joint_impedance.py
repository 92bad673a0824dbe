"""Joint impedance control: a spring and damper per joint toward a filtered joint target.

Per tick, with e = q - q_ref (clipped per joint) and the shared safety chain of ``controllers.base``:

    tau = -K e - D dq (+ bias),   D = 2 zeta sqrt(K)  (unit-inertia convention, as the Cartesian laws)

Joint targets are kept inside the joint range (less the joint-limit margin when one is set). For
joint-space moves (resets, homing); the same class drives the simulated and the real arm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controllers.base import ControllerConfig, TorqueController
from controllers.limits import clip_error_
from controllers.reference import VectorReference
from controllers.robot_model import RobotModel


@dataclass
class JointImpedanceConfig(ControllerConfig):
    """Gains and limits of ``JointImpedanceController``; per-joint tuples have one value per joint or one for all."""

    stiffness_nm_per_rad: tuple[float, ...] = (100.0, 100.0, 100.0, 100.0, 75.0, 150.0, 50.0)
    """Joint springs K [N*m/rad] (deoxys' Panda values); usual 10-600; 0 disables a joint's spring."""
    damping_ratio: float = 1.0
    """zeta in D = 2 zeta sqrt(K) [-] (unit inertia: true zeta = zeta / sqrt(joint inertia)); usual 0.5-1.5."""
    error_clip_rad: tuple[float, ...] = (math.inf,)
    """Per-joint bound on the joint error [rad]: spring torque <= K * clip; usual 0.05-0.5; math.inf disables."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_nonnegative("damping_ratio")
        stiffness = tuple(self.stiffness_nm_per_rad)
        if not stiffness or not all(k >= 0.0 and math.isfinite(k) for k in stiffness):
            raise ValueError(f"JointImpedanceConfig.stiffness_nm_per_rad must be values >= 0, got {stiffness!r}")
        self._check_bounds("error_clip_rad", None)


def _per_joint(name: str, values: Sequence[float], n: int) -> np.ndarray:
    values = tuple(values)
    if len(values) == 1:
        values = values * n
    if len(values) != n:
        raise ValueError(f"JointImpedanceConfig.{name} needs 1 or {n} values (one per joint), got {len(values)}")
    return np.array(values, dtype=float)


class JointImpedanceController(TorqueController):
    """Joint impedance law of the module docstring for the joints of a ``RobotModel``.

    Use: ``reset()``, ``set_target(q_rad)``, ``compute()``, ``status``; ``set_stiffness`` takes one value per
    joint [N*m/rad].
    """

    config: JointImpedanceConfig

    def __init__(self, robot: RobotModel, config: JointImpedanceConfig, dt_s: float) -> None:
        n = robot.n_joints
        super().__init__(
            robot,
            config,
            dt_s,
            _per_joint("stiffness_nm_per_rad", config.stiffness_nm_per_rad, n),
            config.damping_ratio,
        )
        clip = _per_joint("error_clip_rad", config.error_clip_rad, n)
        self._error_high = clip
        self._error_low = -clip
        self._reference = VectorReference(n, config.target_filter_time_constant_s, dt_s)
        self._error = np.zeros(n)
        self._new_target = np.zeros(n)
        self._clamped_target = np.zeros(n)

    def reset(self) -> None:
        """Hold the current joint positions; clear filter and status."""
        self._reference.reset(self.robot.q)
        self._reset_safety()

    def set_target(self, q_rad: np.ndarray | Sequence[float]) -> bool:
        """Command joint positions [rad], kept inside the joint range (less the margin).

        Returns False (refused, previous target kept, counted in ``status``) for NaN or infinite values.
        """
        if np.shape(q_rad) != self._new_target.shape:
            raise ValueError(f"joint target needs shape {self._new_target.shape}, got {np.shape(q_rad)}")
        target = self._new_target
        target[:] = q_rad
        if not math.isfinite(target.sum()):
            return self._command_received(False, False)
        clamped = self._clamped_target
        np.clip(target, self._soft_low, self._soft_high, out=clamped)
        np.subtract(target, clamped, out=target)  # how far outside the range
        clipped = bool(target.any())
        self._reference.set_target(clamped)
        return self._command_received(True, clipped)

    def _hold(self) -> None:
        self._reference.reset(self.robot.q)

    def _law(self) -> None:
        robot, error, tau = self.robot, self._error, self._tau
        self._reference.advance()
        np.subtract(robot.q, self._reference.value, out=error)
        clip_error_(error, self._error_low, self._error_high)
        np.multiply(self._stiffness.value, error, out=tau)
        np.multiply(self._damping, robot.dq, out=self._scratch2)
        np.add(tau, self._scratch2, out=tau)
        np.negative(tau, out=tau)  # -K e - D dq

    @property
    def target_q_rad(self) -> np.ndarray:
        """Commanded joint positions [rad] (copy; after the range clamp)."""
        return self._reference.target.copy()

    @property
    def reference_q_rad(self) -> np.ndarray:
        """Filtered joint reference the springs pull toward [rad] (copy)."""
        return self._reference.value.copy()

    @property
    def clipped_error(self) -> np.ndarray:
        """Last tick's clipped joint error q - q_ref [rad] (copy)."""
        return self._error.copy()
