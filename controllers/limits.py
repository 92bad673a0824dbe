"""Safety limits shared by every control law: error clipping, clamping, rate limiting, joint-limit push.

All functions work in place on preallocated float64 arrays and allocate nothing, because they run
inside the 500 Hz - 1 kHz control tick. A bound of ``math.inf`` disables the corresponding limit (the
operations stay exact no-ops).
"""

from __future__ import annotations

import math

import numpy as np


def clamp_(values: np.ndarray, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Clamp ``values`` into [low, high] element-wise, in place; returns ``values``."""
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
    np.minimum(error, upper, out=error)
    np.maximum(error, lower, out=error)
    return error


def rate_limit_(values: np.ndarray, previous: np.ndarray, max_step: float, scratch: np.ndarray) -> np.ndarray:
    """Limit the change from ``previous`` to ``values`` to +-max_step per element, in place; returns ``values``.

    Used for the torque-rate limit: max_step = rate [N*m/s] * tick period [s], so the limit means the same
    thing at any control rate (a Panda allows 1000 N*m/s, i.e. 1 N*m per 1 ms tick).
    ``scratch`` is a work array shaped like ``values``. ``math.inf`` disables the limit. (The controllers
    use ``limit_torque_``, which also reports whether the limit acted.)
    """
    if max_step == math.inf:
        return values
    np.subtract(values, previous, out=scratch)  # requested change
    np.minimum(scratch, max_step, out=scratch)
    np.maximum(scratch, -max_step, out=scratch)  # allowed change
    np.add(previous, scratch, out=values)
    return values


# Bits of ``limit_torque_``'s result.
RATE_LIMITED = 1
CLAMPED = 2


def limit_torque_(
    tau: np.ndarray,
    previous: np.ndarray,
    max_step: float,
    low: np.ndarray,
    high: np.ndarray,
    scratch: np.ndarray,
    scratch2: np.ndarray,
) -> int:
    """Torque-rate limit, then clamp, in place; returns which acted (RATE_LIMITED | CLAMPED bits, 0: none).

    tau <- clamp(previous + clip(tau - previous, -max_step, max_step), low, high), ``previous`` being the
    last command. A limit that does not act leaves ``tau`` bit for bit unchanged. ``math.inf`` disables the
    rate limit, +-``math.inf`` bounds the clamp. ``scratch``, ``scratch2``: work arrays shaped like ``tau``.
    """
    change, allowed = scratch, scratch2
    result = 0
    np.subtract(tau, previous, out=change)
    np.minimum(change, max_step, out=allowed)
    np.maximum(allowed, -max_step, out=allowed)
    np.subtract(change, allowed, out=change)  # part beyond the rate
    if np.dot(change, change) > 0.0:  # a dot product is the cheapest reduction on small arrays
        np.add(previous, allowed, out=tau)
        result = RATE_LIMITED
    np.minimum(tau, high, out=allowed)
    np.maximum(allowed, low, out=allowed)
    np.subtract(tau, allowed, out=change)  # part beyond the bounds
    if np.dot(change, change) > 0.0:
        np.copyto(tau, allowed)
        result |= CLAMPED
    return result


def joint_limit_push_(
    tau: np.ndarray, q: np.ndarray, soft_low: np.ndarray, soft_high: np.ndarray, stiffness: float, scratch: np.ndarray
) -> bool:
    """Add a spring that pushes joints back out of the margin zone inside their limits, in place.

    tau += k (clip(q, soft_low, soft_high) - q): zero while soft_low <= q <= soft_high, then a torque
    growing linearly with the depth into the zone, directed away from the limit (polymetis' soft joint
    limits, deoxys' joint-limit avoidance). Returns True when some joint is inside its zone.
    """
    np.minimum(q, soft_high, out=scratch)
    np.maximum(scratch, soft_low, out=scratch)
    np.subtract(scratch, q, out=scratch)
    if float(np.dot(scratch, scratch)) == 0.0:
        return False
    np.multiply(scratch, stiffness, out=scratch)
    np.add(tau, scratch, out=tau)
    return True


def all_finite(values: np.ndarray) -> bool:
    """True when no element is NaN or +-inf: one dot product, no temporary array.

    A NaN or infinity anywhere makes the sum of squares NaN or infinite; only finite values above 1e154,
    whose squares overflow, would be misreported, and no joint state or torque comes near that.
    """
    return math.isfinite(np.dot(values, values))


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
