"""RateLoop bookkeeping on a scripted clock (timing itself is a benchmark, not a test)."""

import gc

import pytest

from controllers.rate_loop import RateLoop


class FakeClock:
    """Integer-nanosecond clock; sleep(s) advances it by s plus a scripted oversleep."""

    def __init__(self, oversleep_ns=0):
        self.now = 1_000_000_000
        self.oversleep_ns = oversleep_ns
        self.sleeps = []

    def clock_ns(self):
        self.now += 10  # every reading costs 10 ns
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += round(seconds * 1e9) + self.oversleep_ns


def test_deadlines_are_absolute_and_lateness_is_measured():
    """Work of 300 us per 1 ms tick and 50 us oversleep: each tick starts 50 us late, none drifts."""
    clock = FakeClock(oversleep_ns=50_000)
    starts = []

    def tick(i):
        starts.append(clock.now)
        clock.now += 300_000

    loop = RateLoop(1000.0, clock_ns=clock.clock_ns, sleep=clock.sleep)
    stats = loop.run(tick, 100)
    assert stats.ticks == 100 and stats.overruns == 0 and stats.skipped_deadlines == 0
    assert stats.p50_lateness_us == pytest.approx(50.0, abs=0.1)
    assert stats.max_lateness_us == pytest.approx(50.0, abs=0.1)
    # Absolute deadlines: tick k starts at t0 + k ms + lateness, not accumulating the lateness.
    assert starts[99] - starts[1] == pytest.approx(98 * 1_000_000, abs=100)
    assert loop.runs == [stats]
    assert "overruns" in str(stats) and "p99" in str(stats)


def test_spin_tail_wakes_on_time():
    """With a 200 us spin tail the oversleep is absorbed: lateness is only the clock's reading cost."""
    clock = FakeClock(oversleep_ns=150_000)
    stats = RateLoop(1000.0, spin_s=200e-6, clock_ns=clock.clock_ns, sleep=clock.sleep).run(lambda i: None, 50)
    assert stats.max_lateness_us < 0.1
    assert all(s == pytest.approx(800e-6, abs=1e-6) for s in clock.sleeps[1:])


def test_overruns_are_counted_and_missed_deadlines_skipped():
    """Tick 5 (due at 5 ms) runs to 8.5 ms: one overrun; of the deadlines it ran past (6, 7 and 8 ms) the
    first two are skipped and the next tick takes the 8 ms one, 0.5 ms late, instead of three in a burst."""
    clock = FakeClock()

    def tick(i):
        clock.now += 3_500_000 if i == 5 else 100_000

    stats = RateLoop(1000.0, clock_ns=clock.clock_ns, sleep=clock.sleep).run(tick, 20)
    assert stats.overruns == 1
    assert stats.skipped_deadlines == 2
    assert stats.ticks == 20
    assert stats.max_lateness_us == pytest.approx(500.0, abs=1.0)


def test_stop_early_and_gc_restored():
    clock = FakeClock()
    assert gc.isenabled()
    stats = RateLoop(500.0, clock_ns=clock.clock_ns, sleep=clock.sleep).run(lambda i: i < 9, 100)
    assert stats.ticks == 10
    assert gc.isenabled()


def test_bad_arguments():
    with pytest.raises(ValueError, match="rate_hz"):
        RateLoop(0.0)
    with pytest.raises(ValueError, match="spin_s"):
        RateLoop(100.0, spin_s=-1.0)
    with pytest.raises(ValueError, match="n_ticks"):
        RateLoop(100.0).run(lambda i: None, 0)
