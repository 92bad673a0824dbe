"""Reading HDF5 dataset files (D4RL, Minari) with one clear error per problem.

Every error names the file, the key inside it, and what was expected, so a user with a truncated
download or a file from another tool knows what to fix without opening it in a viewer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from data.schema import DataValidationError

HDF5_EXTRA = "hdf5"  # pip extra that provides h5py


def import_h5py() -> ModuleType:
    """h5py, or an ImportError that names the extra to install (h5py is optional for robot-stack)."""
    try:
        import h5py
    except ImportError as err:
        raise ImportError(
            f"h5py is needed to read or write HDF5 datasets; install it with: pip install 'robot-stack[{HDF5_EXTRA}]'"
        ) from err
    return h5py


@contextlib.contextmanager
def open_hdf5(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Open an HDF5 file read-only; a missing, truncated or non-HDF5 file is a DataValidationError."""
    h5py = import_h5py()
    path = Path(path)
    if not path.is_file():
        raise DataValidationError(f"{path}: file not found")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataValidationError(
            f"{path}: cannot be opened as HDF5 ({err}); expected a complete HDF5 file "
            "(a truncated download or a different format gives this error)"
        ) from err
    try:
        yield f
    finally:
        f.close()


def dtype_kind_name(kinds: str) -> str:
    names = {"f": "float", "i": "int", "u": "unsigned int", "b": "bool"}
    return " or ".join(names[k] for k in kinds)


def read_dataset(
    group: Any,
    key: str,
    path: Path,
    *,
    kinds: str,
    ndim: tuple[int, ...],
    rows: int | None = None,
) -> np.ndarray:
    """`group[key]` as a numpy array, checked: present, a dataset, dtype kind, rank, row count.

    `kinds` is a string of numpy dtype kinds ("f", "biuf"); `ndim` the allowed ranks; `rows` the
    expected length of the first axis (None: any).
    """
    h5py = import_h5py()
    where = f"{path}: key {group.name.rstrip('/')}/{key}".replace(": key //", ": key /")
    if key not in group:
        raise DataValidationError(f"{where} is missing; found keys {sorted(group.keys())}")
    node = group[key]
    if not isinstance(node, h5py.Dataset):
        raise DataValidationError(f"{where} is a group; expected a dataset")
    if node.dtype.kind not in kinds:
        raise DataValidationError(f"{where} has dtype {node.dtype}; expected {dtype_kind_name(kinds)}")
    if node.ndim not in ndim:
        expected = " or ".join(f"{n}-D" for n in ndim)
        raise DataValidationError(f"{where} has shape {node.shape}; expected a {expected} array")
    if rows is not None and node.shape[0] != rows:
        raise DataValidationError(f"{where} has shape {node.shape}; expected {rows} rows (first axis)")
    try:
        return node[()]
    except (OSError, ValueError) as err:
        raise DataValidationError(f"{where} cannot be read ({err}); the file may be truncated or damaged") from err


def as_flags(values: np.ndarray, where: str) -> np.ndarray:
    """Episode-end flags: bool arrays as they are, 0/1 numbers (older files) as bool, else an error."""
    if values.dtype.kind == "b":
        return values
    if not np.isin(values, (0, 1)).all():
        bad = values[~np.isin(values, (0, 1))][:3]
        raise DataValidationError(f"{where}: expected bool (or 0/1) flags, got values like {bad.tolist()}")
    return values.astype(bool)
