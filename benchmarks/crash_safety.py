"""Fault test of the episode store: kill -9 a recording process at random times, many trials.

Each trial starts a child process that opens one shared store for writing (its open repairs whatever
the previous killed child left) and records short episodes in a loop, printing `ACK <index> <seed>`
only after `commit` returned. The parent, meanwhile, opens the store read-only and validates what it
sees (a reader beside a live writer), then sends SIGKILL at a random time. After each kill it checks:
the store opens and validates (deep: every chunk decoded), every acknowledged episode is present and
bit-identical to what the child generated from its seed, and so is every other committed episode.

    python benchmarks/crash_safety.py --trials 200

writes benchmarks/results/crash_safety.json; tests/data/test_episode_store_crash.py runs a few trials.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, when run as a script

import numpy as np

from benchmarks.common import cpu_name  # noqa: E402
from data.episode_store import EpisodeStore
from data.schema import DataValidationError, EpisodeMetadata, FieldSpec, Source, StoreSchema

REPO_ROOT = Path(__file__).resolve().parents[1]
# Small frames and shards so that one episode spans several shard flushes and commits are frequent:
# most of the child's time is spent inside append/commit, where the kills should land.
SCHEMA = StoreSchema(
    observation={
        "front": FieldSpec((24, 24, 3), "uint8"),
        "wrist": FieldSpec((24, 24, 3), "uint8"),
        "state": FieldSpec((7,), "float32"),
    },
    action=FieldSpec((4,), "float32"),
    frames_per_shard=8,
)
MAX_STEPS = 40


def episode_content(seed: int) -> dict:
    """Deterministic episode from its seed, so the parent can check it bit for bit."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(1, MAX_STEPS + 1))
    frames = {k: rng.integers(0, 256, (steps + 1, 24, 24, 3), dtype=np.uint8) for k in ("front", "wrist")}
    return {
        "observation/front": frames["front"],
        "observation/wrist": frames["wrist"],
        "observation/state": rng.standard_normal((steps + 1, 7)).astype(np.float32),
        "action": rng.uniform(-1, 1, (steps, 4)).astype(np.float32),
        "reward": rng.standard_normal(steps).astype(np.float32),
        "terminated": np.arange(steps) == steps - 1,
        "language_instruction": [f"task {seed}"] * steps,
    }


def record_forever(store_path: Path, child_seed: int) -> None:
    """Child process body: record episodes until killed."""
    store = EpisodeStore.open(store_path, mode="a")
    print("READY", flush=True)
    for k in range(10**9):
        seed = child_seed * 1_000_000 + k
        data = episode_content(seed)
        steps = len(data["action"])
        meta = EpisodeMetadata(task="crash", robot="sim", source=Source.SYNTHETIC, seed=seed)
        with store.begin_episode(meta) as writer:
            for t in range(steps):
                writer.append(
                    {
                        "observation": {n: data[f"observation/{n}"][t] for n in SCHEMA.observation},
                        "action": data["action"][t],
                        "reward": data["reward"][t],
                        "terminated": bool(data["terminated"][t]),
                        "truncated": False,
                        "language_instruction": data["language_instruction"][t],
                    }
                )
            final = {n: data[f"observation/{n}"][steps] for n in SCHEMA.observation}
            index = writer.commit(final, success=True)
        print(f"ACK {index} {seed}", flush=True)


def episode_problems(store: EpisodeStore, index: int, seed: int | None = None) -> list[str]:
    """Differences between committed episode `index` and what its seed generates."""
    meta = store.metadata(index)
    if seed is not None and meta.seed != seed:
        return [f"episode {index}: seed {meta.seed}, acknowledged with seed {seed}"]
    expected = episode_content(meta.seed)
    got = store.episode(index).load(expected.keys())
    bad = [k for k in expected if not np.array_equal(np.asarray(got[k]), np.asarray(expected[k]))]
    return [f"episode {index}: {k} differs from what was recorded" for k in bad]


@dataclass
class CrashReport:
    trials: int = 0
    acknowledged_episodes: int = 0
    committed_episodes: int = 0
    store_open_failures: int = 0
    validation_failures: int = 0
    concurrent_reader_checks: int = 0
    staging_removed_by_repair: int = 0
    staging_left_after_repair: int = 0
    problems: list[str] = field(default_factory=list)
    lost: set[tuple[str, int]] = field(default_factory=set)  # (store name, episode index)

    @property
    def committed_episodes_lost(self) -> int:
        return len(self.lost)


def _reader_check(store_path: Path) -> None:
    """What a reader beside a live writer does: open, validate the snapshot, read the newest episode."""
    reader = EpisodeStore.open(store_path, mode="r")
    reader.validate()
    if len(reader):
        reader.episode(-1).load(["observation/front", "action"])


def run_trials(
    root: Path, trials: int, seed: int = 0, max_kill_delay_s: float = 1.5, trials_per_store: int = 10
) -> CrashReport:
    """Run `trials` kill -9 trials; every `trials_per_store` trials share one store under `root`.

    Sharing a store makes each child recover from the previous child's crash; starting a new one now
    and then keeps the per-trial checks (which re-read the store) short.
    """
    rng = np.random.default_rng(seed)
    report = CrashReport()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
    acked: dict[int, int] = {}  # index -> seed, for the current store
    store_path = root
    checked = 0  # episodes of the current store already deep-checked
    for trial in range(trials):
        if trial % trials_per_store == 0:
            if trial:
                _final_check(store_path, acked, report)
            store_path = root / f"store_{trial // trials_per_store:04d}"
            EpisodeStore.create(store_path, SCHEMA).close()
            acked, checked = {}, 0
        child_seed = seed * 100_000 + trial + 1
        lines, returncode, stderr = _run_child(store_path, child_seed, rng, max_kill_delay_s, report, trial, env)
        if returncode != -signal.SIGKILL:
            report.problems.append(f"trial {trial}: child exited with {returncode}: {stderr[-2000:]}")
        for line in lines.splitlines(keepends=True):
            parts = line.split()
            if line.endswith("\n") and len(parts) == 3 and parts[0] == "ACK":
                acked[int(parts[1])] = int(parts[2])
                report.acknowledged_episodes += 1
        report.trials += 1
        checked = _check_after_kill(store_path, acked, checked, trial, report)
    if trials:
        _final_check(store_path, acked, report)
    return report


def _run_child(
    store_path: Path,
    child_seed: int,
    rng: np.random.Generator,
    max_kill_delay_s: float,
    report: CrashReport,
    trial: int,
    env: dict[str, str],
) -> tuple[str, int, str]:
    """Start a recorder, read the store beside it, SIGKILL it at a random time; (stdout, rc, stderr)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(store_path), "--seed", str(child_seed)]
    # The child appends (O_APPEND) to log files the parent reads by path: no shared file offset, and
    # no pipe that could fill up and block the child.
    out_path, err_path = store_path.parent / f"trial_{trial}.out", store_path.parent / f"trial_{trial}.err"
    with open(out_path, "ab") as out, open(err_path, "ab") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
    try:
        deadline = None
        while proc.poll() is None:
            if deadline is None:
                if out_path.read_bytes().startswith(b"READY"):
                    deadline = time.monotonic() + rng.uniform(0.0, max_kill_delay_s)
            elif time.monotonic() >= deadline:
                break
            if deadline is not None:
                try:
                    _reader_check(store_path)
                    report.concurrent_reader_checks += 1
                except Exception as exc:  # a reader must never fail beside a writer
                    report.problems.append(f"trial {trial}: concurrent reader: {type(exc).__name__}: {exc}")
            time.sleep(rng.uniform(0.0, 0.05))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stdout, stderr = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    return stdout, proc.returncode, stderr


def _check_after_kill(store_path: Path, acked: dict[int, int], checked: int, trial: int, report: CrashReport) -> int:
    """Store opens; shallow-validates; new episodes deep-validate and match their seeds; acks present."""
    report.staging_removed_by_repair += sum(1 for p in (store_path / "staging").iterdir() if p.is_dir())
    try:
        store = EpisodeStore.open(store_path, mode="r")
    except Exception as exc:
        report.store_open_failures += 1
        report.problems.append(f"trial {trial}: store does not open: {type(exc).__name__}: {exc}")
        return checked
    try:
        store.validate()
        store.validate(deep=True, episodes=range(checked, len(store)))
    except DataValidationError as exc:
        report.validation_failures += 1
        report.problems.append(f"trial {trial}: {exc}")
    for index, seed in acked.items():
        if index >= len(store) or store.metadata(index).seed != seed:
            report.lost.add((store_path.name, index))
            report.problems.append(f"trial {trial}: acknowledged episode {index} (seed {seed}) is missing")
    for index in range(checked, len(store)):  # acknowledged or not (killed between rename and print)
        report.problems.extend(f"trial {trial}: {p}" for p in episode_problems(store, index))
    return len(store)


def _final_check(store_path: Path, acked: dict[int, int], report: CrashReport) -> None:
    """After the last kill on a store: repair, deep-validate all, every ack bit-identical."""
    with EpisodeStore.open(store_path, mode="a") as store:
        store.repair()
        try:
            store.validate(deep=True)
        except DataValidationError as exc:
            report.validation_failures += 1
            report.problems.append(f"final check: {exc}")
        for index, seed in acked.items():
            problems = episode_problems(store, index, seed) if index < len(store) else [f"{index} missing"]
            if problems:
                report.lost.add((store_path.name, index))
            report.problems.extend(f"final check {store_path.name}: {p}" for p in problems)
        report.committed_episodes += len(store)
        report.staging_left_after_repair += sum(1 for p in (store_path / "staging").iterdir() if p.is_dir())
    shutil.rmtree(store_path)  # checked; 10 trials leave ~400 episodes (~12k files) behind



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-kill-delay-s", type=float, default=1.5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "crash_safety.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        record_forever(args.child, args.seed)
        return
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_trials(Path(tmp), args.trials, args.seed, args.max_kill_delay_s)
    elapsed_s = time.monotonic() - start
    rows = [
        ("trials", report.trials),
        ("acknowledged episodes", report.acknowledged_episodes),
        ("committed episodes", report.committed_episodes),
        ("committed episodes lost", report.committed_episodes_lost),
        ("store open failures", report.store_open_failures),
        ("validation failures", report.validation_failures),
        ("concurrent reader checks", report.concurrent_reader_checks),
        ("staging dirs left by kills", report.staging_removed_by_repair),
        ("staging dirs after repair", report.staging_left_after_repair),
        ("other problems", len(report.problems)),
        ("wall time [s]", round(elapsed_s, 1)),
    ]
    for name, value in rows:
        print(f"{name:<28} {value:>10}")
    for problem in report.problems[:20]:
        print("PROBLEM:", problem)
    result = {
        "summary": {
            "trials": report.trials,
            "committed_episodes_lost": report.committed_episodes_lost,
            "acknowledged_episodes": report.acknowledged_episodes,
            "store_open_failures": report.store_open_failures,
            "validation_failures": report.validation_failures,
            "problems": len(report.problems),
        },
        "details": {
            "committed_episodes": report.committed_episodes,
            "concurrent_reader_checks": report.concurrent_reader_checks,
            "staging_dirs_left_by_kills": report.staging_removed_by_repair,
            "staging_dirs_after_repair": report.staging_left_after_repair,
            "max_kill_delay_s": args.max_kill_delay_s,
            "wall_time_s": round(elapsed_s, 1),
            "problems": report.problems[:50],
        },
        "command": " ".join(["python benchmarks/crash_safety.py", *sys.argv[1:]]),
        "machine": cpu_name(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out.relative_to(REPO_ROOT) if args.out.is_relative_to(REPO_ROOT) else args.out}")
    if report.committed_episodes_lost or report.problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
