"""The motion model behind every emulated servo: velocity-limited first-order tracking.

Not a motor simulation (that is the MuJoCo twin's job); just enough that positions move toward
goals over time, currents follow tracking error, and a stalled joint shows, so drivers meet the
same register dynamics a real servo bus shows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class ServoDynamics:
    """Args:
    max_speed_ticks_s: speed limit (≈ 1 rev/s by default, near an XL330-M288 unloaded).
    time_constant_s: first-order time constant of position tracking.
    current_per_tick: tracking current per tick of position error, in the model's current units.
    speed_per_current: speed per current unit in current mode (no load), ticks/s.
    """

    max_speed_ticks_s: float = 4096.0
    time_constant_s: float = 0.03
    current_per_tick: float = 2.0
    speed_per_current: float = 20.0


def track_position(
    position_ticks: float, target_ticks: float, dt_s: float, dyn: ServoDynamics, max_speed_ticks_s: float
) -> tuple[float, float]:
    """New (position, velocity) after `dt_s` of tracking `target_ticks`.

    Solved exactly, not stepped, because emulators advance lazily by whatever time passed between
    requests: at the speed limit while the error exceeds speed * tau, then exponential decay.
    """
    error = target_ticks - position_ticks
    sign = 1.0 if error >= 0 else -1.0
    tau = dyn.time_constant_s
    saturated_error = max_speed_ticks_s * tau  # below this error the first-order law is under the cap
    if abs(error) > saturated_error:
        t_saturated = (abs(error) - saturated_error) / max_speed_ticks_s
        if dt_s <= t_saturated:
            return position_ticks + sign * max_speed_ticks_s * dt_s, sign * max_speed_ticks_s
        dt_s -= t_saturated
        error = sign * saturated_error
    error *= math.exp(-dt_s / tau)
    return target_ticks - error, error / tau


def move_at(position_ticks: float, velocity_ticks_s: float, dt_s: float, max_speed_ticks_s: float
            ) -> tuple[float, float]:
    velocity = max(-max_speed_ticks_s, min(max_speed_ticks_s, velocity_ticks_s))
    return position_ticks + velocity * dt_s, velocity
