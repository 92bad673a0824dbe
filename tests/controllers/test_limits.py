import math

import numpy as np
import pytest

from controllers.limits import (
    CLAMPED,
    RATE_LIMITED,
    all_finite,
    clamp_,
    clip_error_,
    first_order_filter_gain,
    joint_limit_push_,
    limit_torque_,
    rate_limit_,
)


def test_clamp_is_in_place_and_bounded():
    x = np.array([-5.0, 0.5, 5.0])
    out = clamp_(x, np.array([-1.0, -1.0, -1.0]), np.array([1.0, 1.0, 2.0]))
    assert out is x
    np.testing.assert_array_equal(x, [-1.0, 0.5, 2.0])


def test_clip_error_per_axis_and_inf_disables():
    e = np.array([0.5, -0.5, 0.5])
    bound = np.array([0.01, 0.02, math.inf])
    clip_error_(e, -bound, bound)
    np.testing.assert_array_equal(e, [0.01, -0.02, 0.5])


def test_rate_limit_moves_at_most_max_step_from_previous():
    previous = np.array([0.0, 1.0, 2.0])
    x = np.array([10.0, 1.5, -10.0])
    rate_limit_(x, previous, 1.0, np.zeros(3))
    np.testing.assert_array_equal(x, [1.0, 1.5, 1.0])


def test_rate_limit_inf_disables():
    x = np.array([10.0])
    rate_limit_(x, np.array([0.0]), math.inf, np.zeros(1))
    assert x[0] == 10.0


@pytest.mark.parametrize(
    ("requested", "expected", "flags"),
    [
        ([0.5, -0.5], [0.5, -0.5], 0),  # inside everything
        ([3.0, -0.5], [1.0, -0.5], RATE_LIMITED),  # too fast, inside the clamp
        ([0.5, -12.0], [0.5, -2.0], RATE_LIMITED),
        ([0.0, 0.0], [0.0, 0.0], 0),
    ],
)
def test_limit_torque_rate_then_clamp_with_flags(requested, expected, flags):
    previous = np.array([0.0, -1.0])
    tau = np.array(requested, dtype=float)
    result = limit_torque_(tau, previous, 1.0, np.array([-3.0, -3.0]), np.array([3.0, 3.0]), np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(tau, expected)
    assert result == flags


def test_limit_torque_reports_the_clamp():
    previous = np.array([2.5, -2.5])
    tau = np.array([4.0, -2.0])  # +1.5 > rate and above the clamp on joint 1
    result = limit_torque_(tau, previous, 1.0, np.array([-3.0, -3.0]), np.array([3.0, 3.0]), np.zeros(2), np.zeros(2))
    np.testing.assert_array_equal(tau, [3.0, -2.0])
    assert result == RATE_LIMITED | CLAMPED


def test_joint_limit_push_is_a_spring_inside_the_margin_only():
    tau = np.zeros(3)
    q = np.array([-0.95, 0.0, 0.97])
    active = joint_limit_push_(tau, q, np.array([-0.9] * 3), np.array([0.9] * 3), 50.0, np.zeros(3))
    assert active
    np.testing.assert_allclose(tau, [50.0 * 0.05, 0.0, -50.0 * 0.07])
    assert not joint_limit_push_(tau, np.zeros(3), np.array([-0.9] * 3), np.array([0.9] * 3), 50.0, np.zeros(3))


def test_all_finite():
    assert all_finite(np.array([1.0, -1e100, 0.0]))
    for bad in (np.nan, np.inf, -np.inf):
        assert not all_finite(np.array([1.0, bad, 0.0]))


def test_filter_gain_is_rate_independent_and_zero_disables():
    assert first_order_filter_gain(0.0, 0.001) == 1.0
    # After 0.2 s the remaining fraction is exp(-1) whatever the tick rate.
    for dt in (0.001, 0.002):
        alpha = first_order_filter_gain(0.2, dt)
        assert (1 - alpha) ** round(0.2 / dt) == pytest.approx(math.exp(-1.0), rel=1e-9)
    # SERL's 0.005 per 1 kHz tick is a ~0.2 s time constant.
    assert first_order_filter_gain(0.2, 0.001) == pytest.approx(0.005, rel=0.01)
    with pytest.raises(ValueError, match="time_constant_s"):
        first_order_filter_gain(-1.0, 0.001)
