"""kill -9 fault test: a recorder is killed at random times; no acknowledged episode may be lost.

The harness lives in benchmarks/crash_safety.py (which runs 200+ trials); here a few trials keep the
suite fast. A child acknowledges an episode on stdout only after `commit` returned; after every kill
the store must open, deep-validate, and hold every acknowledged episode bit for bit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "crash_safety.py"


def load_harness():
    spec = importlib.util.spec_from_file_location("crash_safety", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


def test_kill_9_at_random_times_loses_no_committed_episode(tmp_path: Path) -> None:
    harness = load_harness()
    report = harness.run_trials(tmp_path, trials=6, seed=1234, max_kill_delay_s=0.8, trials_per_store=3)
    assert report.trials == 6
    assert report.problems == []
    assert report.committed_episodes_lost == 0
    assert report.store_open_failures == 0 and report.validation_failures == 0
    assert report.acknowledged_episodes > 0, "the children never got to commit: the trial proved nothing"
    assert report.concurrent_reader_checks > 0, "no reader ran beside the writer"
    assert report.staging_left_after_repair == 0
