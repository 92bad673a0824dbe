"""The in-repo Panda for controller tests: built from panda.xml with MjSpec, stepped like the env steps it.

Options add what a test needs and nothing else: a rigid table top (plane z = 0, the pick-cube scene's
height), MuJoCo gravity compensation on every arm body (what a Panda's firmware does, for the real-arm
path), and the timestep. The integrator is implicitfast, as in the pick-cube scene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

import envs
from controllers.robot_model import RobotModel

# Names as panda.xml spells them; only the asset file is shared with envs.
PANDA_XML = Path(envs.__file__).resolve().parent / "assets" / "panda.xml"
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"motor{i}" for i in range(1, 8))
TCP_SITE = "tcp"
HOME_Q = np.array([0.0, -0.110, 0.0, -2.273, 0.0, 2.163, math.pi / 4])
# q2 = 0 lines up axes 1 and 3 and q3 = pi/2 then folds the arm into the plane x = 0: J loses rank (its
# smallest singular value is 0 to machine precision) while every joint is well inside its range.
SINGULAR_Q = np.array([0.0, 0.0, math.pi / 2, -1.5, 0.0, 1.5, math.pi / 4])


@dataclass
class Arm:
    model: mujoco.MjModel
    data: mujoco.MjData
    robot: RobotModel

    @property
    def ctrl(self) -> np.ndarray:
        return self.data.ctrl[:7]


def make_arm(q: np.ndarray = HOME_Q, table: bool = False, firmware_gravity: bool = False, dt_s: float = 0.002) -> Arm:
    spec = mujoco.MjSpec.from_file(str(PANDA_XML))
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.timestep = dt_s
    if table:
        spec.worldbody.add_geom(
            name="table", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[1.0, 1.0, 0.01], contype=1, conaffinity=1
        )
    if firmware_gravity:
        for body in spec.bodies:
            if body.name not in ("world", "link0"):
                body.gravcomp = 1.0
    model = spec.compile()
    data = mujoco.MjData(model)
    robot = RobotModel(model, data, TCP_SITE, ARM_JOINTS, ARM_ACTUATORS)
    data.qpos[robot.qpos_slice] = q
    data.qpos[model.joint("finger_joint1").qposadr[0]] = 0.04
    data.qpos[model.joint("finger_joint2").qposadr[0]] = 0.04
    act = model.actuator("gripper")
    data.act[model.actuator_actadr[act.id]] = 0.08
    mujoco.mj_forward(model, data)
    return Arm(model, data, robot)


def simulate(arm: Arm, controller, seconds: float, before_tick=None, after_tick=None) -> None:
    """Step the arm as the env does: mj_step1 -> controller -> mj_step2, then leave the state computed.

    ``before_tick(i)`` runs after mj_step1 (state current, before compute: set targets there);
    ``after_tick(i, tau)`` after compute.
    """
    m, d = arm.model, arm.data
    ctrl = arm.ctrl
    for i in range(round(seconds / m.opt.timestep)):
        mujoco.mj_step1(m, d)
        if before_tick is not None:
            before_tick(i)
        tau = controller.compute()
        if after_tick is not None:
            after_tick(i, tau)
        ctrl[:] = tau
        mujoco.mj_step2(m, d)
    mujoco.mj_forward(m, d)


def record_pose(arm: Arm, controller, seconds: float, before_tick=None):
    """Simulate and return (times_s, tcp positions (N, 3), tcp quaternions (N, 4)), sampled after each step."""
    m, d = arm.model, arm.data
    n = round(seconds / m.opt.timestep)
    times, pos, quat = np.zeros(n), np.zeros((n, 3)), np.zeros((n, 4))
    ctrl = arm.ctrl
    for i in range(n):
        mujoco.mj_step1(m, d)
        # mj_step1 computed the pose of the state reached by the previous step.
        times[i] = d.time
        pos[i] = arm.robot.site_pos_world
        arm.robot.site_quat_world(quat[i])
        if before_tick is not None:
            before_tick(i)
        ctrl[:] = controller.compute()
        mujoco.mj_step2(m, d)
    mujoco.mj_forward(m, d)
    return times, pos, quat


def apply_tool_wrench(arm: Arm, force_world: np.ndarray, torque_world: np.ndarray = (0.0, 0.0, 0.0)) -> None:
    """Set qfrc_applied to the joint torques of a wrench acting at the tool site (kept until changed)."""
    m, d = arm.model, arm.data
    d.qfrc_applied[:] = 0.0
    body = m.site_bodyid[arm.robot.site_id]
    mujoco.mj_applyFT(
        m,
        d,
        np.asarray(force_world, dtype=float),
        np.asarray(torque_world, dtype=float),
        d.site_xpos[arm.robot.site_id].copy(),
        body,
        d.qfrc_applied,
    )


# ------------------------------------------------------------------------------------------ the laws
LAWS = ("cartesian_impedance", "operational_space", "joint_impedance")


def make_law(kind: str, arm: Arm, reset: bool = True, **overrides):
    """One of the three laws on ``arm`` at the arm's timestep, its config defaults replaced by ``overrides``."""
    from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
    from controllers.joint_impedance import JointImpedanceConfig, JointImpedanceController
    from controllers.operational_space import OperationalSpaceConfig, OperationalSpaceController

    config_cls, controller_cls = {
        "cartesian_impedance": (CartesianImpedanceConfig, CartesianImpedanceController),
        "operational_space": (OperationalSpaceConfig, OperationalSpaceController),
        "joint_impedance": (JointImpedanceConfig, JointImpedanceController),
    }[kind]
    controller = controller_cls(arm.robot, config_cls(**overrides), arm.model.opt.timestep)
    if reset:
        controller.reset()
    return controller


def pose_target(arm: Arm, offset_m=(0.0, 0.0, 0.0), rotation_rad=(0.0, 0.0, 0.0)):
    """Current tool pose moved by ``offset_m`` (world) and rotated by a world-frame rotation vector."""
    pos = arm.robot.site_pos_world + np.asarray(offset_m, dtype=float)
    quat = arm.robot.site_quat_world().copy()
    angle = float(np.linalg.norm(rotation_rad))
    if angle > 0.0:
        rot = np.zeros(4)
        mujoco.mju_axisAngle2Quat(rot, np.asarray(rotation_rad, dtype=float) / angle, angle)
        mujoco.mju_mulQuat(quat, rot, quat.copy())  # world-frame rotation: left product
    return pos, quat


def command(controller, arm: Arm, offset_m=(0.0, 0.0, 0.0), rotation_rad=(0.0, 0.0, 0.0)) -> bool:
    """Send any law the target "tool moved by offset_m, rotated by rotation_rad" (joint law: through IK)."""
    from controllers.evaluation import inverse_kinematics
    from controllers.joint_impedance import JointImpedanceController

    pos, quat = pose_target(arm, offset_m, rotation_rad)
    if isinstance(controller, JointImpedanceController):
        q = inverse_kinematics(arm.model, TCP_SITE, ARM_JOINTS, pos[None], quat[None], arm.robot.q, iterations=30)
        return controller.set_target(q[0])
    return controller.set_target(pos, quat)
