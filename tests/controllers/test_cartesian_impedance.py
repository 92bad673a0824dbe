import dataclasses
import math

import mujoco
import numpy as np
import pytest

from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController

DT_S = 0.002
# Unfiltered, not rate limited: one compute() shows the law itself.
RAW = CartesianImpedanceConfig(target_filter_time_constant_s=0.0, torque_rate_limit_nm_per_s=math.inf)


def make_controller(arm, config=RAW):
    controller = CartesianImpedanceController(arm.robot, config, DT_S)
    controller.reset()
    return controller


def simulate(arm, controller, seconds):
    ctrl = arm.data.ctrl[:7]
    for _ in range(round(seconds / DT_S)):
        mujoco.mj_step1(arm.model, arm.data)
        ctrl[:] = controller.compute()
        mujoco.mj_step2(arm.model, arm.data)
    mujoco.mj_forward(arm.model, arm.data)


def spring_force(arm, tau):
    """Tool wrench [F; M] that J^T maps onto tau - bias (valid at rest, on the null-space posture)."""
    jac = arm.robot.update_jacobian()
    wrench, *_ = np.linalg.lstsq(jac.T, tau - arm.robot.bias_nm, rcond=None)
    return wrench


def test_equilibrium_gives_exactly_the_bias_torques(arm):
    controller = make_controller(arm, CartesianImpedanceConfig())
    np.testing.assert_allclose(controller.compute(), arm.robot.bias_nm, rtol=0, atol=1e-9)


def test_equilibrium_holds_still_for_two_seconds(arm):
    pos0 = arm.robot.site_pos_world.copy()
    q0 = arm.robot.q.copy()
    simulate(arm, make_controller(arm, CartesianImpedanceConfig()), 2.0)
    np.testing.assert_allclose(arm.robot.site_pos_world, pos0, atol=1e-6)
    np.testing.assert_allclose(arm.robot.q, q0, atol=1e-5)


def test_no_bias_compensation_for_a_real_arm(arm):
    controller = make_controller(arm, dataclasses.replace(RAW, compensate_bias=False))
    np.testing.assert_allclose(controller.compute(), 0.0, atol=1e-9)


def test_quaternion_sign_does_not_matter(arm):
    controller = make_controller(arm)
    pos = arm.robot.site_pos_world + [0.003, -0.002, 0.004]
    quat = arm.robot.site_quat_world().copy()
    mujoco.mju_quatIntegrate(quat, np.array([0.01, -0.02, 0.015]), 1.0)
    controller.set_target(pos, quat)
    tau_plus = controller.compute().copy()
    controller.set_target(pos, -quat)
    np.testing.assert_allclose(controller.compute(), tau_plus, atol=1e-9)


def test_orientation_error_sign_about_each_axis(arm):
    """A target rotated by +theta about a world axis pulls the tool with a +moment about that axis."""
    controller = make_controller(arm)
    quat0 = arm.robot.site_quat_world().copy()
    for axis in np.eye(3):
        target = np.zeros(4)
        mujoco.mju_mulQuat(target, np.array([math.cos(0.005), *(math.sin(0.005) * axis)]), quat0)
        controller.set_target(arm.robot.site_pos_world, target)
        moment = spring_force(arm, controller.compute())[3:]
        expected = RAW.rotational_stiffness_nm_per_rad * 0.01 * axis
        np.testing.assert_allclose(moment, expected, atol=1e-6)


@pytest.mark.parametrize("offset_m", [(0.5, 0.0, 0.0), (0.0, -0.3, 0.0), (0.2, 0.2, -0.4)])
def test_far_target_spring_force_is_bounded_by_stiffness_times_clip(arm, offset_m):
    controller = make_controller(arm)
    controller.set_target(arm.robot.site_pos_world + offset_m, arm.robot.site_quat_world())
    force = spring_force(arm, controller.compute())[:3]
    bound = RAW.translational_stiffness_n_per_m * np.array(RAW.position_error_clip_m)
    assert np.all(np.abs(force) <= bound + 1e-6)
    # Saturated axes push with exactly K * clip toward the target.
    moving = np.array(offset_m) != 0.0
    np.testing.assert_allclose(force[moving], (np.sign(offset_m) * bound)[moving], rtol=1e-6)


def test_pressing_on_the_table_measures_stiffness_times_clip(scene_arm):
    """Physical check of reference limiting: a target 10 cm under the table top presses with K * clip."""
    arm = scene_arm
    config = CartesianImpedanceConfig(target_filter_time_constant_s=0.02)
    controller = make_controller(arm, config)
    over_table = arm.robot.site_pos_world.copy()
    over_table[2] = 0.02  # fingertips 1 cm above the table
    controller.set_target(over_table, arm.robot.site_quat_world())
    simulate(arm, controller, 2.5)
    into_table = over_table - [0.0, 0.0, 0.1]
    controller.set_target(into_table, arm.robot.site_quat_world())
    simulate(arm, controller, 1.5)

    table = arm.model.geom("table").id
    total = np.zeros(3)
    frame_force = np.zeros(6)
    for i in range(arm.data.ncon):
        contact = arm.data.contact[i]
        if table in (contact.geom1, contact.geom2):
            mujoco.mj_contactForce(arm.model, arm.data, i, frame_force)
            total += contact.frame.reshape(3, 3).T @ frame_force[:3] * (1 if contact.geom2 == table else -1)
    expected_n = config.translational_stiffness_n_per_m * config.position_error_clip_m[2]
    assert abs(total[2]) == pytest.approx(expected_n, rel=0.03)


def test_tracks_a_step_in_free_space(arm):
    config = CartesianImpedanceConfig(target_filter_time_constant_s=0.02)
    controller = make_controller(arm, config)
    goal = arm.robot.site_pos_world + [0.05, -0.05, -0.05]
    quat = arm.robot.site_quat_world().copy()
    controller.set_target(goal, quat)
    simulate(arm, controller, 1.5)
    np.testing.assert_allclose(arm.robot.site_pos_world, goal, atol=5e-4)
    err = np.zeros(3)
    mujoco.mju_subQuat(err, arm.robot.site_quat_world(), quat)
    assert np.linalg.norm(err) < 2e-3


def test_torques_never_exceed_the_actuator_limits(arm):
    stiff = dataclasses.replace(
        RAW,
        translational_stiffness_n_per_m=6000.0,
        position_error_clip_m=(math.inf,) * 3,
        orientation_error_clip_rad=(math.inf,) * 3,
    )
    controller = make_controller(arm, stiff)
    controller.set_target(arm.robot.site_pos_world + [0.4, 0.4, -0.3], [0.0, 1.0, 0.0, 0.0])
    tau = controller.compute()
    limits = arm.robot.torque_limits_nm
    assert np.all(tau >= limits[:, 0]) and np.all(tau <= limits[:, 1])
    assert np.any(np.isclose(np.abs(tau), limits[:, 1]))  # the clamp was needed


def test_torque_rate_limit_per_tick(arm):
    config = CartesianImpedanceConfig(target_filter_time_constant_s=0.0, position_error_clip_m=(0.1,) * 3)
    controller = make_controller(arm, config)
    controller.set_target(arm.robot.site_pos_world + [0.1, 0.0, -0.1], arm.robot.site_quat_world())
    max_step = config.torque_rate_limit_nm_per_s * DT_S
    previous = controller.last_torque_nm
    steps = []
    ctrl = arm.data.ctrl[:7]
    for _ in range(50):
        mujoco.mj_step1(arm.model, arm.data)
        tau = controller.compute()
        steps.append(np.max(np.abs(tau - previous)))
        previous = tau.copy()
        ctrl[:] = tau
        mujoco.mj_step2(arm.model, arm.data)
    assert max(steps) <= max_step + 1e-9
    assert max(steps) == pytest.approx(max_step)  # the limit was active


def test_nullspace_torque_does_not_accelerate_the_tool(arm):
    """Dynamically consistent projection: with no task spring, J M^-1 (tau - bias) = 0."""
    config = dataclasses.replace(RAW, translational_stiffness_n_per_m=0.0, rotational_stiffness_nm_per_rad=0.0)
    controller = CartesianImpedanceController(arm.robot, config, DT_S)
    # Posture displaced along the self-motion (null-space) direction of the 7-dof arm.
    self_motion = np.linalg.svd(arm.robot.update_jacobian())[2][-1]
    controller.reset(nullspace_posture_rad=arm.robot.q + 0.3 * self_motion)
    tau = controller.compute()
    assert np.linalg.norm(tau - arm.robot.bias_nm) > 1.0  # the posture spring is pulling
    tau_full = np.zeros((1, arm.model.nv))
    tau_full[0, arm.robot.dof_slice] = tau - arm.robot.bias_nm
    acc = arm.robot.solve_mass(np.zeros_like(tau_full), tau_full)[0]
    tool_acc = arm.robot.update_jacobian() @ acc[arm.robot.dof_slice]
    assert np.linalg.norm(tool_acc) < 1e-9


def test_target_filter_reaches_63_percent_after_one_time_constant(arm):
    config = CartesianImpedanceConfig(target_filter_time_constant_s=0.1)
    controller = make_controller(arm, config)
    start = arm.robot.site_pos_world.copy()
    controller.set_target(start + [0.0, 0.0, 0.1], arm.robot.site_quat_world())
    for _ in range(round(0.1 / DT_S)):
        controller.compute()
    assert controller.reference_pos_world[2] - start[2] == pytest.approx(0.1 * (1 - math.exp(-1)), rel=1e-9)


def test_bad_config_and_targets_are_rejected(arm):
    with pytest.raises(ValueError, match="translational_stiffness_n_per_m"):
        CartesianImpedanceConfig(translational_stiffness_n_per_m=-1.0)
    with pytest.raises(ValueError, match="position_error_clip_m"):
        CartesianImpedanceConfig(position_error_clip_m=(0.01, 0.0, 0.01))
    with pytest.raises(ValueError, match="torque_rate_limit_nm_per_s"):
        CartesianImpedanceConfig(torque_rate_limit_nm_per_s=0.0)
    controller = make_controller(arm)
    with pytest.raises(ValueError, match="finite"):
        controller.set_target([np.nan, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0])
