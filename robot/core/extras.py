"""Optional heavy dependencies behind pip extras, checked in one place.

Configs and the CLI import without any extra; code that needs one calls `require` at construction time
and gets an ImportError that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# extra name -> modules it provides (keep in sync with [project.optional-dependencies]).
EXTRAS: dict[str, tuple[str, ...]] = {
    "ray": ("ray",),
    "lm": ("transformers", "tokenizers"),
    "hardware": ("pyspacemouse", "pylibfranka"),
    "test": ("pytest", "hypothesis", "stable_baselines3", "h5py"),
    "bench": ("stable_baselines3", "h5py", "hdf5plugin"),
    "hdf5": ("h5py",),
    "lerobot": ("pyarrow", "av"),
}


class MissingExtraError(ImportError):
    """A feature needs an optional dependency that is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module` or raise MissingExtraError telling the user which extra to install."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known extras: {', '.join(sorted(EXTRAS))}")
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"'{module}' is needed for this feature but is not installed; "
            f"install it with: pip install 'robot-stack[{extra}]'"
        ) from err
