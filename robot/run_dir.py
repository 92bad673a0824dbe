"""Run folders: `runs/<timestamp>-<task>[-name]/` holding config, metrics, TensorBoard, checkpoints, plots.

    config.json          resolved config (every field, defaults included)
    metrics.jsonl        one JSON row per log/eval event: {"step": N, "train/...": ..., "eval/...": ...}
    tensorboard/         the same scalars as TensorBoard events
    checkpoints/step_N/  agent.safetensors (+ .json optimizer layout), replay_*.npz, rng, trainer_state.json
    curve.png            learning curve (eval and train success vs env steps)
    eval_summary.json    final and best evaluation, and every evaluation row
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import envs
from robot.config import ConfigError, from_dict, save_json
from robot.train import TrainConfig


def create_run_dir(root: str | Path, task: str, name: str = "") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = f"{stamp}-{task}" + (f"-{_slug(name)}" if name else "")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path, n = root / base, 1
    while path.exists():  # two runs started in the same second
        n += 1
        path = root / f"{base}-{n}"
    path.mkdir()
    return path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def save_config(run_dir: Path, config: TrainConfig) -> None:
    save_json(config, Path(run_dir) / "config.json")


def load_config(run_dir: str | Path) -> TrainConfig:
    """Read `config.json` of a run folder back into a TrainConfig (with the task's env config class)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir}: not a run folder (no config.json); expected a folder made by 'robot train'")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    spec = envs.get_task(data.get("task", ""))
    if spec.config_cls is None:  # a task without an env config (gymnasium locomotion) saves env: null
        base = TrainConfig(task=spec.name)
        return from_dict(base, {k: v for k, v in data.items() if k != "env"})
    base = TrainConfig(task=spec.name, env=spec.config_cls())
    return from_dict(base, data)
