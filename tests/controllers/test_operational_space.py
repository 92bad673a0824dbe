"""Operational-space law on the simulated Panda: each tool axis must behave as a unit mass-spring-damper."""

import math

import mujoco
import numpy as np
import pytest

from controllers.evaluation import circle, step_response, tracking_errors
from controllers.operational_space import OperationalSpaceConfig
from tests.controllers.panda_arm import SINGULAR_Q, make_arm, make_law, record_pose, simulate

DT_S = 0.002


def make_controller(arm, **overrides):
    return make_law("operational_space", arm, **{"target_filter_time_constant_s": 0.0, **overrides})


def critically_damped_time(omega: float, remaining: float) -> float:
    """Time at which a critically damped unit step has `remaining` left: (1 + w t) exp(-w t) = remaining."""
    low, high = 0.0, 50.0
    for _ in range(100):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if (1 + mid) * math.exp(-mid) > remaining else (low, mid)
    return low / omega


def test_the_commanded_acceleration_is_what_the_tool_gets(arm):
    """At rest, with no posture term: J M^-1 (tau - bias) = -Kp e exactly, per axis and coupled: the task
    inertia weighting turns the arm into a unit mass in every direction."""
    controller = make_controller(arm, nullspace_stiffness_nm_per_rad=0.0, torque_rate_limit_nm_per_s=math.inf)
    pos, quat = arm.robot.site_pos_world + [0.01, -0.02, 0.005], arm.robot.site_quat_world().copy()
    mujoco.mju_quatIntegrate(quat, np.array([0.02, 0.01, -0.03]), 1.0)
    controller.set_target(pos, quat)
    tau = controller.compute()
    tau_full = np.zeros((1, arm.model.nv))
    tau_full[0, arm.robot.dof_slice] = tau - arm.robot.bias_nm
    acc = arm.robot.solve_mass(np.zeros_like(tau_full), tau_full)[0][arm.robot.dof_slice]
    tool_acc = arm.robot.update_jacobian() @ acc
    np.testing.assert_allclose(tool_acc, -controller.stiffness * controller.clipped_error, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("gain", [200.0, 400.0])
def test_step_response_is_critically_damped_at_the_gain_frequency(arm, gain):
    """A 5 cm step behaves as a critically damped oscillator with w = sqrt(Kp): no overshoot, 10-90 % rise in
    3.36 / w and 2 % settling in 5.83 / w. The model's joint damping (1 N*m*s/rad) only slows it, by up to
    15 %; 2 % of slack the other way covers the 2 ms sampling."""
    controller = make_controller(arm, position_gain_per_s2=gain, orientation_gain_per_s2=gain)
    start, quat = arm.robot.site_pos_world.copy(), arm.robot.site_quat_world().copy()
    goal = start + [0.05, 0.0, 0.0]
    controller.set_target(goal, quat)
    times, pos, _ = record_pose(arm, controller, 1.0)
    response = step_response(times, pos, start, goal)
    omega = math.sqrt(gain)
    rise = critically_damped_time(omega, 0.1) - critically_damped_time(omega, 0.9)
    settle = critically_damped_time(omega, 0.02)
    assert response.overshoot_frac < 0.005
    assert 0.98 * rise <= response.rise_time_s <= 1.15 * rise
    assert 0.98 * settle <= response.settling_time_s <= 1.15 * settle
    assert response.final_error_m < 1e-4


def test_circle_tracking_error_is_the_oscillator_response(arm):
    """Following a 5 cm circle at W = pi rad/s, a unit oscillator (w^2 = Kp, 2 zeta w = Kd) lags by
    r |(-W^2 + j Kd W) / (Kp - W^2 + j Kd W)| = 21.3 mm; measured within 5 % (joint damping adds a little)."""
    controller = make_controller(arm)
    start, quat = arm.robot.site_pos_world.copy(), arm.robot.site_quat_world().copy()
    n = round(4.0 / DT_S)
    path = circle(np.arange(n) * DT_S, start, 0.05, 2.0)
    _, pos, quats = record_pose(arm, controller, 4.0, before_tick=lambda i: controller.set_target(path[i], quat))
    half = n // 2
    errors = tracking_errors(pos[half:], quats[half:], path[half - 1 : -1], np.tile(quat, (n - half, 1)))
    w, kp, kd = math.pi, controller.stiffness[0], controller.damping[0]
    expected_mm = 50.0 * abs(complex(-(w**2), kd * w)) / abs(complex(kp - w**2, kd * w))
    assert errors.rms_pos_mm == pytest.approx(expected_mm, rel=0.05)
    assert errors.max_rot_deg < 1.0


def test_decoupled_weighting_still_settles(arm):
    """Decoupled, the off-diagonal blocks of Lambda are ignored, so the axes are unit masses only roughly:
    a 5 cm step may overshoot a little (< 10 %) but must settle within 1.5 s."""
    controller = make_controller(arm, decoupled=True)
    start, quat = arm.robot.site_pos_world.copy(), arm.robot.site_quat_world().copy()
    goal = start + [0.05, 0.0, 0.0]
    controller.set_target(goal, quat)
    times, pos, _ = record_pose(arm, controller, 2.0)
    response = step_response(times, pos, start, goal)
    assert response.overshoot_frac < 0.1 and response.settling_time_s < 1.5


def test_nullspace_motion_does_not_move_the_hand(arm):
    controller = make_law("operational_space", arm, reset=False)
    self_motion = np.linalg.svd(arm.robot.update_jacobian())[2][-1]
    q0, pos0 = arm.robot.q.copy(), arm.robot.site_pos_world.copy()
    controller.reset(nullspace_posture_rad=arm.robot.q + 0.4 * self_motion)
    worst = [0.0]
    simulate(
        arm,
        controller,
        2.0,
        after_tick=lambda i, tau: worst.__setitem__(0, max(worst[0], np.linalg.norm(arm.robot.site_pos_world - pos0))),
    )
    assert np.abs(arm.robot.q - q0).max() > 0.2
    assert worst[0] < 2e-4


def test_singular_value_guard_caps_the_task_inertia():
    """At a singular configuration Lambda^-1 has a zero eigenvalue: the guard raises it to the floor, so
    the weighted wrench stays finite, the status says so, and a step command stays within the limits."""
    arm = make_arm(q=SINGULAR_Q)
    controller = make_controller(arm)
    controller.compute()
    assert controller.status.inertia_guarded
    assert controller._task.inertia.min_eigenvalue < 1e-10  # really singular
    controller.set_target(arm.robot.site_pos_world + [0.05, 0.0, 0.0], arm.robot.site_quat_world())
    tau = controller.compute()
    assert np.all(np.isfinite(tau))
    limits = arm.robot.torque_limits_nm
    assert np.all(tau >= limits[:, 0]) and np.all(tau <= limits[:, 1])


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="task_inertia_inv_floor"):
        OperationalSpaceConfig(task_inertia_inv_floor=0.0)
    with pytest.raises(ValueError, match="position_gain_per_s2"):
        OperationalSpaceConfig(position_gain_per_s2=-1.0)
