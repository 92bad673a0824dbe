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
