"""Bus round trip: sync read + sync write of 7 Dynamixel servos against the emulator, per cycle.

One cycle = `sync_read(PRESENT_POSITION)` of 7 servos + `sync_write(GOAL_POSITION)` of 7 servos,
through the real driver (retries, parser, value decoding) and the real Protocol 2.0 emulator.
Peer, measured in the same run: the same data moved motor by motor (7 READ + 7 WRITE with status),
which is what a bus without sync instructions costs.

Emulator placement:
- process: the emulator runs in a child process (as a real bus would not share our interpreter);
  this is the headline figure.
- thread: the emulator runs in a thread of this process, as in the tests; it competes for the GIL.
Transports: pty (what a USB adapter looks like) and TCP (`socket://`). Neither adds wire time;
the table also gives the wire time the same bytes take at 1 Mbps on a real RS-485 bus.

Usage: python benchmarks/bus_roundtrip.py [--cycles 2000] [--peer-cycles 500]
Writes benchmarks/results/bus_roundtrip.json.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from hardware.dynamixel import DynamixelBus, Model, Reg  # noqa: E402
from hardware.dynamixel import protocol as dxl  # noqa: E402
from hardware.emulators import EmulatorServer, Transport  # noqa: E402
from hardware.emulators.dynamixel import DynamixelBusEmulator  # noqa: E402
from hardware.motor_bus import Motor, MotorBusConfig  # noqa: E402
from hardware.serial_port import wire_time_s  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "bus_roundtrip.json"
# A 6-DoF arm plus gripper: bigger servos at the base, XL330s toward the wrist.
MODELS = {1: Model.XM430_W350, 2: Model.XM430_W350, 3: Model.XM430_W350, 4: Model.XL330_M288,
          5: Model.XL330_M288, 6: Model.XL330_M288, 7: Model.XL330_M288}
MOTORS = {f"joint{i}": Motor(i, model) for i, model in MODELS.items()}
BAUDRATE = 1_000_000



def _serve_in_child(transport_value: str, conn) -> None:
    server = EmulatorServer(DynamixelBusEmulator.with_models(MODELS), Transport(transport_value))
    conn.send(server.url)
    conn.recv()  # wait for "stop"
    server.close()


class EmulatorHost:
    """The emulator in this process (thread) or in a child process."""

    def __init__(self, transport: Transport, placement: str) -> None:
        self.placement = placement
        if placement == "thread":
            self._server = EmulatorServer(DynamixelBusEmulator.with_models(MODELS), transport)
            self.url = self._server.url
        else:
            ctx = multiprocessing.get_context("spawn")
            self._conn, child = ctx.Pipe()
            self._proc = ctx.Process(target=_serve_in_child, args=(transport.value, child), daemon=True)
            self._proc.start()
            self.url = self._conn.recv()

    def close(self) -> None:
        if self.placement == "thread":
            self._server.close()
        else:
            self._conn.send("stop")
            self._proc.join(timeout=5)


def sync_cycle(bus: DynamixelBus) -> None:
    bus.sync_write(Reg.GOAL_POSITION, bus.sync_read(Reg.PRESENT_POSITION))


def per_motor_cycle(bus: DynamixelBus) -> None:
    present = {name: bus.read(Reg.PRESENT_POSITION, name) for name in MOTORS}
    for name, ticks in present.items():
        bus.write(Reg.GOAL_POSITION, name, ticks)


def measure(url: str, cycle, cycles: int) -> dict:
    config = MotorBusConfig(url, MOTORS, baudrate=BAUDRATE, timeout_s=0.1)
    times_ns = np.empty(cycles, dtype=np.int64)
    with DynamixelBus(config) as bus:
        bus.enable_torque()
        for _ in range(min(200, cycles)):  # warm-up: caches, branch predictors, pty buffers
            cycle(bus)
        for i in range(cycles):
            t0 = time.perf_counter_ns()
            cycle(bus)
            times_ns[i] = time.perf_counter_ns() - t0
        faults, failures = bus.stats.faults, bus.stats.failures
    ms = times_ns / 1e6
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4),
            "mean_ms": round(float(ms.mean()), 4), "max_ms": round(float(ms.max()), 4), "cycles": cycles,
            "faults": faults, "failures": failures}


def wire_ms(method: str) -> float:
    """Time the cycle's bytes occupy a 1 Mbps line (requests + status packets), no latencies."""
    ids = list(MODELS)
    data = {i: bytes(4) for i in ids}
    if method == "sync":
        n = len(dxl.sync_read(132, 4, ids)) + len(ids) * dxl.status_size(4) + len(dxl.sync_write(116, 4, data))
    else:
        n = sum(len(dxl.read(i, 132, 4)) + dxl.status_size(4) + len(dxl.write(i, 116, bytes(4)))
                + dxl.status_size(0) for i in ids)
    return round(wire_time_s(n, BAUDRATE) * 1e3, 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2000, help="sync cycles per configuration")
    parser.add_argument("--peer-cycles", type=int, default=500, help="per-motor cycles per configuration")
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    rows = []
    for placement in ("process", "thread"):
        for transport in (Transport.PTY, Transport.TCP):
            host = EmulatorHost(transport, placement)
            try:
                for method, cycle, cycles in (("sync", sync_cycle, args.cycles),
                                              ("per-motor", per_motor_cycle, args.peer_cycles)):
                    row = {"emulator": placement, "transport": transport.value, "method": method,
                           **measure(host.url, cycle, cycles), "wire_ms_at_1mbps": wire_ms(method)}
                    rows.append(row)
            finally:
                host.close()

    header = (f"{'emulator':9} {'transport':9} {'method':10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'wire@1M ms':>10} {'faults':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['emulator']:9} {r['transport']:9} {r['method']:10} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} "
              f"{r['max_ms']:8.3f} {r['wire_ms_at_1mbps']:10.3f} {r['faults']:6d}")

    def pick(placement: str, transport: str, method: str) -> dict:
        return next(r for r in rows if (r["emulator"], r["transport"], r["method"]) == (placement, transport, method))

    head = pick("process", "pty", "sync")
    peer = pick("process", "pty", "per-motor")
    summary = {
        "p50_ms": head["p50_ms"],
        "p99_ms": head["p99_ms"],
        "servos": len(MOTORS),
        "setup": "sync_read + sync_write of 7 servos, emulator in a child process, over a pty",
        "peer_per_motor_p50_ms": peer["p50_ms"],
        "speedup_vs_per_motor_p50": round(peer["p50_ms"] / head["p50_ms"], 2),
        "wire_ms_at_1mbps": head["wire_ms_at_1mbps"],
        "failures": sum(r["failures"] for r in rows),
    }
    print(f"\nsync cycle p50 {summary['p50_ms']:.3f} ms, p99 {summary['p99_ms']:.3f} ms "
          f"({summary['speedup_vs_per_motor_p50']}x faster than per-motor at p50)")
    write_result(
        "bus_roundtrip", summary, " ".join(["python", *sys.argv]), path=args.out,
        rows=rows,
        pyserial=__import__("serial").VERSION,
        # The machine is shared: p99 is mostly scheduler waits when other jobs keep the cores busy.
        load_average_1m={"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2),
                         "cpus": os.cpu_count()},
    )
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
