"""Kinematics and dynamics of an MJCF arm, computed by MuJoCo, for one tool site and a chain of joints.

Quaternions are (w, x, y, z), as MuJoCo stores them. Jacobians are 6 x n with rows
[linear; angular], in the world frame, for the tool site.

Two ways to keep the numbers current:
- in simulation the physics already computes them: after ``mj_step1`` (or ``mj_forward``) the site
  pose, the factorised mass matrix and the bias forces in ``MjData`` are valid, and this class only reads
  them through views;
- for a real arm, ``set_joint_state(q, dq)`` writes the measured joint state into a private ``MjData``
  and runs just the MuJoCo stages the controllers need (no collision detection, no integration). When
  the arm's firmware compensates gravity itself (a Panda through libfranka), build the model with
  ``firmware_compensates_gravity=True``: ``bias_nm`` then holds the Coriolis/centrifugal torques only.

Everything is preallocated; the per-tick methods allocate nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import mujoco
import numpy as np


class RobotModel:
    """Named site and joints of an MJCF arm; views into ``MjData`` and in-place MuJoCo computations.

    Args:
        model: compiled MuJoCo model.
        data: its data; the views below point into it, so keep it alive and do not replace it.
        site_name: tool site, e.g. ``"tcp"``.
        joint_names: the arm's hinge/slide joints in chain order (their dofs must be consecutive, which
            is the case for a serial chain written in one MJCF subtree).
        actuator_names: optional torque actuators, one per joint, whose ``ctrlrange`` gives the torque
            limits [N*m].
        firmware_compensates_gravity: real-arm path only (``set_joint_state``): leave gravity out of
            ``bias_nm`` because the robot adds it to every command itself.
    """

    def __init__(
        self,
        model: mujoco.MjModel,
        data: mujoco.MjData,
        site_name: str,
        joint_names: Sequence[str],
        actuator_names: Sequence[str] | None = None,
        firmware_compensates_gravity: bool = False,
    ) -> None:
        self.model = model
        self.data = data
        self.site_name = site_name
        self.joint_names = tuple(joint_names)
        self.site_id = _named_id(model, mujoco.mjtObj.mjOBJ_SITE, site_name, "site")
        joint_ids = [_named_id(model, mujoco.mjtObj.mjOBJ_JOINT, n, "joint") for n in self.joint_names]
        for name, jid in zip(self.joint_names, joint_ids, strict=True):
            if int(model.jnt_type[jid]) not in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
                raise ValueError(f"joint '{name}' must be a hinge or slide joint (one dof)")
        qpos_adr = np.array([model.jnt_qposadr[j] for j in joint_ids])
        dof_adr = np.array([model.jnt_dofadr[j] for j in joint_ids])
        n = len(joint_ids)
        if n == 0 or np.any(np.diff(qpos_adr) != 1) or np.any(np.diff(dof_adr) != 1):
            raise ValueError(
                f"joints {list(self.joint_names)} must be a non-empty chain with consecutive qpos/dof "
                f"addresses (got qpos {qpos_adr.tolist()}, dof {dof_adr.tolist()}); list them in chain order"
            )
        self.n_joints = n
        #: slices of the arm's coordinates in qpos and of its dofs in qvel / qfrc_* / Jacobian columns.
        self.qpos_slice = slice(int(qpos_adr[0]), int(qpos_adr[0]) + n)
        self.dof_slice = slice(int(dof_adr[0]), int(dof_adr[0]) + n)

        # Views into MjData: contiguous slices, valid as long as ``data`` lives.
        self.q: np.ndarray = data.qpos[self.qpos_slice]
        self.dq: np.ndarray = data.qvel[self.dof_slice]
        self.firmware_compensates_gravity = firmware_compensates_gravity
        #: torques that cancel the arm's own dynamics at zero acceleration [N*m]: gravity + Coriolis (a view of
        #: qfrc_bias), or Coriolis only (own array, filled by set_joint_state) when the firmware adds gravity.
        self._qfrc_bias_arm = data.qfrc_bias[self.dof_slice]
        self.bias_nm: np.ndarray = np.zeros(n) if firmware_compensates_gravity else self._qfrc_bias_arm
        self._gravity_nm = np.zeros(n)
        self.site_pos_world: np.ndarray = data.site_xpos[self.site_id]
        self.site_xmat_world: np.ndarray = data.site_xmat[self.site_id]  # 9 values, row-major

        nv = model.nv
        #: full 6 x nv Jacobian [linear; angular]; ``jac`` is its 6 x n arm block (a view).
        self.jac_full = np.zeros((6, nv))
        self.jac = self.jac_full[:, self.dof_slice]
        self.jac_lin_world = self.jac_full[:3]  # row views that mj_jacSite fills in place
        self.jac_ang_world = self.jac_full[3:]
        self._unit = np.zeros(nv)
        self._column = np.zeros(nv)
        self._mass_arm = np.zeros((n, n))
        self._quat = np.zeros(4)

        #: joint position limits [rad], (n, 2) lower/upper; +-inf for joints without a range.
        self.joint_limits_rad = np.tile([-np.inf, np.inf], (n, 1))
        for i, jid in enumerate(joint_ids):
            if model.jnt_limited[jid]:
                self.joint_limits_rad[i] = model.jnt_range[jid]

        self.torque_limits_nm: np.ndarray | None = None
        if actuator_names is not None:
            self.torque_limits_nm = self._torque_limits(list(actuator_names), dof_adr)

    # ------------------------------------------------------------------------------------------ state
    def set_joint_state(self, q: np.ndarray, dq: np.ndarray) -> None:
        """Real-arm path: load measured q [rad], dq [rad/s] and compute pose, M, its factor and bias.

        Runs forward kinematics, COM positions, the composite-rigid-body mass matrix and its factorisation
        and the recursive Newton-Euler bias forces (gravity + Coriolis/centrifugal), i.e. the subset of
        ``mj_step1`` that the controllers read. Other joints (gripper, objects) keep their values.
        With ``firmware_compensates_gravity`` the bias is evaluated twice, at rest and moving, and
        ``bias_nm`` gets the difference: the Coriolis/centrifugal torques C(q, dq) dq.
        """
        m, d = self.model, self.data
        self.q[:] = q
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)
        _make_mass_matrix(m, d)
        mujoco.mj_factorM(m, d)
        if self.firmware_compensates_gravity:
            self.dq[:] = 0.0
            mujoco.mj_comVel(m, d)
            mujoco.mj_rne(m, d, 0, d.qfrc_bias)
            self._gravity_nm[:] = self._qfrc_bias_arm
        self.dq[:] = dq
        mujoco.mj_comVel(m, d)
        mujoco.mj_rne(m, d, 0, d.qfrc_bias)
        if self.firmware_compensates_gravity:
            np.subtract(self._qfrc_bias_arm, self._gravity_nm, out=self.bias_nm)

    # ------------------------------------------------------------------------------------ kinematics
    def update_jacobian(self) -> np.ndarray:
        """Fill and return the 6 x n site Jacobian (view of ``jac_full``); needs current kinematics."""
        mujoco.mj_jacSite(self.model, self.data, self.jac_lin_world, self.jac_ang_world, self.site_id)
        return self.jac

    def site_quat_world(self, out: np.ndarray | None = None) -> np.ndarray:
        """Site orientation as a unit quaternion (w, x, y, z), in ``out`` or an internal buffer."""
        out = self._quat if out is None else out
        mujoco.mju_mat2Quat(out, self.site_xmat_world)
        return out

    def site_twist_world(self, out: np.ndarray) -> np.ndarray:
        """Site twist [v; w] in the world frame = J dq; call ``update_jacobian`` first."""
        np.matmul(self.jac, self.dq, out=out)
        return out

    # -------------------------------------------------------------------------------------- dynamics
    def mass_matrix(self) -> np.ndarray:
        """Arm block of the joint-space mass matrix (n x n, includes armature); internal buffer.

        Built column by column with mj_mulM (M times unit vectors): not for the control tick, where the
        factorisation (``solve_mass``) is what the laws need.
        """
        unit, column = self._unit, self._column
        for i in range(self.n_joints):
            unit[:] = 0.0
            unit[self.dof_slice.start + i] = 1.0
            mujoco.mj_mulM(self.model, self.data, column, unit)
            self._mass_arm[:, i] = column[self.dof_slice]
        return self._mass_arm

    def solve_mass(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """x = M^-1 y for each row of y (rows of length nv), with MuJoCo's factorisation; in place."""
        mujoco.mj_solveM(self.model, self.data, x, y)
        return x

    # ----------------------------------------------------------------------------------------- setup
    def _torque_limits(self, actuator_names: list[str], dof_adr: np.ndarray) -> np.ndarray:
        m = self.model
        if len(actuator_names) != self.n_joints:
            raise ValueError(f"need one actuator per joint: {len(actuator_names)} actuators for {self.n_joints} joints")
        limits = np.zeros((self.n_joints, 2))
        for i, name in enumerate(actuator_names):
            aid = _named_id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, name, "actuator")
            joint_id = m.actuator_trnid[aid, 0]
            if int(m.actuator_trntype[aid]) != int(mujoco.mjtTrn.mjTRN_JOINT) or m.jnt_dofadr[joint_id] != dof_adr[i]:
                raise ValueError(f"actuator '{name}' must drive joint '{self.joint_names[i]}' directly")
            if not m.actuator_ctrllimited[aid]:
                raise ValueError(f"actuator '{name}' needs a ctrlrange (the joint's torque limit)")
            limits[i] = np.sort(m.actuator_ctrlrange[aid] * m.actuator_gear[aid, 0])
        return limits


# MuJoCo >= 3.3 assembles qM in mj_makeM; older releases did it in mj_crb.
_make_mass_matrix = getattr(mujoco, "mj_makeM", mujoco.mj_crb)


def _named_id(model: mujoco.MjModel, obj: mujoco.mjtObj, name: str, kind: str) -> int:
    idx = mujoco.mj_name2id(model, obj, name)
    if idx < 0:
        raise ValueError(f"model has no {kind} named '{name}'")
    return int(idx)
