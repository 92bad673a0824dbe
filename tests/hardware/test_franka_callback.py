"""The Franka torque callback against the MuJoCo Panda, through the interface the real arm uses.

The simulated arm plays the robot: its bodies carry MuJoCo gravity compensation (what a Franka's
firmware adds), it receives only the callback's torques on its motors, and the callback sees only
(q, dq, time), exactly as in ``FrankaArm.run``.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest

from envs.panda_base import ASSETS, default_controller_config
from hardware.franka import FrankaArm, FrankaConfig, ImpedanceTorqueCallback, SilenceConfig, load_arm_model
from hardware.optional import MissingExtraError
from tests.controllers.panda_arm import make_arm

DT = 0.001


def run(arm, callback, seconds, on_tick=None):
    """Step the arm with the callback's torques for ``seconds``; returns the (ticks, 7) torques sent."""
    m, d = arm.model, arm.data
    n = round(seconds / DT)
    sent = np.zeros((n, 7))
    for i in range(n):
        mujoco.mj_step1(m, d)
        if on_tick is not None:
            on_tick(i, d.time)
        sent[i] = callback(arm.robot.q.copy(), arm.robot.dq.copy(), d.time)
        arm.ctrl[:] = sent[i]
        mujoco.mj_step2(m, d)
    mujoco.mj_forward(m, d)
    return sent


@pytest.fixture
def setup():
    arm = make_arm(firmware_gravity=True, dt_s=DT)
    callback = ImpedanceTorqueCallback(load_arm_model(ASSETS / "panda.xml"), default_controller_config(),
                                       SilenceConfig(hold_after_s=0.1, stop_after_s=0.3))
    callback.start(arm.robot.q, arm.robot.dq, arm.data.time)
    return arm, callback


def test_reaches_target_within_torque_and_rate_limits(setup):
    arm, callback = setup
    start = arm.robot.site_pos_world.copy()
    quat = arm.robot.site_quat_world().copy()
    goal = start + np.array([0.05, -0.04, 0.03])
    limits = callback.robot.torque_limits_nm

    def feed(i, _t):  # a 10 Hz client
        if i % 100 == 0:
            assert callback.set_target(goal, quat)

    sent = run(arm, callback, 1.0, feed)
    assert np.linalg.norm(arm.robot.site_pos_world - goal) < 3e-3
    assert np.all(sent >= limits[:, 0] - 1e-9) and np.all(sent <= limits[:, 1] + 1e-9)
    steps = np.abs(np.diff(sent, axis=0))
    assert steps.max() <= 1.0 + 1e-9  # 1000 N*m/s x 1 ms
    assert steps.max() > 0.5  # the move really pushed against the rate limit
    assert callback.read()["watchdog"] == "ok"


def test_torques_exclude_gravity(setup):
    arm, callback = setup
    # At rest on target the command is ~0 although gravity on joint 2 is tens of N*m: the robot adds it.
    sent = run(arm, callback, 0.05, lambda i, t: callback.set_target(*_pose(arm)) if i == 0 else None)
    gravity = arm.data.qfrc_bias[:7]
    assert np.abs(gravity).max() > 10.0
    assert np.abs(sent[-1]).max() < 0.5


def _pose(arm):
    return arm.robot.site_pos_world.copy(), arm.robot.site_quat_world().copy()


def test_silence_holds_then_stops_until_restart(setup):
    arm, callback = setup
    pos, quat = _pose(arm)
    assert callback.set_target(pos + [0.0, 0.0, 0.04], quat)
    seen = {}

    def watch(i, t):
        state = callback.read()["watchdog"]
        seen.setdefault(state, t)

    sent = run(arm, callback, 0.9, watch)
    assert 0.09 <= seen["hold"] <= 0.12
    assert 0.29 <= seen["stopped"] <= 0.32
    assert callback.finished and not callback.set_target(pos, quat)
    # Stopped: damping only, so the torques fade and the arm stays where it was.
    assert np.abs(sent[-1]).max() < 1.0
    assert np.abs(np.diff(sent, axis=0)).max() <= 1.0 + 1e-9
    assert np.linalg.norm(arm.robot.dq) < 0.05
    callback.start(arm.robot.q, arm.robot.dq, arm.data.time)
    assert not callback.finished and callback.set_target(pos, quat)


def test_non_finite_state_repeats_last_command(setup):
    arm, callback = setup
    good = callback(arm.robot.q.copy(), arm.robot.dq.copy(), 0.001).copy()
    q = arm.robot.q.copy()
    q[3] = math.nan
    bad = callback(q, arm.robot.dq.copy(), 0.002)
    assert np.all(np.isfinite(bad)) and np.allclose(bad, good)


def test_franka_arm_names_the_extra_without_pylibfranka():
    pytest.importorskip("pytest")
    try:
        import pylibfranka  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"robot-stack\[hardware\]"):
            FrankaArm(FrankaConfig(robot_ip="172.16.0.2"))
    with pytest.raises(ValueError, match="robot_ip"):
        FrankaConfig()
