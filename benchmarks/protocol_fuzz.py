"""Fuzz every wire-protocol parser and emulated device; count inputs tried and crashes (must be 0).

Two generators per target, measured in the same run:
- hypothesis (`st.binary` + random split points): shrinks any failure to a minimal input;
- a mutation fuzzer over valid frames (bit flips, truncation, splicing, duplication, garbage
  prefixes): cheaper per input, and starts from frames the parsers accept, so it reaches deeper.

A crash is any exception other than the typed `ProtocolError` a parser reports bad input with.

Usage: python benchmarks/protocol_fuzz.py [--examples 2000] [--mutations 20000] [--seed 0]
Writes benchmarks/results/protocol_fuzz.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import write_result  # noqa: E402
from hardware.dynamixel import protocol as dxl  # noqa: E402
from hardware.emulators.fuzz_targets import TARGETS  # noqa: E402
from hardware.feetech import protocol as fts  # noqa: E402
from hardware.robotiq import modbus_rtu  # noqa: E402
from hardware.robotiq.registers import GripperCommand  # noqa: E402

RESULT = ROOT / "benchmarks" / "results" / "protocol_fuzz.json"



def seed_frames() -> list[bytes]:
    """Valid frames of every family, requests and replies, as mutation seeds."""
    return [
        dxl.ping(1), dxl.read(1, 132, 4), dxl.write(1, 116, bytes.fromhex("FF FF FD 00")),
        dxl.sync_read(132, 4, [1, 2, 3]), dxl.sync_write(116, 4, {1: bytes(4), 2: b"\xff\xff\xfd\x00"}),
        dxl.bulk_read([(1, 132, 4), (2, 126, 2)]), dxl.build_status(1, 0, b"\x00\x08\x00\x00"),
        dxl.build_status(2, 0x87, b""), dxl.reboot(3),
        fts.ping(1), fts.read(1, 56, 2), fts.sync_read(56, 2, [1, 2]), fts.sync_write(42, 2, {1: b"\x00\x08"}),
        fts.build_packet(1, 0, b"\x00\x08"), fts.write(2, 42, b"\x02\x00"),
        modbus_rtu.read_registers_request(9, 0x07D0, 3),
        modbus_rtu.write_registers_request(9, 0x03E8, GripperCommand(position=255).to_bytes()),
        modbus_rtu.read_registers_response(9, 3, bytes(6)), modbus_rtu.write_registers_response(9, 0x03E8, 3),
        modbus_rtu.exception_response(9, 3, modbus_rtu.ExceptionCode.ILLEGAL_DATA_ADDRESS),
    ]


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:  # bit flip
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif op == 1 and data:  # truncate
            del data[rng.randrange(len(data)) :]
        elif op == 2:  # splice another frame in
            other = rng.choice(seeds)
            at = rng.randint(0, len(data))
            data[at:at] = other[: rng.randint(0, len(other))]
        elif op == 3 and data:  # duplicate a slice
            a = rng.randrange(len(data))
            data[a:a] = data[a : a + rng.randint(1, 8)]
        elif op == 4:  # garbage prefix
            data[0:0] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 8)))
        else:  # random byte overwrite (lengths, ids, counts)
            if data:
                data[rng.randrange(len(data))] = rng.getrandbits(8)
    return bytes(data)


def run_target(name: str, examples: int, mutations: int, seed: int) -> dict:
    target = TARGETS[name]
    stats = {"target": name, "hypothesis_inputs": 0, "mutation_inputs": 0, "crashes": 0,
             "packets": 0, "reported": 0, "first_crash": None}

    def attempt(data: bytes, cuts: list[int]) -> None:
        try:
            outcome = target(data, cuts)
        except Exception as exc:  # the point of the benchmark: count, keep going
            stats["crashes"] += 1
            if stats["first_crash"] is None:
                stats["first_crash"] = {"input_hex": data.hex(), "cuts": cuts, "error": repr(exc),
                                        "traceback": traceback.format_exc(limit=3)}
            return
        stats["packets"] += outcome.packets
        stats["reported"] += outcome.reported

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 800), max_size=6))
    def hypothesis_run(data: bytes, cuts: list[int]) -> None:
        stats["hypothesis_inputs"] += 1
        attempt(data, cuts)

    t0 = time.perf_counter()
    hypothesis_run()
    t1 = time.perf_counter()
    rng = random.Random(seed)
    seeds = seed_frames()
    for _ in range(mutations):
        data = mutate(rng, seeds)
        cuts = [rng.randint(0, len(data)) for _ in range(rng.randint(0, 3))]
        stats["mutation_inputs"] += 1
        attempt(data, cuts)
    t2 = time.perf_counter()
    stats["hypothesis_inputs_per_s"] = stats["hypothesis_inputs"] / max(t1 - t0, 1e-9)
    stats["mutation_inputs_per_s"] = stats["mutation_inputs"] / max(t2 - t1, 1e-9)
    return stats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="hypothesis examples per target")
    parser.add_argument("--mutations", type=int, default=20000, help="mutated frames per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULT)
    args = parser.parse_args()

    rows = [run_target(name, args.examples, args.mutations, args.seed) for name in sorted(TARGETS)]
    header = (f"{'target':34} {'hyp in':>7} {'hyp/s':>8} {'mut in':>7} {'mut/s':>8} {'decoded':>8} "
              f"{'reported':>9} {'crash':>5}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['target']:34} {r['hypothesis_inputs']:7d} {r['hypothesis_inputs_per_s']:8.0f} "
              f"{r['mutation_inputs']:7d} {r['mutation_inputs_per_s']:8.0f} {r['packets']:8d} "
              f"{r['reported']:9d} {r['crashes']:5d}")
    summary = {
        "inputs_tried": sum(r["hypothesis_inputs"] + r["mutation_inputs"] for r in rows),
        "crashes": sum(r["crashes"] for r in rows),
        "targets": len(rows),
        "errors_reported": sum(r["reported"] for r in rows),
    }
    print(f"\ninputs tried {summary['inputs_tried']}, crashes {summary['crashes']}")
    write_result(
        "protocol_fuzz", summary, " ".join(["python", *sys.argv]), path=args.out,
        rows=rows,
        settings={"examples_per_target": args.examples, "mutations_per_target": args.mutations,
                  "seed": args.seed},
    )
    return 1 if summary["crashes"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
