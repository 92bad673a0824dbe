"""Targets and references: the closed-form filter against the tick-by-tick one, the pose error."""

import math

import mujoco
import numpy as np
import pytest

from controllers.limits import first_order_filter_gain
from controllers.reference import PoseReference, VectorReference

DT_S = 0.001
NO_BOX = ((-math.inf,) * 3, (math.inf,) * 3)


def slerp(q0, q1, t):
    """Spherical interpolation, shorter way (reference implementation for the test)."""
    if np.dot(q0, q1) < 0.0:
        q1 = -q1
    angle = math.acos(min(1.0, float(np.dot(q0, q1))))
    if angle < 1e-12:
        return q0.copy()
    return (math.sin((1 - t) * angle) * q0 + math.sin(t * angle) * q1) / math.sin(angle)


def test_vector_filter_equals_serl_recursion_across_retargets():
    """x <- x + alpha (target - x) every tick, with targets changing mid-way: the closed form matches."""
    alpha = first_order_filter_gain(0.2, DT_S)
    ref = VectorReference(3, 0.2, DT_S)
    ref.reset([0.0, 0.0, 0.0])
    x = np.zeros(3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        target = rng.uniform(-1.0, 1.0, 3)
        ref.set_target(target)
        for _ in range(150):
            ref.advance()
            x += alpha * (target - x)
            np.testing.assert_allclose(ref.value, x, atol=1e-12)


def test_pose_filter_equals_tick_by_tick_slerp():
    """Orientation: SERL's slerp(q_ref, q_target, alpha) each tick is the geodesic decay used here."""
    alpha = first_order_filter_gain(0.05, DT_S)
    ref = PoseReference(0.05, DT_S, *NO_BOX)
    q_ref = np.array([1.0, 0.0, 0.0, 0.0])
    ref.reset(np.zeros(3), q_ref)
    target = np.zeros(4)
    mujoco.mju_axisAngle2Quat(target, np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8]), 1.2)
    assert ref.set_target(np.array([0.1, 0.2, 0.3]), -target)  # the other hemisphere: same rotation
    q = q_ref.copy()
    for _ in range(100):
        ref.advance()
        q = slerp(q, target, alpha)
        assert abs(abs(np.dot(ref.ref_quat, q)) - 1.0) < 1e-12


def test_pose_error_is_the_world_rotation_vector_and_ignores_the_sign():
    ref = PoseReference(0.0, DT_S, *NO_BOX)
    quat_ref = np.zeros(4)
    mujoco.mju_axisAngle2Quat(quat_ref, np.array([0.0, 0.0, 1.0]), 0.7)
    ref.reset(np.array([0.5, 0.0, 0.3]), quat_ref)
    rot = np.zeros(4)
    mujoco.mju_axisAngle2Quat(rot, np.array([1.0, 0.0, 0.0]), 0.1)  # 0.1 rad about world x
    quat = np.zeros(4)
    mujoco.mju_mulQuat(quat, rot, quat_ref)
    xmat = np.zeros(9)
    for sign in (1.0, -1.0):
        mujoco.mju_quat2Mat(xmat, sign * quat)
        error = ref.update_error(np.array([0.51, 0.0, 0.3]), xmat)
        np.testing.assert_allclose(error, [0.01, 0.0, 0.0, 0.1, 0.0, 0.0], atol=1e-12)
    # A 3 rad turn is the shorter way round, not 2 pi - 3.
    mujoco.mju_axisAngle2Quat(rot, np.array([0.0, 1.0, 0.0]), 3.0)
    mujoco.mju_mulQuat(quat, rot, quat_ref)
    mujoco.mju_quat2Mat(xmat, quat)
    np.testing.assert_allclose(ref.update_error(np.array([0.5, 0.0, 0.3]), xmat)[3:], [0.0, 3.0, 0.0], atol=1e-9)


def test_workspace_clamp_and_refusals():
    ref = PoseReference(0.0, DT_S, (0.2, -0.3, 0.0), (0.7, 0.3, 0.5))
    ref.reset(np.array([0.5, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]))
    assert ref.set_target(np.array([0.9, -0.5, 0.3]), np.array([2.0, 0.0, 0.0, 0.0]))
    assert ref.clipped
    np.testing.assert_array_equal(ref.target_pos, [0.7, -0.3, 0.3])
    np.testing.assert_array_equal(ref.target_quat, [1.0, 0.0, 0.0, 0.0])  # normalised
    assert not ref.set_target(np.array([np.nan, 0.0, 0.3]), np.array([1.0, 0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(ref.target_pos, [0.7, -0.3, 0.3])
    with pytest.raises(ValueError, match="shape"):
        ref.set_target(np.zeros(2), np.array([1.0, 0.0, 0.0, 0.0]))
