"""Lateness of a 1 kHz ``RateLoop`` running the Cartesian impedance controller on the simulated arm.

Each tick: mj_step1, a new target every 100 ticks (a 10 Hz policy moving the tool around a 5 cm circle),
``compute()``, mj_step2 (timestep 1 ms, so simulated time keeps pace with the wall clock). Two runs of
``--seconds`` each, same work:

- ``spin_tail``: sleep to 200 us before each deadline, then busy-wait (the recommended setting; the
  summary's figures);
- ``sleep_only``: ``time.sleep`` to each deadline (the peer: no busy core, later wake-ups).

Plain CPython, SCHED_OTHER, no CPU isolation: a report of what this machine does, not a gate.

    python -m benchmarks.rate_loop        # writes benchmarks/results/rate_loop.json
"""

from __future__ import annotations

import argparse

import mujoco
import numpy as np

from benchmarks.common import write_result
from benchmarks.controller_cost import make_sim_arm
from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
from controllers.evaluation import circle
from controllers.rate_loop import LoopStats, RateLoop

RATE_HZ = 1000.0
POLICY_EVERY = 100  # ticks between targets (10 Hz)


def run(spin_s: float, seconds: float) -> tuple[LoopStats, float]:
    """One loop run; returns its statistics and the tool's RMS distance to the circle [mm] (a sanity check)."""
    dt_s = 1.0 / RATE_HZ
    model, data, robot = make_sim_arm(dt_s)
    controller = CartesianImpedanceController(robot, CartesianImpedanceConfig(), dt_s)
    controller.reset()
    n_ticks = round(seconds * RATE_HZ)
    start, quat = robot.site_pos_world.copy(), robot.site_quat_world().copy()
    path = circle(np.arange(n_ticks) * dt_s, start, 0.05, 2.0)
    ctrl = data.ctrl[:7]
    distance_sq = np.zeros(n_ticks)
    step1, step2, compute, copyto = mujoco.mj_step1, mujoco.mj_step2, controller.compute, np.copyto

    def tick(i: int) -> None:
        step1(model, data)
        if i % POLICY_EVERY == 0:
            controller.set_target(path[i], quat)
        copyto(ctrl, compute())
        step2(model, data)
        offset = robot.site_pos_world - path[i]
        distance_sq[i] = offset @ offset

    stats = RateLoop(RATE_HZ, spin_s=spin_s).run(tick, n_ticks)
    return stats, float(np.sqrt(distance_sq[: stats.ticks].mean()) * 1e3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run [s]")
    args = parser.parse_args()

    runs = {}
    for label, spin_s in (("spin_tail", 200e-6), ("sleep_only", 0.0)):
        stats, rms_mm = run(spin_s, args.seconds)
        runs[label] = {**stats.as_dict(), "spin_s": spin_s, "tool_rms_distance_to_path_mm": round(rms_mm, 2)}
        print(f"{label:10s} {stats}")

    primary = runs["spin_tail"]
    write_result(
        "rate_loop",
        {"p99_lateness_us": round(primary["p99_lateness_us"], 1), "overruns": primary["overruns"]},
        "python -m benchmarks.rate_loop",
        rate_hz=RATE_HZ,
        seconds=args.seconds,
        runs=runs,
        scenario="Cartesian impedance on the arm-only Panda, 1 ms physics, targets at 10 Hz along a 5 cm circle",
        note="shared 2-core machine, run under nice -n 19 beside training jobs, SCHED_OTHER, no isolation",
    )


if __name__ == "__main__":
    main()
