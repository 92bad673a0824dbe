"""Shared helpers of the benchmark scripts: machine description and the results JSON."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, object]:
    import os

    info: dict[str, object] = {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    return info


def write_result(name: str, summary: dict, command: str, path: Path | None = None, **figures) -> Path:
    """benchmarks/results/<name>.json (or `path`) with the goal figures under `summary`."""
    path = Path(path) if path is not None else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "summary": summary,
        "command": command,
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        **figures,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def run_worker_pool(module: str, jobs: list[tuple[str, int]], worker_args: list[str], parallel: int,
                    work: Path) -> dict[tuple[str, int], dict]:
    """Run `python -m <module> <worker_args> --worker NAME SEED OUT` for each (name, seed), `parallel` at a time.

    Each worker is its own process (one torch thread each, so runs do not fight over cores) and writes its
    result as JSON to OUT under `work`; returns {(name, seed): that JSON}. A failed worker stops the
    benchmark with its name, seed and exit code.
    """
    import subprocess
    import sys

    pending = list(jobs)
    running: list[tuple[subprocess.Popen, str, int, Path]] = []
    results: dict[tuple[str, int], dict] = {}
    try:
        while pending or running:
            while pending and len(running) < parallel:
                name, seed = pending.pop(0)
                out = work / f"{name}_{seed}.json"
                cmd = [sys.executable, "-m", module, *worker_args, "--worker", name, str(seed), str(out)]
                running.append((subprocess.Popen(cmd), name, seed, out))
            time.sleep(1.0)
            for item in list(running):
                proc, name, seed, out = item
                if proc.poll() is not None:
                    running.remove(item)
                    if proc.returncode != 0:
                        raise SystemExit(f"{module}: {name} seed {seed} failed with exit code {proc.returncode}")
                    results[(name, seed)] = json.loads(out.read_text())
    finally:
        for proc, *_ in running:  # a failure or Ctrl-C leaves no orphaned workers behind
            proc.kill()
            proc.wait()
    return results
