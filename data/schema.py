"""What an episode store holds: the per-step fields, their shapes and dtypes, and per-episode metadata.

A `StoreSchema` is saved in the store's root attributes at creation and checked on every append, so a
wrong shape or dtype is caught while recording (with the key and the expected value in the message),
not months later when a learner reads the data.

Per-step keys of every episode (T transitions, T + 1 observations):

| key                      | shape            | dtype    | notes                                        |
|--------------------------|------------------|----------|----------------------------------------------|
| `observation/<name>`     | (T + 1, *shape)  | schema   | row T is the observation after the last step |
| `action`                 | (T, *shape)      | schema   |                                              |
| `reward`                 | (T,)             | float32  |                                              |
| `terminated`             | (T,)             | bool     | true environment termination                 |
| `truncated`              | (T,)             | bool     | cut by a time limit or the operator          |
| `timestamp_s`            | (T,)             | float64  | wall-clock seconds; NaN when not recorded    |
| `intervention`           | (T,)             | bool     | the person's action replaced the policy's    |
| `language_instruction`   | (T,)             | str      | "" when none                                 |
| `language_correction`    | (T,)             | str      | "" when none                                 |
| `info/<name>`            | (T,)             | inferred | free-form scalars, same names every step     |
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Bump when the on-disk layout changes; `EpisodeStore.open` refuses stores newer than this.
SCHEMA_VERSION = 1

# Fixed per-step keys besides `observation/<name>`, `action` and `info/<name>`: name -> dtype.
STEP_SCALARS: dict[str, str] = {
    "reward": "float32",
    "terminated": "bool",
    "truncated": "bool",
    "timestamp_s": "float64",
    "intervention": "bool",
}
STEP_STRINGS: tuple[str, ...] = ("language_instruction", "language_correction")
# Keys a step dict passed to `EpisodeWriter.append` must have; the others default (see module table).
REQUIRED_STEP_KEYS: tuple[str, ...] = ("observation", "action", "reward", "terminated", "truncated")
OPTIONAL_STEP_KEYS: tuple[str, ...] = ("timestamp_s", "intervention", *STEP_STRINGS, "info")

# Observation and info names become directory names inside the store.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class DataValidationError(ValueError):
    """Data or a file does not match what was expected; the message names where, what and why."""


class StoreError(RuntimeError):
    """The store cannot do what was asked in its current state (locked, read-only, missing)."""


class Codec(enum.Enum):
    """Compression of every array in a store. GZIP exists so benchmarks can compare with h5py."""

    ZSTD = "zstd"
    GZIP = "gzip"


class Source(enum.Enum):
    """Where an episode came from; learners mix sources at fixed ratios (demo vs online)."""

    DEMO = "demo"
    ONLINE = "online"
    INTERVENTION = "intervention"
    SYNTHETIC = "synthetic"


def check_name(name: str, what: str) -> None:
    """Names become path components on disk; reject anything that could escape or collide."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DataValidationError(
            f"{what}: expected a name of letters, digits, '_', '.', '-' (not starting with '.' or '-'), got {name!r}"
        )


@dataclass(frozen=True)
class FieldSpec:
    """Shape of one step of a field (without the time axis) and its numpy dtype name.

    Fields with two or more dimensions (camera images H x W x C, depth maps) are stored one frame per
    chunk, many frames per shard file; lower-rank fields are stored as one chunk per episode.
    """

    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        shape = tuple(self.shape)
        if not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
            raise DataValidationError(f"FieldSpec.shape: expected positive integers, got {self.shape!r}")
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        try:
            dtype = np.dtype(self.dtype)
        except TypeError as err:
            raise DataValidationError(f"FieldSpec.dtype: expected a numpy dtype name, got {self.dtype!r}") from err
        if dtype.kind not in "biuf":
            raise DataValidationError(f"FieldSpec.dtype: expected a bool, integer or float dtype, got {self.dtype!r}")
        object.__setattr__(self, "dtype", dtype.name)

    @property
    def is_frame(self) -> bool:
        return len(self.shape) >= 2

    def to_json(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> FieldSpec:
        return cls(shape=tuple(obj["shape"]), dtype=obj["dtype"])


@dataclass(frozen=True)
class StoreSchema:
    """Per-step fields of every episode, plus storage choices that must stay fixed for a store.

    Args:
        observation: observation name -> spec, e.g. {"front": FieldSpec((128, 128, 3), "uint8"),
            "state": FieldSpec((14,), "float32")}.
        action: spec of one action.
        codec: compression of all arrays (zstd with checksums by default).
        codec_level: compression level (zstd 1..22, gzip 1..9); low levels keep recording cheap.
        frames_per_shard: frames per shard file of image-like fields; one frame per chunk inside.
            Larger means fewer files, more memory while recording ((frames x frame bytes) per camera).
    """

    observation: Mapping[str, FieldSpec]
    action: FieldSpec
    codec: Codec = Codec.ZSTD
    codec_level: int = 3
    frames_per_shard: int = 64

    def __post_init__(self) -> None:
        if not self.observation:
            raise DataValidationError("StoreSchema.observation: expected at least one observation field, got none")
        for name, spec in self.observation.items():
            check_name(name, "StoreSchema.observation key")
            if not isinstance(spec, FieldSpec):
                raise DataValidationError(
                    f"StoreSchema.observation[{name!r}]: expected a FieldSpec, got {type(spec).__name__}"
                )
        object.__setattr__(self, "observation", dict(self.observation))
        if not isinstance(self.action, FieldSpec):
            raise DataValidationError(f"StoreSchema.action: expected a FieldSpec, got {type(self.action).__name__}")
        codec = Codec(self.codec)
        object.__setattr__(self, "codec", codec)
        levels = range(1, 23) if codec is Codec.ZSTD else range(1, 10)
        if self.codec_level not in levels:
            raise DataValidationError(
                f"StoreSchema.codec_level: expected {levels.start}..{levels.stop - 1} for {codec.value}, "
                f"got {self.codec_level!r}"
            )
        if not isinstance(self.frames_per_shard, int) or not 1 <= self.frames_per_shard <= 4096:
            raise DataValidationError(
                f"StoreSchema.frames_per_shard: expected an integer in 1..4096, got {self.frames_per_shard!r}"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "observation": {k: v.to_json() for k, v in self.observation.items()},
            "action": self.action.to_json(),
            "codec": self.codec.value,
            "codec_level": self.codec_level,
            "frames_per_shard": self.frames_per_shard,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StoreSchema:
        return cls(
            observation={k: FieldSpec.from_json(v) for k, v in obj["observation"].items()},
            action=FieldSpec.from_json(obj["action"]),
            codec=Codec(obj["codec"]),
            codec_level=int(obj["codec_level"]),
            frames_per_shard=int(obj["frames_per_shard"]),
        )


@dataclass(frozen=True)
class EpisodeMetadata:
    """Per-episode facts. The recorder fills the first five; `commit` fills the rest.

    Args:
        task: task name, e.g. "pick_cube".
        robot: robot or sim config name, e.g. "panda_sim".
        source: how the actions were produced.
        seed: env reset seed when known (None for real-robot episodes).
        config_hash: hash of the run config that produced the episode, "" when none.
        success: task success as judged at commit (None = unknown).
        length: number of transitions T (set by commit).
        started_unix_s / committed_unix_s: wall-clock times of begin and commit (set by the writer).
        extra: free-form JSON-serializable notes (importer provenance, operator name).
    """

    task: str
    robot: str
    source: Source
    seed: int | None = None
    config_hash: str = ""
    success: bool | None = None
    length: int = 0
    started_unix_s: float | None = None
    committed_unix_s: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("task", "robot", "config_hash"):
            if not isinstance(getattr(self, name), str):
                raise DataValidationError(f"EpisodeMetadata.{name}: expected a str, got {getattr(self, name)!r}")
        try:
            object.__setattr__(self, "source", Source(self.source))
        except ValueError as err:
            raise DataValidationError(
                f"EpisodeMetadata.source: expected one of {[s.value for s in Source]}, got {self.source!r}"
            ) from err
        if self.seed is not None and not isinstance(self.seed, (int, np.integer)):
            raise DataValidationError(f"EpisodeMetadata.seed: expected an int or None, got {self.seed!r}")
        if self.success is not None and not isinstance(self.success, (bool, np.bool_)):
            raise DataValidationError(f"EpisodeMetadata.success: expected a bool or None, got {self.success!r}")
        try:
            json.dumps(dict(self.extra))
        except (TypeError, ValueError) as err:
            raise DataValidationError(
                f"EpisodeMetadata.extra: expected JSON-serializable values, got {self.extra!r}"
            ) from err

    def to_json(self) -> dict[str, Any]:
        obj = dataclasses.asdict(self)
        obj["source"] = self.source.value
        obj["extra"] = dict(self.extra)
        if self.seed is not None:
            obj["seed"] = int(self.seed)
        if self.success is not None:
            obj["success"] = bool(self.success)
        return obj

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EpisodeMetadata:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names)
        if unknown:
            raise DataValidationError(
                f"episode metadata: unexpected keys {unknown}, expected a subset of {sorted(names)}"
            )
        return cls(**{k: v for k, v in obj.items()})
