"""The server's control loop thread: ``RateLoop`` runs in half-second chunks so that statistics stay live.

Each chunk is one ``RateLoop.run`` (absolute deadlines, skipped not caught-up overruns, GC paused); its
``LoopStats`` becomes the latest, and the totals (ticks, overruns, worst p99) accumulate. The loop sleeps
rather than spins: a spinning Python thread would hold the GIL against the API threads.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable

from controllers.rate_loop import LoopStats, RateLoop

# A thread waiting for the GIL gets it after at most this long [s] (CPython's default is 5 ms, which would
# be 5 ms of lateness whenever an API thread holds the GIL at a deadline).
GIL_SWITCH_INTERVAL_S = 0.0002


class ControlLoopThread:
    """Call ``tick()`` at ``rate_hz`` on a daemon thread until ``stop()``; ``stats()`` reports timing.

    A tick that raises stops the loop; the exception is kept in ``error`` (and reported by ``stats``).
    """

    def __init__(self, tick: Callable[[], None], rate_hz: float, chunk_s: float = 0.5) -> None:
        self._tick = tick
        self.rate_hz = rate_hz
        self._chunk = max(1, round(rate_hz * chunk_s))
        self._loop = RateLoop(rate_hz, spin_s=0.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.last: LoopStats | None = None
        self.total_ticks = 0
        self.total_overruns = 0
        self.total_skipped = 0
        self.worst_p99_lateness_us = 0.0
        self.chunks = 0
        self.recent: deque[LoopStats] = deque(maxlen=240)  # the last two minutes of chunks
        self.error: BaseException | None = None

    def start(self) -> None:
        sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _step(self, _i: int) -> bool:
        self._tick()
        return not self._stop.is_set()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                stats = self._loop.run(self._step, self._chunk)
                self._loop.runs.clear()
                with self._lock:
                    self.last = stats
                    self.chunks += 1
                    self.recent.append(stats)
                    self.total_ticks += stats.ticks
                    self.total_overruns += stats.overruns
                    self.total_skipped += stats.skipped_deadlines
                    self.worst_p99_lateness_us = max(self.worst_p99_lateness_us, stats.p99_lateness_us)
        except BaseException as err:  # noqa: BLE001 (reported through stats, the server stays up to say so)
            self.error = err

    def stats(self) -> dict[str, object]:
        with self._lock:
            return {
                "rate_hz": self.rate_hz,
                "running": self.running,
                "error": None if self.error is None else f"{type(self.error).__name__}: {self.error}",
                "total_ticks": self.total_ticks,
                "total_overruns": self.total_overruns,
                "total_skipped_deadlines": self.total_skipped,
                "worst_p99_lateness_us": self.worst_p99_lateness_us,
                "last": None if self.last is None else self.last.as_dict(),
                "chunks": self.chunks,
                "recent_p99_lateness_us": [s.p99_lateness_us for s in self.recent],
                "recent_overruns": [s.overruns for s in self.recent],
            }
