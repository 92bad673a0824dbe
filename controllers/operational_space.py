"""Operational-space control (Khatib): task-inertia weighted Cartesian PD, one class for sim and real.

Per tick, with e = x - x_ref (clipped per axis, see ``cartesian``) and twist = J dq:

    a      =  -Kp e - Kd twist                 Kd = 2 zeta sqrt(Kp): commanded tool acceleration
    F      =  Lambda a                         Lambda = (J M^-1 J^T)^-1, guarded near singularities
              or [Lambda_p a_p; Lambda_o a_o]  decoupled: each 3x3 block of Lambda^-1 inverted on its own
    tau    =  J^T F + N^T tau_0 (+ bias)

then the shared safety chain of ``controllers.base``. With the bias compensated, the tool then behaves
as a unit mass on a spring of stiffness Kp [1/s^2] with damping Kd per axis: zeta is the true damping
ratio and sqrt(Kp) the natural frequency [rad/s], whatever the arm's configuration (the impedance law's
response depends on the task inertia instead). The price is Lambda, which grows without bound at a
kinematic singularity: its eigenvalues are capped at 1 / ``task_inertia_inv_floor`` there (``status``
reports it). The decoupled form (robosuite's ``uncouple_pos_ori``) inverts the position and orientation
blocks of Lambda^-1 separately, ignoring their coupling: the axes are then unit masses only roughly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from controllers.cartesian import CartesianConfig, CartesianController
from controllers.robot_model import RobotModel
from controllers.task_space import GuardedSpdInverse


@dataclass
class OperationalSpaceConfig(CartesianConfig):
    """Gains and limits of ``OperationalSpaceController``. Limits: ``math.inf`` disables; gains: 0 does."""

    position_gain_per_s2: float = 200.0
    """Kp on position [1/s^2]: tool acceleration per metre of error, = natural frequency^2; usual 50-1000
    (robosuite 150, SERL's MuJoCo sim 200); 0 disables."""
    orientation_gain_per_s2: float = 200.0
    """Kp on orientation [1/s^2]: angular acceleration per radian of rotation-vector error; usual 50-1000; 0
    disables."""
    damping_ratio: float = 1.0
    """zeta in Kd = 2 zeta sqrt(Kp) [-], the true damping ratio of each axis; usual 0.7-1.5."""
    position_error_clip_m: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    """Per-axis bound on the position error [m]: caps the spring's acceleration at Kp * clip and the approach
    speed near sqrt(Kp) * clip / (2 zeta); usual 0.01-0.1; math.inf disables."""
    orientation_error_clip_rad: tuple[float, float, float] = (math.inf, math.inf, math.inf)
    """Per-axis bound on the rotation-vector error [rad]; usual 0.05-0.5; math.inf disables."""
    decoupled: bool = False
    """Weight position and orientation by their own 3x3 task inertias (robosuite's uncouple_pos_ori);
    False uses the full 6x6 Lambda."""
    task_inertia_inv_floor: float = 0.01
    """Singular-value guard: smallest eigenvalue of Lambda^-1 = J M^-1 J^T kept [1/kg, 1/(kg m^2)], so the
    task inertia is at most 1 / floor; a Panda's are 0.01-20 away from singularities; usual 1e-3-0.05;
    must be > 0."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_nonnegative("position_gain_per_s2", "orientation_gain_per_s2", "damping_ratio")
        self._check_bounds("position_error_clip_m", 3)
        self._check_bounds("orientation_error_clip_rad", 3)
        if not (self.task_inertia_inv_floor > 0.0 and math.isfinite(self.task_inertia_inv_floor)):
            raise ValueError(
                "OperationalSpaceConfig.task_inertia_inv_floor must be finite and > 0, "
                f"got {self.task_inertia_inv_floor!r}"
            )


class OperationalSpaceController(CartesianController):
    """Operational-space law of the module docstring, for the tool site of a ``RobotModel``.

    Same use as ``CartesianImpedanceController``: ``reset()``, ``set_target(pos, quat)``, ``compute()``,
    ``status``; ``set_stiffness`` takes [Kp position x 3, Kp orientation x 3] (1/s^2).
    """

    config: OperationalSpaceConfig

    def __init__(self, robot: RobotModel, config: OperationalSpaceConfig, dt_s: float) -> None:
        k_p, k_o = config.position_gain_per_s2, config.orientation_gain_per_s2
        clip = tuple(config.position_error_clip_m) + tuple(config.orientation_error_clip_rad)
        super().__init__(
            robot, config, dt_s, [k_p] * 3 + [k_o] * 3, config.damping_ratio, clip, config.task_inertia_inv_floor
        )
        self._decoupled = config.decoupled
        self._accel = np.zeros(6)
        # Decoupled form: the diagonal 3x3 blocks of Lambda^-1 and their own guarded inverses.
        inertia_inv = self._task.inertia_inv
        self._blocks = (
            (
                inertia_inv[:3, :3],
                GuardedSpdInverse(3, config.task_inertia_inv_floor),
                self._wrench[:3],
                self._accel[:3],
            ),
            (
                inertia_inv[3:, 3:],
                GuardedSpdInverse(3, config.task_inertia_inv_floor),
                self._wrench[3:],
                self._accel[3:],
            ),
        )

    def _law(self) -> None:
        self._clipped_error()
        task = self._task
        task.update()
        guarded = task.update_inertia()

        accel = self._spring_damper(self._accel)  # a = -Kp e - Kd twist

        wrench = self._wrench
        if self._decoupled:
            for block, inverse, wrench_part, accel_part in self._blocks:
                guarded = inverse.factor(block) or guarded
                inverse.solve(wrench_part, accel_part)
        else:
            task.inertia.solve(wrench, accel)
        self.status.inertia_guarded = guarded
        self._apply_wrench(wrench, inertia_current=True)
