"""The compiled tick is the Python controller, not a second one: the same torques and trajectories (to
floating-point rounding: BLAS and MuJoCo may sum a dot product in another order), including the ticks it
hands back to Python (watchdog, singular-value guard, gain filter)."""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np
import pytest

import envs
from controllers import native_tick
from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
from tests.controllers.panda_arm import SINGULAR_Q, command, make_arm

pytestmark = pytest.mark.skipif(native_tick.load_library() is None, reason="no C compiler for the compiled tick")


def _arm_pair(q=None, **overrides):
    """Two identical arms with identical controllers; the first is stepped in C, the second in Python."""
    pairs = []
    for _ in range(2):
        arm = make_arm() if q is None else make_arm(q)
        controller = CartesianImpedanceController(arm.robot, CartesianImpedanceConfig(**overrides), 0.002)
        controller.reset()
        pairs.append((arm, controller))
    (arm_c, ctrl_c), _ = pairs
    stepper = native_tick.CompiledImpedanceStepper(ctrl_c, 0, lambda: np.copyto(arm_c.ctrl, ctrl_c.compute()))
    return pairs, stepper


def _python_steps(arm, controller, n):
    for _ in range(n):
        mujoco.mj_step1(arm.model, arm.data)
        np.copyto(arm.ctrl, controller.compute())
        mujoco.mj_step2(arm.model, arm.data)


def _close(actual, desired):
    np.testing.assert_allclose(actual, desired, rtol=1e-9, atol=1e-12)


def _assert_same(pair_c, pair_p):
    (arm_c, ctrl_c), (arm_p, ctrl_p) = pair_c, pair_p
    _close(arm_c.data.qpos, arm_p.data.qpos)
    _close(arm_c.data.qvel, arm_p.data.qvel)
    _close(ctrl_c.last_torque_nm, ctrl_p.last_torque_nm)
    _close(ctrl_c.reference_pos_world, ctrl_p.reference_pos_world)
    _close(ctrl_c.reference_quat_world, ctrl_p.reference_quat_world)
    assert dataclasses.asdict(ctrl_c.status) == dataclasses.asdict(ctrl_p.status)
    assert ctrl_c._ticks == ctrl_p._ticks


def test_step_targets_under_the_torque_rate_limit_match_python():
    # Large, fast targets with a tight torque-rate limit: the rate limit acts.
    pairs, stepper = _arm_pair(torque_rate_limit_nm_per_s=200.0, translational_stiffness_n_per_m=4000.0)
    rate_limited_ticks = 0
    for offset in [(0.1, 0.0, -0.1), (-0.05, 0.1, 0.05), (0.0, -0.15, 0.0), (0.02, 0.02, 0.02)]:
        for arm, controller in pairs:
            command(controller, arm, offset_m=offset, rotation_rad=(0.0, 0.3, 0.0))
        for _ in range(10):
            stepper.step(25)
            _python_steps(*pairs[1], 25)
            rate_limited_ticks += pairs[0][1].status.torque_rate_limited
            _assert_same(*pairs)
    assert rate_limited_ticks > 0
    assert stepper.python_ticks == 0


def test_watchdog_trip_is_handed_to_python_and_matches():
    pairs, stepper = _arm_pair(watchdog_timeout_s=0.05)
    for arm, controller in pairs:
        command(controller, arm, offset_m=(0.05, 0.0, 0.0))
    stepper.step(100)  # 0.2 s without a new target: trips at 0.05 s, then holds (damped) in Python
    _python_steps(*pairs[1], 100)
    _assert_same(*pairs)
    assert pairs[0][1].status.watchdog_trips == 1 and pairs[0][1].status.watchdog_engaged
    assert stepper.python_ticks >= 75  # the trip tick and every held tick
    for arm, controller in pairs:  # a new target re-arms it and C takes over again
        command(controller, arm, offset_m=(0.0, 0.03, 0.0))
    before = stepper.python_ticks
    stepper.step(10)
    _python_steps(*pairs[1], 10)
    _assert_same(*pairs)
    assert stepper.python_ticks == before


def test_singular_configuration_guard_ticks_run_in_python_and_match():
    pairs, stepper = _arm_pair(q=SINGULAR_Q)
    stepper.step(50)
    _python_steps(*pairs[1], 50)
    _assert_same(*pairs)
    assert stepper.python_ticks > 0  # the guard engaged: those ticks needed the eigen-decomposition
    assert np.all(np.isfinite(pairs[0][1].last_torque_nm))


def test_ticks_run_in_python_while_the_gain_filter_moves():
    pairs, stepper = _arm_pair()
    for arm, controller in pairs:
        controller.set_stiffness([3000.0] * 3 + [100.0] * 3)
        command(controller, arm, offset_m=(0.0, 0.0, 0.05))
    stepper.step(50)
    _python_steps(*pairs[1], 50)
    _assert_same(*pairs)
    assert stepper.python_ticks == 50  # the gain filter still moves after 0.1 s (time constant 0.2 s)


@pytest.mark.parametrize("overrides", [{"integral_gain_per_s": 1.0}, {"joint_limit_margin_rad": 0.1}])
def test_features_without_a_compiled_version_are_refused(overrides):
    arm = make_arm()
    controller = CartesianImpedanceController(arm.robot, CartesianImpedanceConfig(**overrides), 0.002)
    assert native_tick.unsupported_reason(controller) is not None
    with pytest.raises(ValueError, match="compiled tick not available"):
        native_tick.CompiledImpedanceStepper(controller, 0, lambda: None)


@pytest.mark.parametrize("task", ["reach", "pick-cube", "peg-insert", "stack-cubes"])
def test_env_episodes_are_identical_with_and_without_the_compiled_tick(task):
    """Scripted-expert episodes (contacts, grasps, insertion forces) give the same observations and infos."""
    runs = []
    for compiled in (True, False):
        spec = envs.get_task(task)
        env = envs.make(task, config=dataclasses.replace(spec.config_cls(), compiled_controller=compiled))
        assert (env.unwrapped._stepper is not None) == compiled
        expert = envs.make_expert(task, noise_std=0.1, seed=3)
        expert.reset()
        obs, info = env.reset(seed=7)
        trace, peak = [obs], []
        for _ in range(60):
            obs, reward, terminated, truncated, info = env.step(expert(obs))
            trace.append(np.append(obs, reward))
            peak.append(np.asarray(info.get("peak_force_n", 0.0)))
            if terminated or truncated:
                break
        runs.append((np.concatenate([np.ravel(t) for t in trace]), np.concatenate([np.ravel(p) for p in peak])))
        env.close()
    _close(runs[0][0], runs[1][0])
    _close(runs[0][1], runs[1][1])
    if task == "peg-insert":
        assert runs[0][1].max() > 0.0  # contact forces were tracked by the compiled monitor

