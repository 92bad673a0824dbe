"""The safety chain every law shares (controllers.base), checked on each of the three laws."""

import math

import mujoco
import numpy as np
import pytest

from tests.controllers.panda_arm import LAWS, SINGULAR_Q, command, make_arm, make_law, simulate

CARTESIAN = [law for law in LAWS if law != "joint_impedance"]


def tool_pose(arm):
    return arm.robot.site_pos_world.copy(), arm.robot.site_quat_world().copy()


@pytest.mark.parametrize("law", LAWS)
def test_equilibrium_gives_exactly_the_bias_torques(arm, law):
    controller = make_law(law, arm)
    # 1e-9 N*m: comparing a pose with itself leaves round-off (~1e-16 rad) in the orientation error.
    np.testing.assert_allclose(controller.compute(), arm.robot.bias_nm, rtol=0, atol=1e-9)


@pytest.mark.parametrize("law", LAWS)
def test_equilibrium_holds_still_for_two_seconds(arm, law):
    pos0, q0 = arm.robot.site_pos_world.copy(), arm.robot.q.copy()
    simulate(arm, make_law(law, arm), 2.0)
    np.testing.assert_allclose(arm.robot.site_pos_world, pos0, atol=1e-6)
    np.testing.assert_allclose(arm.robot.q, q0, atol=1e-5)


@pytest.mark.parametrize("law", LAWS)
def test_without_bias_compensation_equilibrium_is_zero_torque(arm, law):
    controller = make_law(law, arm, compensate_bias=False, torque_rate_limit_nm_per_s=math.inf)
    np.testing.assert_allclose(controller.compute(), 0.0, atol=1e-9)


@pytest.mark.parametrize("law", LAWS)
def test_torques_never_exceed_the_actuator_limits(arm, law):
    stiff = {
        "cartesian_impedance": {
            "translational_stiffness_n_per_m": 6000.0,
            "position_error_clip_m": (math.inf,) * 3,
            "orientation_error_clip_rad": (math.inf,) * 3,
        },
        "operational_space": {"position_gain_per_s2": 1000.0, "orientation_gain_per_s2": 1000.0},
        "joint_impedance": {"stiffness_nm_per_rad": (600.0,)},
    }[law]
    controller = make_law(law, arm, target_filter_time_constant_s=0.0, torque_rate_limit_nm_per_s=math.inf, **stiff)
    assert command(controller, arm, [0.3, 0.3, -0.3], [0.0, 2.0, 0.0])
    tau = controller.compute()
    limits = arm.robot.torque_limits_nm
    assert np.all(tau >= limits[:, 0]) and np.all(tau <= limits[:, 1])
    assert np.any(np.isclose(np.abs(tau), limits[:, 1]))  # the clamp was needed
    assert controller.status.torque_clamped and not controller.status.torque_rate_limited


@pytest.mark.parametrize("law", LAWS)
def test_torque_rate_limit_per_tick(arm, law):
    controller = make_law(law, arm, target_filter_time_constant_s=0.0)
    assert command(controller, arm, [0.1, 0.0, -0.1])
    max_step = controller.config.torque_rate_limit_nm_per_s * arm.model.opt.timestep
    previous = controller.last_torque_nm
    steps, flags = [], []

    def watch(i, tau):
        steps.append(np.max(np.abs(tau - previous)))
        flags.append(controller.status.torque_rate_limited)
        previous[:] = tau

    simulate(arm, controller, 0.1, after_tick=watch)
    assert max(steps) <= max_step + 1e-9
    assert max(steps) == pytest.approx(max_step)  # the limit was active...
    assert flags[0]  # ... and reported


@pytest.mark.parametrize("law", LAWS)
def test_non_finite_state_repeats_the_last_command_and_is_reported(arm, law):
    controller = make_law(law, arm)
    assert command(controller, arm, [0.02, 0.0, 0.0])
    mujoco.mj_step1(arm.model, arm.data)
    last = controller.compute().copy()
    arm.data.qvel[2] = np.nan
    held = controller.compute()
    np.testing.assert_array_equal(held, last)
    assert controller.status.nan_hold and controller.status.nan_ticks == 1
    arm.data.qvel[2] = 0.0
    assert np.all(np.isfinite(controller.compute())) and not controller.status.nan_hold
    # A non-finite torque (here the bias) is caught the same way.
    arm.data.qfrc_bias[arm.robot.dof_slice.start] = np.inf
    last = controller.last_torque_nm
    np.testing.assert_array_equal(controller.compute(), last)
    assert controller.status.nan_ticks == 2


@pytest.mark.parametrize("law", LAWS)
def test_non_finite_targets_are_refused_and_counted(arm, law):
    controller = make_law(law, arm)
    if law == "joint_impedance":
        before = controller.target_q_rad
        assert not controller.set_target([0.0, np.nan, 0.0, -1.0, 0.0, 1.0, 0.0])
        np.testing.assert_array_equal(controller.target_q_rad, before)
    else:
        before = controller.target_pos_world
        assert not controller.set_target([np.inf, 0.0, 0.3], [1.0, 0.0, 0.0, 0.0])
        assert not controller.set_target([0.5, 0.0, 0.3], [0.0, 0.0, 0.0, 0.0])
        assert not controller.set_target([0.5, 0.0, 0.3], [np.nan, 0.0, 0.0, 1.0])
        np.testing.assert_array_equal(controller.target_pos_world, before)
    assert controller.status.rejected_commands == (1 if law == "joint_impedance" else 3)
    np.testing.assert_allclose(controller.compute(), arm.robot.bias_nm, atol=1e-9)  # still holding


@pytest.mark.parametrize("law", LAWS)
def test_watchdog_engages_within_two_ticks_and_holds_with_damping(arm, law):
    """Timeout 0.1 s at 500 Hz: the deadline is 50 ticks after the target (stamped at the next tick). The
    hold freezes the pose of the trip tick: the arm, then moving at 7-10 cm/s toward a target 5 cm away,
    stops, is pulled back to that pose and comes to rest there (within 0.1 mm after 1.4 s)."""
    dt = arm.model.opt.timestep
    controller = make_law(law, arm, watchdog_timeout_s=0.1)
    assert command(controller, arm, [0.05, 0.0, 0.0])
    trip = {}

    def watch(i, tau):
        if controller.status.watchdog_engaged and "tick" not in trip:
            trip["tick"], trip["pos"] = i, arm.robot.site_pos_world.copy()
            trip["speed"] = np.linalg.norm(arm.robot.update_jacobian()[:3] @ arm.robot.dq)

    simulate(arm, controller, 1.5, after_tick=watch)
    deadline_tick = round(0.1 / dt)  # stamped at tick 0 (the first after set_target)
    assert deadline_tick <= trip["tick"] <= deadline_tick + 2
    assert controller.status.watchdog_trips == 1
    assert trip["speed"] > 0.05  # it was moving when the watchdog tripped
    assert np.abs(arm.robot.dq).max() < 1e-3  # at rest
    np.testing.assert_allclose(arm.robot.site_pos_world, trip["pos"], atol=1e-4)
    # A new target releases the hold.
    assert command(controller, arm, [0.0, 0.0, 0.01])
    assert not controller.status.watchdog_engaged


def test_watchdog_uses_the_loop_clock_when_given(arm):
    """On a real arm the loop passes its clock: a slow tick rate does not stretch the timeout."""
    controller = make_law("cartesian_impedance", arm, watchdog_timeout_s=0.1)
    t0 = 1234.5  # any clock origin
    controller.compute(now_s=t0)
    controller.set_target(*tool_pose(arm))
    controller.compute(now_s=t0 + 0.001)  # stamps the target
    controller.compute(now_s=t0 + 0.1)
    assert not controller.status.watchdog_engaged
    controller.compute(now_s=t0 + 0.1011)
    assert controller.status.watchdog_engaged


@pytest.mark.parametrize("law", LAWS)
def test_joint_limit_zone_pushes_back(law):
    """Joint 4 at 0.02 rad from its upper limit (-0.0698 rad) with a 0.1 rad margin is 0.08 rad deep in the
    zone: the push adds exactly -k * 0.08 to joint 4 (away from the limit) and nothing elsewhere."""
    q = np.array([0.0, -0.3, 0.0, -0.0698 - 0.02, 0.0, 1.5, 0.8])
    torques = []
    for margin in (0.0, 0.1):
        arm = make_arm(q=q)
        controller = make_law(law, arm, joint_limit_margin_rad=margin, torque_rate_limit_nm_per_s=math.inf)
        torques.append(controller.compute().copy())
        assert controller.status.joint_limit_active == (margin > 0)
    expected = np.zeros(7)
    expected[3] = -controller.config.joint_limit_stiffness_nm_per_rad * 0.08
    np.testing.assert_allclose(torques[1] - torques[0], expected, atol=1e-9)


@pytest.mark.parametrize("law", LAWS)
def test_singular_configuration_holds_still_with_finite_bounded_torques(law):
    """At a configuration where J loses rank the laws must not blow up: holding for a second, every torque
    is finite and within limits, and the arm does not drift (tool < 1 mm, joints < 0.01 rad/s)."""
    arm = make_arm(q=SINGULAR_Q)
    assert np.linalg.svd(arm.robot.update_jacobian(), compute_uv=False)[-1] < 1e-10
    controller = make_law(law, arm)
    pos0 = arm.robot.site_pos_world.copy()
    worst_speed = [0.0]

    def watch(i, tau):
        assert np.all(np.isfinite(tau))
        limits = arm.robot.torque_limits_nm
        assert np.all(tau >= limits[:, 0]) and np.all(tau <= limits[:, 1])
        worst_speed[0] = max(worst_speed[0], np.abs(arm.robot.dq).max())

    simulate(arm, controller, 1.0, after_tick=watch)
    assert np.linalg.norm(arm.robot.site_pos_world - pos0) < 1e-3
    assert worst_speed[0] < 0.01


@pytest.mark.parametrize("law", CARTESIAN)
@pytest.mark.parametrize("direction", ["feasible", "singular"])
def test_commands_at_the_singular_configuration(law, direction):
    """Here J has lost (mostly) the world y direction. A 3 cm command along x, which the arm can follow, is
    followed (> 2 cm in 1.5 s); one along y can only be approached as the arm leaves the singularity: it
    must stay finite and bounded (the arm stays in a 5 cm ball, speeds under 1 rad/s)."""
    arm = make_arm(q=SINGULAR_Q)
    controller = make_law(law, arm)
    pos0 = arm.robot.site_pos_world.copy()
    axis = 0 if direction == "feasible" else 1
    offset = np.zeros(3)
    offset[axis] = 0.03
    assert command(controller, arm, offset)
    worst_speed = [0.0]
    simulate(
        arm,
        controller,
        1.5,
        after_tick=lambda i, tau: worst_speed.__setitem__(0, max(worst_speed[0], np.abs(arm.robot.dq).max())),
    )
    assert np.all(np.isfinite(arm.robot.q))
    assert np.linalg.norm(arm.robot.site_pos_world - pos0) < 0.05
    assert worst_speed[0] < 1.0
    if direction == "feasible":
        assert arm.robot.site_pos_world[0] - pos0[0] > 0.02
