"""Fixed-rate loop runner: absolute deadlines, optional busy-wait tail, lateness statistics per run.

Tick k is due at t_0 + k * period (``time.perf_counter_ns``); the loop never sleeps "one period", so a late
tick does not shift the ones after it. A tick whose work runs past the next deadline is an overrun; if it
runs past several, the missed deadlines are skipped rather than caught up in a burst (polymetis' spinner
does the same). Lateness = start of the tick - its deadline.

Waiting sleeps until ``spin_s`` before the deadline, then busy-waits: on a stock Linux kernel ``time.sleep``
wakes 50-700 us late, a spin tail of ~200 us brings the median down to about a microsecond at the cost of
a busy core (reference 4). CPython cannot promise 1 kHz on real hardware; the statistics say how close a
machine gets, and a real arm's 1 kHz torque loop belongs in the robot's real-time process.

The loop allocates nothing per tick (lateness and work times go to arrays sized before the start) and
pauses the garbage collector while it runs, by default.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LoopStats:
    """Timing of one ``RateLoop.run``: lateness of each tick's start and duration of its work [us]."""

    rate_hz: float
    """Requested rate [Hz]."""
    ticks: int
    """Ticks run."""
    duration_s: float
    """Wall time from the first deadline to the end of the last tick [s]."""
    p50_lateness_us: float
    """Median lateness of a tick's start after its deadline [us]."""
    p99_lateness_us: float
    """99th percentile of the lateness [us]."""
    max_lateness_us: float
    """Largest lateness [us]."""
    overruns: int
    """Ticks whose work ended after the next tick's deadline."""
    skipped_deadlines: int
    """Deadlines dropped because an overrun ran past them (skipped, not caught up)."""
    p50_work_us: float
    """Median duration of the tick function [us]."""
    p99_work_us: float
    """99th percentile of the tick function's duration [us]."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.rate_hz:g} Hz x {self.ticks} ticks ({self.duration_s:.2f} s): lateness p50 "
            f"{self.p50_lateness_us:.1f} us, p99 {self.p99_lateness_us:.1f} us, max {self.max_lateness_us:.1f} us; "
            f"{self.overruns} overruns, {self.skipped_deadlines} skipped deadlines; work p50 "
            f"{self.p50_work_us:.1f} us, p99 {self.p99_work_us:.1f} us"
        )


class RateLoop:
    """Run a tick function at a fixed rate on absolute deadlines and keep each run's ``LoopStats``.

    Args:
        rate_hz: ticks per second (> 0).
        spin_s: busy-wait this long before each deadline instead of sleeping [s]; 0 sleeps all the way
            (cheapest, wakes later); 0.0002 is a good tail on Linux.
        pause_gc: disable Python's garbage collector during a run (restored afterwards).
        clock_ns: monotonic clock in integer nanoseconds (tests pass a fake one).
        sleep: sleep function taking seconds (tests pass a fake one).
    """

    def __init__(
        self,
        rate_hz: float,
        spin_s: float = 0.0,
        pause_gc: bool = True,
        clock_ns: Callable[[], int] = time.perf_counter_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not rate_hz > 0.0:
            raise ValueError(f"rate_hz must be > 0, got {rate_hz!r}")
        if not spin_s >= 0.0:
            raise ValueError(f"spin_s must be >= 0 (0 disables the busy-wait tail), got {spin_s!r}")
        self.rate_hz = rate_hz
        self.period_ns = round(1e9 / rate_hz)
        self.spin_ns = round(spin_s * 1e9)
        self.pause_gc = pause_gc
        self._clock_ns = clock_ns
        self._sleep = sleep
        #: statistics of every run so far, oldest first.
        self.runs: list[LoopStats] = []

    def run(self, tick: Callable[[int], object], n_ticks: int) -> LoopStats:
        """Call ``tick(i)`` for i = 0 .. n_ticks - 1, one per deadline; stops early if it returns False.

        The first deadline is now. Returns (and appends to ``runs``) the run's statistics.
        """
        if n_ticks < 1:
            raise ValueError(f"n_ticks must be >= 1, got {n_ticks!r}")
        clock, sleep = self._clock_ns, self._sleep
        period, spin = self.period_ns, self.spin_ns
        lateness_ns = np.zeros(n_ticks, dtype=np.int64)
        work_ns = np.zeros(n_ticks, dtype=np.int64)
        overruns = skipped = ticks = 0
        gc_was_enabled = gc.isenabled()
        if self.pause_gc:
            gc.disable()
        try:
            start = deadline = clock()
            end = start
            while ticks < n_ticks:
                now = clock()
                if deadline - spin - now > 0:
                    sleep((deadline - spin - now) * 1e-9)
                    now = clock()
                while now < deadline:  # busy-wait tail (and any early wake-up of sleep)
                    now = clock()
                keep_going = tick(ticks)
                end = clock()
                lateness_ns[ticks] = now - deadline
                work_ns[ticks] = end - now
                ticks += 1
                deadline += period
                if end > deadline:
                    overruns += 1
                    missed = (end - deadline) // period  # deadlines entirely in the past: skip them
                    skipped += missed
                    deadline += missed * period
                if keep_going is False:
                    break
        finally:
            if self.pause_gc and gc_was_enabled:
                gc.enable()
        stats = _summarise(self.rate_hz, lateness_ns[:ticks], work_ns[:ticks], end - start, overruns, skipped)
        self.runs.append(stats)
        return stats


def _summarise(
    rate_hz: float, lateness_ns: np.ndarray, work_ns: np.ndarray, duration_ns: int, overruns: int, skipped: int
) -> LoopStats:
    late_p50, late_p99 = np.percentile(lateness_ns, [50, 99]) / 1e3
    work_p50, work_p99 = np.percentile(work_ns, [50, 99]) / 1e3
    return LoopStats(
        rate_hz=rate_hz,
        ticks=len(lateness_ns),
        duration_s=duration_ns / 1e9,
        p50_lateness_us=float(late_p50),
        p99_lateness_us=float(late_p99),
        max_lateness_us=float(lateness_ns.max()) / 1e3,
        overruns=overruns,
        skipped_deadlines=int(skipped),
        p50_work_us=float(work_p50),
        p99_work_us=float(work_p99),
    )
