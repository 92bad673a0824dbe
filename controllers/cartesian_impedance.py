"""Cartesian impedance control with reference limiting (the SERL / franka_ros law), one class for sim and real.

Per tick, with e = x - x_ref (position and orientation error, world frame) and twist = J dq:

    e      <- clip(e, -clip, +clip)                        per axis ("reference limiting")
    e      <- clip(e + k_i * integral(e dt), -clip, +clip)  optional integral action
    F      =  -K e - D twist                               D = 2 zeta sqrt(K)  (unit-mass convention)
    tau    =  J^T F + N^T tau_0 (+ bias)                    N^T = I - J^T Lambda J M^-1  (see ``cartesian``)

then the shared safety chain of ``controllers.base`` (watchdog, joint-limit push, NaN guard, torque-rate
limit, clamp).

- Orientation error: the rotation vector of R R_ref^T (axis * angle [rad], world frame), hemisphere-safe
  (q and -q give the same error). Rotational stiffness is therefore in true N*m/rad; franka_ros/SERL use
  the quaternion vector part sin(theta/2) instead, which halves the effective stiffness near the goal.
- Reference limiting bounds the steady spring force per axis by K * clip (2000 N/m * 1 cm = 20 N) while
  keeping free-space tracking stiff. In free space it also caps the speed near K * clip / D. The
  integral term lives inside the same clip, so the bound holds with it too; it is clamped so that it can
  never ask for more than the clip on its own (anti-windup), and by default restarts at each target.
- The null-space projector is the *dynamically consistent* one (Khatib), so posture torques cause no
  tool acceleration; near a singularity the task inertia it uses is capped (``GuardedSpdInverse``).
- Bias: ``RobotModel.bias_nm`` (gravity + Coriolis in simulation, Coriolis only on a real arm whose
  firmware adds gravity).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from controllers.cartesian import CartesianConfig, CartesianController
from controllers.limits import clamp_, clip_error_
from controllers.robot_model import RobotModel

# Singular-value guard of the null-space projector's task inertia [1/kg, 1/(kg m^2)]. Eigenvalues of
# Lambda^-1 on a Panda are 0.01-20 away from singularities; the guard caps Lambda at 1e4 there.
_TASK_INERTIA_INV_FLOOR = 1e-4


@dataclass
class CartesianImpedanceConfig(CartesianConfig):
    """Gains and limits of ``CartesianImpedanceController``. Limits: ``math.inf`` disables; gains: 0 does."""

    translational_stiffness_n_per_m: float = 2000.0
    """Position spring K_t [N/m], same on x, y, z; usual 200-6000 (SERL 2000); 0 disables."""
    rotational_stiffness_nm_per_rad: float = 150.0
    """Orientation spring K_r [N*m/rad] on the rotation-vector error; usual 10-300 (SERL 150); 0 disables."""
    damping_ratio: float = 1.0
    """zeta in D = 2 zeta sqrt(K) per axis [-], unit-mass convention as franka_ros; usual 0.5-1.5; 0 disables."""
    position_error_clip_m: tuple[float, float, float] = (0.01, 0.01, 0.01)
    """Per-axis bound on the position error [m] (world x, y, z); steady force <= K_t * clip; usual
    0.002-0.1 (SERL 0.01); math.inf disables."""
    orientation_error_clip_rad: tuple[float, float, float] = (0.05, 0.05, 0.05)
    """Per-axis bound on the rotation-vector error [rad] (world axes); steady moment <= K_r * clip; usual
    0.01-0.5 (0.05 with K_r 150 gives SERL's 7.5 N*m); math.inf disables."""
    integral_gain_per_s: float = 0.0
    """Integral action k_i = 1/T_i [1/s]: e <- clip(e + k_i * integral(e dt)), removes a steady error
    (friction, payload) in about T_i without exceeding the clip; usual 0.5-5; 0 disables (SERL default)."""
    reset_integral_on_target: bool = True
    """Zero the integral at each new target (SERL); False keeps it across targets (streamed trajectories)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._check_nonnegative(
            "translational_stiffness_n_per_m", "rotational_stiffness_nm_per_rad", "damping_ratio", "integral_gain_per_s"
        )
        self._check_bounds("position_error_clip_m", 3)
        self._check_bounds("orientation_error_clip_rad", 3)


class CartesianImpedanceController(CartesianController):
    """Cartesian impedance law of the module docstring, for the tool site of a ``RobotModel``.

    Args:
        robot: the arm; must have been built with ``actuator_names`` (its torque limits are the clamp).
        config: gains and limits.
        dt_s: control period [s] (the physics timestep in simulation, 0.001 on a Panda).

    Use: ``reset()`` once the robot state is valid, ``set_target(pos, quat)`` whenever a new target
    arrives, ``compute()`` every tick; ``status`` says what the safety chain did. ``set_stiffness`` takes
    [K_t x 3 (N/m), K_r x 3 (N*m/rad)].
    """

    config: CartesianImpedanceConfig

    def __init__(self, robot: RobotModel, config: CartesianImpedanceConfig, dt_s: float) -> None:
        k_t, k_r = config.translational_stiffness_n_per_m, config.rotational_stiffness_nm_per_rad
        clip = tuple(config.position_error_clip_m) + tuple(config.orientation_error_clip_rad)
        super().__init__(
            robot, config, dt_s, [k_t] * 3 + [k_r] * 3, config.damping_ratio, clip, _TASK_INERTIA_INV_FLOOR
        )
        self._integral_gain = config.integral_gain_per_s
        self._integral = np.zeros(6)  # integral of the clipped error [m s, rad s]
        # Anti-windup: k_i * integral stays within the clip on its own.
        gain = self._integral_gain
        self._integral_high = self._error_high / gain if gain > 0.0 else np.full(6, np.inf)
        self._integral_low = -self._integral_high

    def _on_new_target(self) -> None:
        if self.config.reset_integral_on_target:
            self._integral[:] = 0.0

    def _clear_law_state(self) -> None:
        self._integral[:] = 0.0

    def _law(self) -> None:
        error = self._clipped_error()
        if self._integral_gain > 0.0:
            integral = self._integral
            mujoco.mju_addToScl(integral, error, self.dt_s)
            clamp_(integral, self._integral_low, self._integral_high)
            mujoco.mju_addToScl(error, integral, self._integral_gain)
            clip_error_(error, self._error_low, self._error_high)

        self._task.update()
        self._apply_wrench(self._spring_damper(self._wrench), inertia_current=False)  # F = -K e - D twist
