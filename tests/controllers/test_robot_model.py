import mujoco
import numpy as np
import pytest

from controllers.robot_model import RobotModel
from tests.controllers.panda_arm import ARM_ACTUATORS, ARM_JOINTS, HOME_Q, make_arm


def test_published_forward_kinematics():
    # Franka's "ready" pose puts the TCP at (0.3069, 0, 0.4869) pointing straight down (reference 6.1).
    arm = make_arm(q=np.array([0.0, -np.pi / 4, 0.0, -3 * np.pi / 4, 0.0, np.pi / 2, np.pi / 4]))
    np.testing.assert_allclose(arm.robot.site_pos_world, [0.3069, 0.0, 0.4869], atol=1e-4)
    np.testing.assert_allclose(arm.robot.site_xmat_world.reshape(3, 3), np.diag([1, -1, -1]), atol=1e-6)
    assert arm.model.body_subtreemass[arm.model.body("link0").id] == pytest.approx(17.45, abs=0.01)


def test_jacobian_matches_finite_differences(arm):
    robot, model, data = arm.robot, arm.model, arm.data
    jac = robot.update_jacobian().copy()
    pos0 = robot.site_pos_world.copy()
    quat0 = robot.site_quat_world().copy()
    eps = 1e-6
    for i in range(robot.n_joints):
        data.qpos[robot.qpos_slice] = HOME_Q
        data.qpos[robot.qpos_slice.start + i] += eps
        mujoco.mj_kinematics(model, data)
        dpos = (robot.site_pos_world - pos0) / eps
        drot = np.zeros(3)
        mujoco.mju_subQuat(drot, robot.site_quat_world(), quat0)  # local frame
        rot0 = np.zeros(9)
        mujoco.mju_quat2Mat(rot0, quat0)
        np.testing.assert_allclose(dpos, jac[:3, i], atol=1e-5)
        np.testing.assert_allclose(rot0.reshape(3, 3) @ drot / eps, jac[3:, i], atol=1e-5)


def test_real_arm_path_reproduces_the_simulator(arm):
    """set_joint_state on a second MjData gives the same M, bias and pose as mj_forward."""
    rng = np.random.default_rng(0)
    q = HOME_Q + rng.uniform(-0.3, 0.3, 7)
    dq = rng.uniform(-1.0, 1.0, 7)
    arm.data.qpos[arm.robot.qpos_slice] = q
    arm.data.qvel[arm.robot.dof_slice] = dq
    mujoco.mj_forward(arm.model, arm.data)

    twin = RobotModel(arm.model, mujoco.MjData(arm.model), "tcp", ARM_JOINTS, ARM_ACTUATORS)
    twin.data.qpos[:] = arm.data.qpos  # same gripper opening
    twin.set_joint_state(q, dq)
    np.testing.assert_allclose(twin.bias_nm, arm.robot.bias_nm, atol=1e-10)
    np.testing.assert_allclose(twin.mass_matrix(), arm.robot.mass_matrix(), atol=1e-12)
    np.testing.assert_allclose(twin.site_pos_world, arm.robot.site_pos_world, atol=1e-12)
    x_twin, x_sim = np.zeros((1, arm.model.nv)), np.zeros((1, arm.model.nv))
    y = np.ones((1, arm.model.nv))
    np.testing.assert_allclose(twin.solve_mass(x_twin, y), arm.robot.solve_mass(x_sim, y), atol=1e-10)


def test_torque_limits_come_from_the_actuators(arm):
    np.testing.assert_array_equal(arm.robot.torque_limits_nm[:, 1], [87, 87, 87, 87, 12, 12, 12])
    np.testing.assert_array_equal(arm.robot.torque_limits_nm[:, 0], [-87, -87, -87, -87, -12, -12, -12])


def test_bad_names_and_orders_are_rejected(arm):
    with pytest.raises(ValueError, match="no site named 'flange'"):
        RobotModel(arm.model, arm.data, "flange", ARM_JOINTS)
    with pytest.raises(ValueError, match="no joint named 'joint8'"):
        RobotModel(arm.model, arm.data, "tcp", (*ARM_JOINTS, "joint8"))
    with pytest.raises(ValueError, match="consecutive"):
        RobotModel(arm.model, arm.data, "tcp", ARM_JOINTS[::-1])
    with pytest.raises(ValueError, match="must drive joint 'joint1'"):
        RobotModel(arm.model, arm.data, "tcp", ARM_JOINTS, ARM_ACTUATORS[::-1])


def test_firmware_gravity_leaves_only_coriolis_in_the_bias(arm):
    """With firmware_compensates_gravity, bias = C(q, dq) dq: zero at rest, and the difference between
    MuJoCo's bias moving and at rest otherwise (gravity alone at rest)."""
    rng = np.random.default_rng(1)
    q = HOME_Q + rng.uniform(-0.3, 0.3, 7)
    dq = rng.uniform(-1.0, 1.0, 7)
    full = RobotModel(arm.model, mujoco.MjData(arm.model), "tcp", ARM_JOINTS, ARM_ACTUATORS)
    coriolis = RobotModel(
        arm.model, mujoco.MjData(arm.model), "tcp", ARM_JOINTS, ARM_ACTUATORS, firmware_compensates_gravity=True
    )
    full.set_joint_state(q, np.zeros(7))
    gravity = full.bias_nm.copy()
    full.set_joint_state(q, dq)
    coriolis.set_joint_state(q, dq)
    np.testing.assert_allclose(coriolis.bias_nm, full.bias_nm - gravity, atol=1e-10)
    assert np.abs(gravity).max() > 10.0  # gravity was really there to leave out
    coriolis.set_joint_state(q, np.zeros(7))
    np.testing.assert_allclose(coriolis.bias_nm, 0.0, atol=1e-12)


def test_joint_limits_come_from_the_joint_ranges(arm):
    np.testing.assert_allclose(arm.robot.joint_limits_rad[3], [-3.0718, -0.0698])
    np.testing.assert_allclose(arm.robot.joint_limits_rad[5], [-0.0175, 3.7525])
