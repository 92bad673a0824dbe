"""Checkpoint I/O: safetensors for weights and optimizer state, committed atomically.

A checkpoint is a directory `step_<N>/`. It is written under a temporary name, every file is fsynced,
and only then renamed into place (rename is atomic on POSIX), so a kill -9 at any moment leaves either
the previous checkpoints or the new one, never a half-written directory that `latest_checkpoint` would
pick up. Optimizer state is flattened into tensors plus a JSON description of the parameter groups,
so nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

CHECKPOINT_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    for root, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_directory(final_path: Path) -> Iterator[Path]:
    """Yield a temporary directory that becomes `final_path` atomically when the block succeeds."""
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = final_path.parent / f"{_TMP_PREFIX}{final_path.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final_path.exists():
            shutil.rmtree(final_path)
        os.replace(tmp, final_path)
        fsync_dir(final_path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a small text file so that readers see the old or the new content, never a mix."""
    path = Path(path)
    tmp = path.with_name(f"{_TMP_PREFIX}{path.name}")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def checkpoint_path(root: Path, step: int) -> Path:
    return Path(root) / f"{CHECKPOINT_PREFIX}{step:09d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Committed checkpoints under `root`, oldest first (temporary directories are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


def latest_checkpoint(root: Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` committed checkpoints (and stale temporary directories)."""
    for stale in Path(root).glob(f"{_TMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    # safetensors refuses shared or non-contiguous storage; clone makes each tensor standalone.
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: Path, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint file {path} does not exist")
    return load_file(str(path), device=str(device))


def optimizer_state_to_tensors(state: dict, prefix: str = "") -> tuple[dict[str, torch.Tensor], dict]:
    """Split a (possibly nested) optimizer state dict into tensors and a JSON-serialisable remainder."""
    tensors: dict[str, torch.Tensor] = {}

    def split(obj, path: str):
        if isinstance(obj, torch.Tensor):
            tensors[path] = obj
            return {"__tensor__": path}
        if isinstance(obj, dict):
            return {"__dict__": [[_key(k), split(v, f"{path}.{k}")] for k, v in obj.items()]}
        if isinstance(obj, (list, tuple)):
            return {"__list__": [split(v, f"{path}.{i}") for i, v in enumerate(obj)]}
        return obj

    return tensors, split(state, prefix or "opt")


def optimizer_state_from_tensors(tensors: dict[str, torch.Tensor], layout: dict) -> dict:
    def join(obj):
        if isinstance(obj, dict) and "__tensor__" in obj:
            # a copy: torch's load_state_dict keeps same-device tensors by reference, and aliasing the
            # caller's tensors would let two optimizers share moments.
            return tensors[obj["__tensor__"]].clone()
        if isinstance(obj, dict) and "__dict__" in obj:
            return {_unkey(k): join(v) for k, v in obj["__dict__"]}
        if isinstance(obj, dict) and "__list__" in obj:
            return [join(v) for v in obj["__list__"]]
        return obj

    return join(layout)


def _key(k):
    # optimizer state is keyed by int parameter index; JSON keys must survive the round trip typed.
    return {"int": k} if isinstance(k, int) else k


def _unkey(k):
    return k["int"] if isinstance(k, dict) else k


def save_state(directory: Path, name: str, tensors: dict[str, torch.Tensor], layout: dict | None = None) -> None:
    """Write `<name>.safetensors` (+ `<name>.json` layout when given) into a checkpoint directory."""
    save_tensors(Path(directory) / f"{name}.safetensors", tensors)
    if layout is not None:
        (Path(directory) / f"{name}.json").write_text(json.dumps(layout))


def load_state(directory: Path, name: str) -> tuple[dict[str, torch.Tensor], dict | None]:
    tensors = load_tensors(Path(directory) / f"{name}.safetensors")
    layout_path = Path(directory) / f"{name}.json"
    layout = json.loads(layout_path.read_text()) if layout_path.exists() else None
    return tensors, layout
