import math

import numpy as np
import pytest

from controllers.limits import clamp_, clip_error_, first_order_filter_gain, rate_limit_


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
