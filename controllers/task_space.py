"""Task-space quantities shared by the Cartesian laws: Jacobian and twist, task inertia, null-space posture.

Notation (reference 1): J (6 x n, [linear; angular], world frame, tool site), M joint-space mass matrix,
Lambda = (J M^-1 J^T)^-1 task inertia, J_bar = M^-1 J^T Lambda the dynamically consistent inverse and
N^T = I - J^T J_bar^T the null-space projector whose torques cause no tool acceleration (Khatib).

M^-1 comes from MuJoCo's factorisation of the whole mass matrix (``mj_solveM``), never from an explicit
inverse. Per-tick methods allocate nothing, except the singular-value guard's eigen-decomposition, which
runs only near a kinematic singularity.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from controllers.robot_model import RobotModel

# The eigenvalue estimate is refreshed every tick when it is within this factor of the floor, else every
# _REFRESH_TICKS ticks: a Panda at full joint speed (2.6 rad/s) cannot bring Lambda^-1's smallest eigenvalue
# from 4x the floor to the floor in 8 ticks (8-16 ms), so skipping costs no protection and saves ~2 us/tick.
_REFRESH_MARGIN = 4.0
_REFRESH_TICKS = 8


class GuardedSpdInverse:
    """y = A^-1 x for a symmetric positive semi-definite A (up to 6 x 6), with A's eigenvalues floored.

    The floor is the singular-value guard: near a kinematic singularity an eigenvalue of Lambda^-1 = J M^-1 J^T
    goes to zero and Lambda to infinity; raising it to ``floor`` caps the task inertia at 1 / floor along that
    direction, continuously (the guarded inverse equals the exact one while every eigenvalue is >= floor).

    - Fast path: Cholesky (``mju_cholFactor``). The smallest eigenvalue is tracked with one step of inverse
      iteration per factorisation, warm-started from the last one: for a unit probe x, 1 / |A^-1 x| bounds
      it from above and converges to it, fastest exactly when it is small (far above the floor, only
      every 8th factorisation refreshes it).
    - Guarded path, when that estimate is below the floor or the factorisation loses rank: numpy's ``eigh``
      (allocates, about 10 us), eigenvalues raised to the floor, inverse stored densely.

    Args:
        size: n of the n x n matrices.
        floor: smallest eigenvalue kept [units of A]; 0 would disable the guard, so it must be > 0.
    """

    def __init__(self, size: int, floor: float) -> None:
        if not floor > 0.0:
            raise ValueError(f"eigenvalue floor must be > 0, got {floor!r}")
        self.size = size
        self.floor = floor
        self._factor = np.zeros((size, size))
        self._dense_inverse = np.zeros((size, size))
        self._probe = np.full(size, 1.0 / math.sqrt(size))  # unit vector, estimate of the softest direction
        self._solved = np.zeros(size)
        self._ticks_to_refresh = 0
        #: True when the last factorisation needed the guard.
        self.guarded = False
        #: estimate of A's smallest eigenvalue after the last factorisation (exact when guarded).
        self.min_eigenvalue = math.inf

    def factor(self, mat: np.ndarray) -> bool:
        """Prepare solves with ``mat`` (not modified); returns True when the guard was needed."""
        factor, probe, solved = self._factor, self._probe, self._solved
        factor[:] = mat
        rank = mujoco.mju_cholFactor(factor, self.floor)
        if rank == self.size:
            self._ticks_to_refresh -= 1
            if self._ticks_to_refresh <= 0 or self.min_eigenvalue < _REFRESH_MARGIN * self.floor:
                mujoco.mju_cholSolve(solved, factor, probe)  # inverse iteration: solved = A^-1 probe
                inv_norm = 1.0 / math.sqrt(np.dot(solved, solved))
                self.min_eigenvalue = inv_norm
                np.multiply(solved, inv_norm, out=probe)
                self._ticks_to_refresh = _REFRESH_TICKS
            if self.min_eigenvalue >= self.floor:
                self.guarded = False
                return False
        eigenvalues, vectors = np.linalg.eigh(mat)  # allocates; only near a singularity
        self.min_eigenvalue = float(eigenvalues[0])
        self._ticks_to_refresh = 0
        probe[:] = vectors[:, 0]
        np.maximum(eigenvalues, self.floor, out=eigenvalues)
        np.matmul(vectors / eigenvalues, vectors.T, out=self._dense_inverse)
        self.guarded = True
        return True

    def solve(self, out: np.ndarray, rhs: np.ndarray) -> np.ndarray:
        """out = A_guarded^-1 rhs."""
        if self.guarded:
            np.dot(self._dense_inverse, rhs, out=out)
        else:
            mujoco.mju_cholSolve(out, self._factor, rhs)
        return out


class TaskSpace:
    """Jacobian, twist and task inertia of the tool site of a ``RobotModel``; the J^T torque assembly.

    Joint-space vectors are full length nv (zero outside the arm) so that products with the 6 x nv
    Jacobian run on contiguous memory.

    Args:
        robot: the arm.
        inertia_inv_floor: singular-value guard on Lambda^-1 [1/kg, 1/(kg m^2)] (see ``GuardedSpdInverse``).
        twist: optional 6-vector to hold the twist (a view into the caller's work array).
    """

    def __init__(self, robot: RobotModel, inertia_inv_floor: float, twist: np.ndarray | None = None) -> None:
        self.robot = robot
        nv = robot.model.nv
        self.jac_full = robot.jac_full  # 6 x nv, filled by mj_jacSite
        self._jac_full_t = robot.jac_full.T
        self._qvel = robot.data.qvel
        #: tool twist [v (m/s); w (rad/s)], world frame.
        self.twist = np.zeros(6) if twist is None else twist
        self.jac_minv = np.zeros((6, nv))  # J M^-1
        self.inertia_inv = np.zeros((6, 6))  # Lambda^-1 = J M^-1 J^T
        self.inertia = GuardedSpdInverse(6, inertia_inv_floor)
        self._vec6 = np.zeros(6)
        self._vec6b = np.zeros(6)

    def update(self) -> None:
        """Jacobian and twist J dq for the current kinematics."""
        robot = self.robot
        mujoco.mj_jacSite(robot.model, robot.data, robot.jac_lin_world, robot.jac_ang_world, robot.site_id)
        np.dot(self.jac_full, self._qvel, out=self.twist)

    def update_inertia(self) -> bool:
        """Lambda^-1 = J M^-1 J^T and its guarded factorisation; call after ``update``. True when guarded."""
        robot = self.robot
        mujoco.mj_solveM(robot.model, robot.data, self.jac_minv, self.jac_full)
        mujoco.mju_mulMatMatT(self.inertia_inv, self.jac_minv, self.jac_full)
        return self.inertia.factor(self.inertia_inv)

    def torque(self, tau_full: np.ndarray, wrench: np.ndarray, posture: NullSpacePosture | None) -> np.ndarray:
        """tau = J^T wrench + N^T tau_0 with the posture torque tau_0 (skipped when None); ``wrench`` is consumed.

        N^T tau_0 = tau_0 - J^T Lambda J M^-1 tau_0, folded into the wrench so that J^T is applied once.
        Needs ``update_inertia`` when a posture is given.
        """
        if posture is not None:
            np.dot(self.jac_minv, posture.tau_full, out=self._vec6)
            self.inertia.solve(self._vec6b, self._vec6)
            np.subtract(wrench, self._vec6b, out=wrench)
        np.dot(self._jac_full_t, wrench, out=tau_full)
        if posture is not None:
            np.add(tau_full, posture.tau_full, out=tau_full)
        return tau_full


class NullSpacePosture:
    """Joint-space posture spring tau_0 = k_n (q_0 - q) - d_n dq, d_n = 2 zeta_n sqrt(k_n) (unit-inertia convention).

    Args:
        robot: the arm.
        stiffness_nm_per_rad: k_n [N*m/rad]; 0 disables (``enabled`` is then False).
        damping_ratio: zeta_n [-].
    """

    def __init__(self, robot: RobotModel, stiffness_nm_per_rad: float, damping_ratio: float) -> None:
        self.robot = robot
        self.stiffness = stiffness_nm_per_rad
        self.damping = 2.0 * damping_ratio * math.sqrt(stiffness_nm_per_rad)
        self.enabled = stiffness_nm_per_rad > 0.0
        self.posture_rad = np.zeros(robot.n_joints)
        self._offset = np.zeros(robot.n_joints)  # k_n q_0
        #: tau_0, full length nv (zero outside the arm); ``tau`` views the arm.
        self.tau_full = np.zeros(robot.model.nv)
        self.tau = self.tau_full[robot.dof_slice]

    def reset(self, posture_rad: np.ndarray) -> None:
        """Set q_0 [rad]."""
        self.posture_rad[:] = posture_rad
        np.multiply(self.posture_rad, self.stiffness, out=self._offset)

    def update(self) -> np.ndarray:
        """tau_0 for the current joint state."""
        tau, robot = self.tau, self.robot
        mujoco.mju_addScl(tau, self._offset, robot.q, -self.stiffness)
        mujoco.mju_addToScl(tau, robot.dq, -self.damping)
        return tau
