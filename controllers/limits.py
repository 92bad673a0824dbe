"""Safety limits shared by every control law: error clipping, clamping and rate limiting.

All functions work in place on preallocated float64 arrays and allocate nothing, because they run
inside the 500 Hz - 1 kHz control tick. Each returns the array it modified, for chaining.
A bound of ``math.inf`` disables the corresponding limit (the operations stay exact no-ops).
"""

from __future__ import annotations

import math

import numpy as np


def clamp_(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Clamp ``values`` into [low, high] element-wise, in place."""
    np.minimum(values, high, out=values)
    np.maximum(values, low, out=values)
    return values


def clip_error_(error: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Clip a tracking error (current - desired) per axis into [lower, upper], in place.

    This is SERL's "reference limiting": with a spring of stiffness K on the clipped error the steady
    spring force per axis never exceeds K * max(|lower|, |upper|), however far away the reference is, so
    gains can be high for accuracy while contact forces stay bounded. Usually lower = -upper; an
    asymmetric pair lets a task allow more force in one direction. ``math.inf`` leaves an axis unclipped.
    """
    return clamp_(error, lower, upper)


def rate_limit_(values: np.ndarray, previous: np.ndarray, max_step: float, scratch: np.ndarray) -> np.ndarray:
    """Limit the change from ``previous`` to ``values`` to +-max_step per element, in place.

    Used for the torque-rate limit: max_step = rate [N*m/s] * tick period [s], so the limit means the same
    thing at any control rate (a Panda allows 1000 N*m/s, i.e. 1 N*m per 1 ms tick).
    ``scratch`` is a work array shaped like ``values``. ``math.inf`` disables the limit.
    """
    if max_step == math.inf:
        return values
    np.subtract(values, previous, out=scratch)
    np.minimum(scratch, max_step, out=scratch)
    np.maximum(scratch, -max_step, out=scratch)
    np.add(previous, scratch, out=values)
    return values


def first_order_filter_gain(time_constant_s: float, dt_s: float) -> float:
    """Per-tick blend factor alpha of x <- x + alpha (target - x) for a first-order low-pass filter.

    alpha = 1 - exp(-dt / tau) is the exact discretisation of a continuous filter with time constant
    tau, so the filter behaves the same at 500 Hz and 1 kHz. tau = 0 disables filtering (alpha = 1).
    SERL's 0.005 per 1 ms tick corresponds to tau ~= 0.2 s.
    """
    if time_constant_s < 0.0 or dt_s <= 0.0:
        raise ValueError(
            f"filter needs time_constant_s >= 0 and dt_s > 0, got time_constant_s={time_constant_s}, dt_s={dt_s}"
        )
    if time_constant_s == 0.0:
        return 1.0
    return 1.0 - math.exp(-dt_s / time_constant_s)
