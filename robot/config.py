"""Typed dataclass configs <-> command line, with presets as deltas.

Every field of a config dataclass becomes a dotted option (`--agent.num_critics 10`, also spelled
`--agent.num-critics`), typed from its annotation, with the attribute docstring under the field as the
help text and the default shown. Presets are dicts of dotted keys over the defaults (`{"agent.utd_ratio":
4}`), applied with the same machinery as command-line overrides, so a preset is never a full copy.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import inspect
import json
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A config key or value is invalid; the message names the key, the value and what is accepted."""


# ---------------------------------------------------------------------------------------------
# Field docs and types
# ---------------------------------------------------------------------------------------------
@cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings (the string literal right below each field) of a dataclass and its bases."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:], strict=False):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return tp, False


def describe_type(tp: Any) -> str:
    base, optional = _unwrap_optional(tp)
    if isinstance(base, type) and issubclass(base, enum.Enum):
        text = "one of " + ", ".join(repr(m.value) for m in base)
    elif typing.get_origin(base) is tuple:
        text = f"comma-separated {typing.get_args(base)[0].__name__} values"
    elif base is bool:
        text = "true or false"
    else:
        text = getattr(base, "__name__", str(base))
    return text + (" or 'none'" if optional else "")


def parse_value(key: str, raw: Any, tp: Any) -> Any:
    """Convert `raw` (a CLI string or a JSON value) to `tp`, or raise ConfigError naming key and type."""
    base, optional = _unwrap_optional(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() == "none")):
        return None
    try:
        if isinstance(base, type) and issubclass(base, enum.Enum):
            return raw if isinstance(raw, base) else base(raw)
        if base is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).lower()
            if lowered in ("true", "1", "yes", "on"):
                return True
            if lowered in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            items = raw.split(",") if isinstance(raw, str) else raw
            return tuple(item(x) for x in items if str(x).strip() != "")
        if base is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(str(raw).replace("_", "")) if isinstance(raw, str) else int(raw)
        if base is float:
            return float(raw)
        if base in (str, Path):
            return base(raw)
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: expected {describe_type(tp)}, got {raw!r}") from None
    raise ConfigError(f"{key}: unsupported config type {tp!r}")


# ---------------------------------------------------------------------------------------------
# Dotted access
# ---------------------------------------------------------------------------------------------
def flat_fields(config: Any, prefix: str = "") -> dict[str, tuple[Any, Any, str]]:
    """Dotted key -> (type, current value, doc) for every leaf field of a (nested) dataclass instance."""
    out: dict[str, tuple[Any, Any, str]] = {}
    cls = type(config)
    docs = field_docs(cls)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        key = prefix + f.name
        if dataclasses.is_dataclass(value):
            out.update(flat_fields(value, key + "."))
        else:
            out[key] = (_hints(cls)[f.name], value, docs.get(f.name, ""))
    return out


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """Return a copy of `config` with dotted keys replaced (values parsed to the field types).

    Nested dataclasses are rebuilt with `dataclasses.replace`, so each one's `__post_init__` validation
    runs again on the new values.
    """
    known = flat_fields(config)
    nested: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, raw in overrides.items():
        key = key.replace("-", "_")
        if key not in known:
            close = [k for k in known if k.split(".")[-1] == key.split(".")[-1]]
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key '{key}'{hint}")
        head, _, rest = key.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = raw
        else:
            direct[head] = parse_value(key, raw, known[key][0])
    for head, sub in nested.items():
        try:
            direct[head] = apply_overrides(getattr(config, head), sub)
        except ConfigError as err:
            raise ConfigError(f"{head}.{err}") from None
    try:
        return dataclasses.replace(config, **direct)
    except ValueError as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(str(err)) from None


def to_dict(config: Any) -> dict[str, Any]:
    """JSON-ready nested dict (enums as their values, tuples as lists)."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, enum.Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return [convert(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(config)


def from_dict(config: Any, data: dict[str, Any]) -> Any:
    """Apply a nested dict (as written by `to_dict`) onto a default instance of the right classes."""

    def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flatten(v, f"{prefix}{k}."))
            else:
                out[prefix + k] = v
        return out

    return apply_overrides(config, flatten(data))


def save_json(config: Any, path: Path) -> None:
    Path(path).write_text(json.dumps(to_dict(config), indent=2) + "\n")
