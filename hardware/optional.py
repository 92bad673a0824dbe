"""Optional dependencies of the hardware layer, checked when a driver is constructed.

`hardware` may not import `robot`, so this is the hardware layer's own small copy of the guard in
`robot/core/extras.py`. Extra names must match `[project.optional-dependencies]` in pyproject.toml.
"""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """A driver needs an optional dependency that is not installed."""


def require(module: str, extra: str) -> ModuleType:
    """Import `module`, or raise MissingExtraError naming the pip extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtraError(
            f"'{module}' is needed for this device but is not installed; "
            f"install it with: pip install 'robot-stack[{extra}]'"
        ) from err
