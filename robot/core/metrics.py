"""Metrics aggregation and sinks (metrics.jsonl + TensorBoard).

Learners return scalar tensors from their update functions; `MeanAggregator` keeps them as tensors and
averages only when a log line is due, so there is no device sync per update step.
Metric names are grouped: `train/...` (losses), `eval/...`, `perf/...` (throughput).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch


class MeanAggregator:
    """Running mean per key over everything added since the last `compute`."""

    def __init__(self) -> None:
        self._values: dict[str, list] = defaultdict(list)

    def add(self, metrics: dict[str, torch.Tensor | float]) -> None:
        for key, value in metrics.items():
            self._values[key].append(value.detach() if isinstance(value, torch.Tensor) else float(value))

    def compute(self) -> dict[str, float]:
        out = {}
        for key, values in self._values.items():
            if isinstance(values[0], torch.Tensor):
                out[key] = torch.stack([v.float().reshape(()) for v in values]).mean().item()
            else:
                out[key] = sum(values) / len(values)
        self._values.clear()
        return out


class MetricsWriter:
    """Appends {"step": N, ...} rows to metrics.jsonl and mirrors them to TensorBoard."""

    def __init__(self, run_dir: Path, resume_step: int | None = None) -> None:
        self.path = Path(run_dir) / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # Rows written after the checkpoint we resume from describe a future that will be replayed.
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [r for r in rows if json.loads(r).get("step", 0) <= resume_step]
            self.path.write_text("".join(r + "\n" for r in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=resume_step)
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the run, closed by close()

    def write(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in metrics.items()}
        row = {"step": step, **clean}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and value is not None:
                self._tb.add_scalar(key, value, step)

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
