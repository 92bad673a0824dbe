"""Cartesian impedance control with reference limiting (the SERL / franka_ros law), one class for sim and real.

Per tick, with e = x - x_ref (position and orientation error, world frame) and twist = J dq:

    e      <- clip(e, -clip, +clip)                        per axis ("reference limiting")
    F      =  -K e - D twist                               D = 2 zeta sqrt(K)  (unit-mass convention)
    tau0   =  k_n (q_null - q) - d_n dq                    posture spring in joint space
    tau    =  J^T F + N^T tau0 (+ qfrc_bias)               N^T = I - J^T Lambda J M^-1
    tau    <- rate_limit(tau, tau_prev, rate * dt);  tau <- clamp(tau, actuator limits)

- Orientation error: the rotation vector of R R_ref^T (axis * angle [rad], world frame), from MuJoCo's
  quaternion difference, which takes the shorter way round: q and -q give the same error (hemisphere
  handling). Rotational stiffness is therefore in true N*m/rad; franka_ros/SERL use the quaternion vector
  part sin(theta/2) instead, which halves the effective stiffness near the goal.
- Reference limiting bounds the steady spring force per axis by K * clip (2000 N/m * 1 cm = 20 N) while
  keeping free-space tracking stiff. In free space it also caps the speed near K * clip / D.
- The null-space projector is the *dynamically consistent* one (Khatib): J_bar = M^-1 J^T Lambda with
  Lambda = (J M^-1 J^T)^-1, so posture torques cause no tool acceleration. M^-1 comes from MuJoCo's
  factorisation of the whole mass matrix (mj_solveM); Lambda^-1 is Cholesky-factorised with a floor on
  the pivots, which regularises it near kinematic singularities.
- Bias compensation adds MuJoCo's qfrc_bias (gravity + Coriolis/centrifugal): on in simulation, off for
  a real arm whose firmware compensates gravity itself.
- The reference x_ref follows the commanded target through a first-order filter (time constant tau);
  the torque-rate limit is expressed per second so that it means the same at any tick rate.

Quaternions are (w, x, y, z). ``compute`` allocates nothing and logs nothing; it expects the robot's
kinematics, mass-matrix factorisation and bias forces to be current (after ``mj_step1`` in simulation,
or ``RobotModel.set_joint_state`` on a real arm).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

from controllers.limits import clamp_, clip_error_, first_order_filter_gain, rate_limit_
from controllers.robot_model import RobotModel

# Floor on the Cholesky pivots of Lambda^-1 = J M^-1 J^T [1/kg, 1/(kg m^2)]. Typical pivots on a Panda are
# 0.1-100; near a singularity one goes to zero and the floor caps the task inertia used by the projector.
_TASK_INERTIA_INV_FLOOR = 1e-4


@dataclass
class CartesianImpedanceConfig:
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
    nullspace_stiffness_nm_per_rad: float = 10.0
    """Posture spring k_n [N*m/rad] toward the joint posture held at reset, projected into the task null
    space; usual 0.2-50; 0 disables."""
    nullspace_damping_ratio: float = 1.0
    """zeta_n in d_n = 2 zeta_n sqrt(k_n) [-] for the posture term; usual 0.5-1.5."""
    compensate_bias: bool = True
    """Add MuJoCo's qfrc_bias (gravity + Coriolis) [N*m]: True in simulation, False for a real arm whose
    firmware compensates gravity (e.g. a Panda through libfranka)."""
    torque_rate_limit_nm_per_s: float = 1000.0
    """Max change of each commanded torque [N*m/s]; Panda: 1000 (1 N*m per 1 ms tick); math.inf disables."""
    target_filter_time_constant_s: float = 0.2
    """First-order filter from commanded target to the reference the spring pulls to [s]; SERL's 0.005
    per 1 kHz tick = 0.2; usual 0.01-0.3; 0 disables (the reference jumps to each new target)."""

    def __post_init__(self) -> None:
        for name in (
            "translational_stiffness_n_per_m",
            "rotational_stiffness_nm_per_rad",
            "damping_ratio",
            "nullspace_stiffness_nm_per_rad",
            "nullspace_damping_ratio",
            "target_filter_time_constant_s",
        ):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"CartesianImpedanceConfig.{name} must be finite and >= 0, got {value!r}")
        for name in ("position_error_clip_m", "orientation_error_clip_rad"):
            value = tuple(getattr(self, name))
            if len(value) != 3 or not all(v > 0.0 for v in value):
                raise ValueError(
                    f"CartesianImpedanceConfig.{name} must be 3 values > 0 (math.inf disables), got {value!r}"
                )
        if not self.torque_rate_limit_nm_per_s > 0.0:
            raise ValueError(
                "CartesianImpedanceConfig.torque_rate_limit_nm_per_s must be > 0 (math.inf disables), "
                f"got {self.torque_rate_limit_nm_per_s!r}"
            )


class CartesianImpedanceController:
    """Cartesian impedance law of the module docstring, for the tool site of a ``RobotModel``.

    Args:
        robot: the arm; must have been built with ``actuator_names`` (its torque limits are the clamp).
        config: gains and limits.
        dt_s: control period [s] (the physics timestep in simulation, 0.001 on a Panda).

    Use: ``reset()`` once the robot state is valid, ``set_target(pos, quat)`` whenever a new target
    arrives, ``compute()`` every tick.
    """

    def __init__(self, robot: RobotModel, config: CartesianImpedanceConfig, dt_s: float) -> None:
        if robot.torque_limits_nm is None:
            raise ValueError("RobotModel needs actuator_names so that the controller knows the torque limits")
        if not dt_s > 0.0:
            raise ValueError(f"dt_s must be > 0, got {dt_s!r}")
        self.robot = robot
        self.config = config
        self.dt_s = dt_s
        n = robot.n_joints
        self._m = robot.model
        self._d = robot.data

        k_t = config.translational_stiffness_n_per_m
        k_r = config.rotational_stiffness_nm_per_rad
        stiffness = np.array([k_t] * 3 + [k_r] * 3)
        damping = 2.0 * config.damping_ratio * np.sqrt(stiffness)
        # wrench = gain @ [e; twist] = -K e - D twist, one matrix product per tick.
        self._gain = np.hstack([-np.diag(stiffness), -np.diag(damping)])  # (6, 12)
        clip = np.array(tuple(config.position_error_clip_m) + tuple(config.orientation_error_clip_rad))
        self._error_high = clip
        self._error_low = -clip

        self._k_null = config.nullspace_stiffness_nm_per_rad
        self._null_damping = 2.0 * config.nullspace_damping_ratio * math.sqrt(self._k_null)
        self._compensate_bias = config.compensate_bias
        self._tau_low = np.ascontiguousarray(robot.torque_limits_nm[:, 0])
        self._tau_high = np.ascontiguousarray(robot.torque_limits_nm[:, 1])
        self._max_tau_step = config.torque_rate_limit_nm_per_s * dt_s
        self._alpha = first_order_filter_gain(config.target_filter_time_constant_s, dt_s)

        # Commanded target and the filter's state. Between two targets the first-order filter has the
        # closed form ref(k) = target + beta^k (ref(0) - target), with beta = 1 - alpha (for the orientation,
        # the same decay along the geodesic: q_ref(k) = q_target * exp(beta^k v0)), so each tick only scales
        # the offset held at the last set_target instead of updating a recursive state.
        self._beta = 1.0 - self._alpha
        self._target_pos = np.zeros(3)
        self._target_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._ref_offset_pos = np.zeros(3)  # ref(0) - target [m]
        self._ref_offset_rot = np.zeros(3)  # v0: q_ref(0) = q_target * exp(v0), target frame [rad]
        self._ref_decay = 0.0  # beta^k; 0 once the reference has reached the target
        self._ref_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._q_null = np.zeros(n)

        # Work arrays. Joint-space vectors are full length nv (``*_full``, zero outside the arm) so that
        # products with the 6 x nv Jacobian run on contiguous memory; ``_tau``, ``_tau_null`` view the arm.
        nv = robot.model.nv
        dofs = robot.dof_slice
        self._state = np.zeros(12)  # [clipped error (6); twist (6)]
        self._error = self._state[:6]
        self._error_pos = self._state[:3]
        self._error_rot = self._state[3:6]
        self._twist = self._state[6:]
        self._wrench = np.zeros(6)
        self._quat = np.zeros(4)
        self._vec3 = np.zeros(3)
        self._vec6 = np.zeros(6)
        self._vec6b = np.zeros(6)
        self._tau_null_full = np.zeros(nv)
        self._tau_null = self._tau_null_full[dofs]
        self._null_offset = np.zeros(n)  # k_n q_null
        self._jac_minv = np.zeros((6, nv))  # J M^-1 (rows of (M^-1 J^T)^T)
        self._task_inertia_inv = np.zeros((6, 6))
        self._jac_full_t = robot.jac_full.T  # view, filled by mj_jacSite each tick
        self._qvel = robot.data.qvel
        self._scratch_n = np.zeros(n)
        # Two torque buffers swapped each tick: the last command is the rate limiter's base.
        self._tau_full = np.zeros(nv)
        self._tau_full_prev = np.zeros(nv)
        self._tau = self._tau_full[dofs]
        self._tau_prev = self._tau_full_prev[dofs]

    # ------------------------------------------------------------------------------------ commands
    def reset(self, nullspace_posture_rad: np.ndarray | None = None) -> None:
        """Hold the current tool pose: target = reference = current site pose; clear the filter state.

        The posture for the null-space spring is ``nullspace_posture_rad`` or the current joint
        positions. The rate limiter starts from the torque that holds the arm still (the bias forces when
        compensating them), so the first tick is not rate limited away from equilibrium.
        """
        robot = self.robot
        self._target_pos[:] = robot.site_pos_world
        robot.site_quat_world(self._target_quat)
        self._ref_quat[:] = self._target_quat
        self._ref_offset_pos[:] = 0.0
        self._ref_offset_rot[:] = 0.0
        self._ref_decay = 0.0
        self._q_null[:] = robot.q if nullspace_posture_rad is None else nullspace_posture_rad
        np.multiply(self._q_null, self._k_null, out=self._null_offset)
        if self.config.compensate_bias:
            self._tau_prev[:] = robot.bias_nm
        else:
            self._tau_prev[:] = 0.0
        clamp_(self._tau_prev, self._tau_low, self._tau_high)
        self._tau[:] = self._tau_prev

    def set_target(self, pos_world: np.ndarray, quat_world: np.ndarray) -> None:
        """Command a tool pose: position [m] and unit quaternion (w, x, y, z), world frame.

        The spring pulls toward the filtered reference, which approaches this target with the configured
        time constant, starting from where the reference is now (immediately when the filter is disabled).
        """
        pos = np.asarray(pos_world, dtype=float)
        quat = np.asarray(quat_world, dtype=float)
        if pos.shape != (3,) or quat.shape != (4,) or not (np.all(np.isfinite(pos)) and np.all(np.isfinite(quat))):
            raise ValueError(f"target needs a finite position (3,) and quaternion (4,), got {pos!r} and {quat!r}")
        norm = float(np.linalg.norm(quat))
        if norm < 1e-9:
            raise ValueError(f"target quaternion must be non-zero (w, x, y, z), got {quat!r}")
        if self._beta > 0.0:
            # Re-anchor the filter at the current reference.
            ref_pos = self.reference_pos_world
            ref_quat = self._ref_quat.copy()
            np.multiply(quat, 1.0 / norm, out=self._target_quat)
            np.subtract(ref_pos, pos, out=self._ref_offset_pos)
            mujoco.mju_subQuat(self._ref_offset_rot, ref_quat, self._target_quat)
            self._ref_decay = 1.0
        else:
            np.multiply(quat, 1.0 / norm, out=self._target_quat)
            self._ref_quat[:] = self._target_quat
        self._target_pos[:] = pos

    # -------------------------------------------------------------------------------------- tick
    def compute(self) -> np.ndarray:
        """One control tick: joint torques [N*m] (internal buffer, valid until the next call)."""
        m, d, robot = self._m, self._d, self.robot
        error_pos, ref_quat, vec3 = self._error_pos, self._ref_quat, self._vec3

        # Reference filter, advanced one tick, folded into the position error: e_p = x - ref.
        np.subtract(robot.site_pos_world, self._target_pos, out=error_pos)
        decay = self._ref_decay
        if decay != 0.0:
            decay *= self._beta
            if decay < 1e-12:  # reached: stop paying for the filter
                decay = 0.0
            self._ref_decay = decay
            mujoco.mju_addToScl(error_pos, self._ref_offset_pos, -decay)
            ref_quat[:] = self._target_quat
            mujoco.mju_quatIntegrate(ref_quat, self._ref_offset_rot, decay)

        # Orientation error: rotation vector of R R_ref^T in the world frame.
        quat = self._quat
        mujoco.mju_mat2Quat(quat, robot.site_xmat_world)
        mujoco.mju_subQuat(vec3, quat, ref_quat)  # q = q_ref * exp(vec3): error in the reference frame
        mujoco.mju_rotVecQuat(self._error_rot, vec3, ref_quat)  # ... rotated to the world frame
        clip_error_(self._error, self._error_low, self._error_high)

        # Twist J dq and task wrench -K e - D twist.
        jac_full = robot.jac_full
        mujoco.mj_jacSite(m, d, robot.jac_lin_world, robot.jac_ang_world, robot.site_id)
        np.dot(jac_full, self._qvel, out=self._twist)
        wrench = self._wrench
        np.dot(self._gain, self._state, out=wrench)

        # Posture torque tau0 = k_n q_null - k_n q - d_n dq, projected: N^T tau0 = tau0 - J^T Lambda J M^-1 tau0.
        tau_null = self._tau_null
        k_null = self._k_null
        if k_null > 0.0:
            mujoco.mju_addScl(tau_null, self._null_offset, robot.q, -k_null)
            mujoco.mju_addToScl(tau_null, robot.dq, -self._null_damping)
            jac_minv, task_inertia_inv, vec6 = self._jac_minv, self._task_inertia_inv, self._vec6
            mujoco.mj_solveM(m, d, jac_minv, jac_full)
            mujoco.mju_mulMatMatT(task_inertia_inv, jac_minv, jac_full)
            mujoco.mju_cholFactor(task_inertia_inv, _TASK_INERTIA_INV_FLOOR)
            np.dot(jac_minv, self._tau_null_full, out=vec6)
            mujoco.mju_cholSolve(self._vec6b, task_inertia_inv, vec6)
            np.subtract(wrench, self._vec6b, out=wrench)

        np.dot(self._jac_full_t, wrench, out=self._tau_full)
        tau = self._tau
        if k_null > 0.0:
            np.add(tau, tau_null, out=tau)
        if self._compensate_bias:
            np.add(tau, robot.bias_nm, out=tau)

        # Safety: torque-rate limit against the last command, then the actuator limits.
        rate_limit_(tau, self._tau_prev, self._max_tau_step, self._scratch_n)
        clamp_(tau, self._tau_low, self._tau_high)
        # This command becomes the rate limiter's base; the other buffer is overwritten next tick.
        self._tau_full, self._tau_full_prev = self._tau_full_prev, self._tau_full
        self._tau, self._tau_prev = self._tau_prev, tau
        return tau

    # -------------------------------------------------------------------------------- inspection
    @property
    def target_pos_world(self) -> np.ndarray:
        """Commanded tool position [m] (copy)."""
        return self._target_pos.copy()

    @property
    def target_quat_world(self) -> np.ndarray:
        """Commanded tool orientation (w, x, y, z) (copy)."""
        return self._target_quat.copy()

    @property
    def reference_pos_world(self) -> np.ndarray:
        """Filtered reference position the spring pulls toward [m] (copy)."""
        return self._target_pos + self._ref_decay * self._ref_offset_pos

    @property
    def reference_quat_world(self) -> np.ndarray:
        """Filtered reference orientation (w, x, y, z) (copy)."""
        return self._ref_quat.copy()

    @property
    def clipped_error(self) -> np.ndarray:
        """Last tick's clipped [position m; rotation-vector rad] error, current minus reference (copy)."""
        return self._error.copy()

    @property
    def last_torque_nm(self) -> np.ndarray:
        """Last commanded joint torques [N*m] (copy)."""
        return self._tau_prev.copy()
