"""Episode store: recorded episodes in a zarr v3 directory, committed atomically, crash-safe.

A recorded real-robot episode can cost an hour of a person's time, so the store is built around one
promise: an episode the writer acknowledged (`commit` returned) is never lost or damaged, whatever
happens afterwards, and an episode that was not acknowledged is either fully there or invisible.

On disk (`<store>/`):

    zarr.json             root zarr group; attributes hold the schema and SCHEMA_VERSION
    writer.lock           flock'ed by the one process allowed to write (released by the kernel on death)
    episodes/000000/      committed episodes, one zarr group each, never modified after commit
    staging/<uuid>/       episodes being recorded; readers never look here

Crash-safety argument (kill -9 or power loss at any instruction):
1. `begin_episode` creates `staging/<uuid>/`. Appends fill it (image frames in shard files as they
   fill, other arrays in memory). Nothing under `episodes/` changes, so readers and committed
   episodes are untouched whatever happens here.
2. `commit` writes the remaining arrays and the final metadata into the staging directory, then
   fsyncs every file and directory in it (so its bytes survive power loss, not just kill -9).
3. `commit` renames `staging/<uuid>` to `episodes/<index>`. rename(2) of a directory is atomic: any
   process sees either no `episodes/<index>` or the complete episode. This single step *is* the commit;
   there is no manifest to update, so there is no second step that could be half-done.
4. `commit` fsyncs `episodes/` (makes the rename durable), then returns: only now may a caller
   acknowledge the episode. A crash before step 3 leaves a staging directory (invisible, removed by the
   next writer); a crash between 3 and 4 leaves a complete, visible episode that was not acknowledged.
The index is `len(committed)` at commit time; `writer.lock` guarantees one writing process, and a
thread lock serialises commits within it, so two episodes never race for one name and indices stay
contiguous. Readers list `episodes/` and keep the longest run 0..n-1 (readdir may return a name
created during the listing without an earlier one); each listed episode is complete and immutable,
so a reader sees a consistent snapshot; `refresh()` takes a new one.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from zarr.storage import LocalStore

from data.schema import (
    OPTIONAL_STEP_KEYS,
    REQUIRED_STEP_KEYS,
    SCHEMA_VERSION,
    STEP_SCALARS,
    STEP_STRINGS,
    DataValidationError,
    EpisodeMetadata,
    FieldSpec,
    Source,
    StoreError,
    StoreSchema,
    check_name,
)
from data.zarr_layout import (
    ArrayReader,
    fsync_later,
    fsync_path,
    fsync_tree,
    write_frame_metadata,
    write_group,
    write_shard,
    write_vector_array,
)

EPISODES_DIR = "episodes"
STAGING_DIR = "staging"
LOCK_FILE = "writer.lock"
ROOT_ATTR = "robot_stack_episode_store"
EPISODE_ATTR = "episode"
_NAME_WIDTH = 6
_READER_CACHE_SIZE = 4096  # open ArrayReaders kept by a store (each holds parsed metadata + shard indexes)


def episode_name(index: int) -> str:
    return f"{index:0{_NAME_WIDTH}d}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as err:
        raise DataValidationError(f"{path}: file is missing") from err
    except (OSError, ValueError) as err:
        raise DataValidationError(f"{path}: cannot read JSON ({err})") from err


def _list_episodes(episodes_dir: Path) -> tuple[int, list[int], list[str]]:
    """(length of the run 0..n-1, all committed indices sorted, names that are not episode indices)."""
    indices, strays = [], []
    for name in os.listdir(episodes_dir):
        if name.isdigit() and len(name) >= _NAME_WIDTH:
            indices.append(int(name))
        elif name != "zarr.json":
            strays.append(name)
    indices.sort()
    run = 0
    while run < len(indices) and indices[run] == run:
        run += 1
    return run, indices, strays


@dataclass(frozen=True)
class Transitions:
    """All transitions of a set of episodes as flat arrays, for replay buffers and offline learners.

    Observations are stored once per row (T + 1 rows per episode); transition i starts in row
    `obs_index[i]` and ends in row `next_obs_index[i]` (= obs_index + 1), so images are not duplicated.
    """

    observation: dict[str, np.ndarray]  # name -> (R, *shape), R = N + number of episodes
    action: np.ndarray  # (N, *action_shape)
    reward: np.ndarray  # (N,) float32
    terminated: np.ndarray  # (N,) bool
    truncated: np.ndarray  # (N,) bool
    intervention: np.ndarray  # (N,) bool
    obs_index: np.ndarray  # (N,) int64
    next_obs_index: np.ndarray  # (N,) int64
    episode_index: np.ndarray  # (N,) int64, store index of each transition's episode
    episode_starts: np.ndarray  # (E + 1,) int64 offsets into the transition arrays

    def __len__(self) -> int:
        return len(self.reward)


class Episode:
    """A committed episode: metadata now, arrays on demand."""

    def __init__(self, store: EpisodeStore, index: int, metadata: EpisodeMetadata) -> None:
        self.store = store
        self.index = index
        self.metadata = metadata
        self.path = store.path / EPISODES_DIR / episode_name(index)

    def __len__(self) -> int:
        return self.metadata.length

    def __repr__(self) -> str:
        m = self.metadata
        return f"Episode(index={self.index}, length={m.length}, task={m.task!r}, source={m.source.value})"

    def keys(self) -> list[str]:
        """Per-step keys of this episode: the schema's plus its `info/<name>` keys."""
        info_dir = self.path / "info"
        info = sorted(p.name for p in info_dir.iterdir() if p.is_dir()) if info_dir.is_dir() else []
        return self.store.step_keys() + [f"info/{name}" for name in info]

    def array(self, key: str) -> zarr.Array:
        """The zarr array of `key` (read lazily; slicing reads only the chunks it needs)."""
        if not (self.path / key / "zarr.json").is_file():
            raise KeyError(f"{self.path}: no array {key!r}; keys are {self.keys()}")
        return zarr.open_array(self.path / key, mode="r")

    def load(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Whole arrays in memory, key -> (T or T + 1, ...)."""
        out = {}
        for key in self.keys() if keys is None else keys:
            if key in STEP_STRINGS:
                out[key] = np.array(np.asarray(self.array(key)[...]).tolist(), dtype=np.str_)
            else:
                out[key] = self.store._reader(self.index, key).read_all()
        return out


class EpisodeStore:
    """A directory of committed episodes; see the module docstring for the layout and the guarantees.

    Use `EpisodeStore.create(path, schema)` or `EpisodeStore.open(path, mode)`; mode "r" reads (any
    number of processes, also while a writer records), mode "a" also records (one process at a time).
    """

    def __init__(self, path: Path, schema: StoreSchema, mode: Literal["r", "a"], lock_fd: int | None) -> None:
        self.path = path
        self.schema = schema
        self.mode = mode
        self._lock_fd = lock_fd
        self._commit_lock = threading.Lock()
        self._writers: set[EpisodeWriter] = set()
        self._metadata: dict[int, EpisodeMetadata] = {}
        self._readers: OrderedDict[tuple[int, str], ArrayReader] = OrderedDict()
        self._count = 0
        self.refresh()

    # ----------------------------------------------------------------------------------- lifecycle
    @classmethod
    def create(cls, path: str | os.PathLike[str], schema: StoreSchema) -> EpisodeStore:
        """Create an empty store at `path` (which must not exist) and open it for recording.

        The store is assembled in a hidden sibling directory and renamed into place, so a crash never
        leaves a half-created store at `path`.
        """
        path = Path(path)
        if path.exists():
            raise StoreError(f"{path}: already exists; open it with EpisodeStore.open(path, mode='a')")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.creating"
        try:
            root = zarr.create_group(
                store=LocalStore(tmp),
                attributes={ROOT_ATTR: {"schema_version": SCHEMA_VERSION, "schema": schema.to_json()}},
            )
            root.create_group(EPISODES_DIR)
            root.create_group(STAGING_DIR)
            (tmp / LOCK_FILE).touch()
            fsync_tree(tmp)
            try:
                os.rename(tmp, path)
            except OSError as err:
                raise StoreError(f"{path}: already exists (created concurrently by another process)") from err
            fsync_path(path.parent)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return cls.open(path, mode="a")

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: Literal["r", "a"] = "r") -> EpisodeStore:
        """Open an existing store. Mode "a" takes the writer lock and removes stale staging episodes."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode: expected 'r' or 'a', got {mode!r}")
        if not path.is_dir():
            raise StoreError(f"{path}: no episode store here; create one with EpisodeStore.create(path, schema)")
        schema = cls._read_schema(path)
        lock_fd = cls._acquire_writer_lock(path) if mode == "a" else None
        try:
            store = cls(path, schema, mode, lock_fd)
            if mode == "a":
                store.repair()
        except BaseException:
            if lock_fd is not None:
                os.close(lock_fd)
            raise
        return store

    @staticmethod
    def _read_schema(path: Path) -> StoreSchema:
        meta_path = path / "zarr.json"
        attrs = _read_json(meta_path).get("attributes", {}).get(ROOT_ATTR)
        if not isinstance(attrs, dict):
            raise DataValidationError(f"{meta_path}: not an episode store (no {ROOT_ATTR!r} attribute)")
        version = attrs.get("schema_version")
        if not isinstance(version, int) or version < 1:
            raise DataValidationError(f"{meta_path}: schema_version: expected a positive int, got {version!r}")
        if version > SCHEMA_VERSION:
            raise DataValidationError(
                f"{meta_path}: schema_version {version} is newer than this code reads ({SCHEMA_VERSION}); "
                "upgrade robot-stack"
            )
        try:
            return StoreSchema.from_json(attrs["schema"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataValidationError(f"{meta_path}: schema: cannot parse ({err})") from err

    @staticmethod
    def _acquire_writer_lock(path: Path) -> int:
        lock_path = path / LOCK_FILE
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StoreError(
                f"{path}: another writer holds {lock_path} (pid {holder}); close it, or open with mode='r' to read"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def close(self) -> None:
        """Abort episodes still being recorded (they were never committed) and release the writer lock."""
        for writer in list(self._writers):
            writer.abort()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def repair(self) -> list[str]:
        """Remove staging episodes left by a crashed writer; returns their names. Needs mode "a".

        A staging episode was never committed (never acknowledged to the caller), so removing it loses
        nothing that was promised. Also refuses a store whose committed indices have a gap.
        """
        self._require_writable()
        staging = self.path / STAGING_DIR
        removed = []
        for name in sorted(os.listdir(staging)):
            if name == "zarr.json" or any(name == w.name for w in self._writers):
                continue
            shutil.rmtree(staging / name)
            removed.append(name)
        if removed:
            fsync_path(staging)
        run, indices, _ = _list_episodes(self.path / EPISODES_DIR)
        if run != len(indices):
            raise DataValidationError(
                f"{self.path / EPISODES_DIR}: episode {episode_name(run)} is missing but "
                f"{len(indices) - run} "
                f"later ones exist ({episode_name(indices[run])}...); the store was changed outside "
                "EpisodeStore; move the later episodes aside before recording"
            )
        self._count = run
        return removed

    def _require_writable(self) -> None:
        if self.mode != "a" or self._lock_fd is None:
            raise StoreError(f"{self.path}: opened read-only (or closed); use EpisodeStore.open(path, mode='a')")

    # ------------------------------------------------------------------------------------- reading
    def refresh(self) -> int:
        """Take a new snapshot of the committed episodes; returns how many there are now."""
        if self.mode == "r":
            self._count, _, _ = _list_episodes(self.path / EPISODES_DIR)
        return self._count

    def __len__(self) -> int:
        return self._count

    def _check_index(self, index: int) -> int:
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"episode index: expected an int, got {type(index).__name__}")
        i = int(index) + (self._count if index < 0 else 0)
        if not 0 <= i < self._count:
            raise IndexError(f"{self.path}: episode {index} out of range; the store has {self._count} episodes")
        return i

    def metadata(self, index: int) -> EpisodeMetadata:
        i = self._check_index(index)
        if i not in self._metadata:
            self._metadata[i] = self._read_metadata(i)
        return self._metadata[i]

    def _read_metadata(self, index: int) -> EpisodeMetadata:
        meta_path = self.path / EPISODES_DIR / episode_name(index) / "zarr.json"
        raw = _read_json(meta_path).get("attributes", {}).get(EPISODE_ATTR)
        if not isinstance(raw, dict):
            raise DataValidationError(f"{meta_path}: no {EPISODE_ATTR!r} attribute with the episode metadata")
        try:
            return EpisodeMetadata.from_json(raw)
        except (TypeError, ValueError) as err:
            raise DataValidationError(f"{meta_path}: episode metadata: {err}") from err

    def episode(self, index: int) -> Episode:
        i = self._check_index(index)
        return Episode(self, i, self.metadata(i))

    def episodes(
        self, *, source: Source | str | None = None, task: str | None = None, success: bool | None = None
    ) -> list[Episode]:
        """Committed episodes (in index order) whose metadata matches every filter given."""
        source = Source(source) if source is not None else None
        out = []
        for i in range(self._count):
            m = self.metadata(i)
            if source is not None and m.source is not source:
                continue
            if task is not None and m.task != task:
                continue
            if success is not None and m.success != success:
                continue
            out.append(Episode(self, i, m))
        return out

    def step_keys(self) -> list[str]:
        """Per-step keys every episode has (info keys vary per episode)."""
        obs = [f"observation/{name}" for name in self.schema.observation]
        return [*obs, "action", *STEP_SCALARS, *STEP_STRINGS]

    def _reader(self, index: int, key: str) -> ArrayReader:
        cache_key = (index, key)
        reader = self._readers.get(cache_key)
        if reader is None:
            array_dir = self.path / EPISODES_DIR / episode_name(index) / key
            if not (array_dir / "zarr.json").is_file():
                raise KeyError(f"{array_dir}: no array {key!r} in episode {index}")
            reader = ArrayReader(array_dir)
            self._readers[cache_key] = reader
            if len(self._readers) > _READER_CACHE_SIZE:
                self._readers.popitem(last=False)
        else:
            self._readers.move_to_end(cache_key)
        return reader

    def read_steps(
        self, episode_index: np.ndarray, step_index: np.ndarray, keys: Sequence[str] | None = None
    ) -> dict[str, np.ndarray]:
        """Random access: rows (episode_index[b], step_index[b]) of each key, as (B, ...) arrays.

        `step_index` may be T for observation keys (the final observation). Strings are not supported
        here (use `Episode.load`).
        """
        episode_index = np.asarray(episode_index, dtype=np.int64)
        step_index = np.asarray(step_index, dtype=np.int64)
        if episode_index.shape != step_index.shape or episode_index.ndim != 1:
            raise ValueError(
                f"episode_index and step_index: expected equal 1-D shapes, got {episode_index.shape} "
                f"and {step_index.shape}"
            )
        keys = [k for k in self.step_keys() if k not in STEP_STRINGS] if keys is None else list(keys)
        episodes = np.unique(episode_index)
        for e in episodes:
            self._check_index(int(e))
        groups = [(int(e), np.flatnonzero(episode_index == e)) for e in episodes]
        out: dict[str, np.ndarray] = {}
        for key in keys:
            if key in STEP_STRINGS:
                raise ValueError(f"read_steps: key {key!r} is a string array; use Episode.load([{key!r}])")
            readers = [self._reader(e, key) for e, _ in groups]
            row_shape = readers[0].shape[1:] if readers else ()
            dtype = np.result_type(*[r.dtype for r in readers])  # info dtypes may differ per episode
            out[key] = np.empty((len(step_index), *row_shape), dtype=dtype)
            for reader, (_, sel) in zip(readers, groups, strict=True):
                reader.read_into(step_index[sel], out[key], sel)
        return out

    def load_transitions(
        self, observation_keys: Sequence[str] | None = None, episodes: Sequence[int] | None = None
    ) -> Transitions:
        """Every transition of `episodes` (default: all committed) as flat arrays; see `Transitions`."""
        names = list(self.schema.observation) if observation_keys is None else list(observation_keys)
        for name in names:
            if name not in self.schema.observation:
                raise KeyError(
                    f"{self.path}: no observation {name!r}; observations are {list(self.schema.observation)}"
                )
        indices = list(range(self._count)) if episodes is None else [self._check_index(e) for e in episodes]
        lengths = np.array([self.metadata(i).length for i in indices], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n, rows = int(starts[-1]), int(starts[-1]) + len(indices)
        observation = {
            k: np.empty((rows, *self.schema.observation[k].shape), self.schema.observation[k].dtype) for k in names
        }
        action = np.empty((n, *self.schema.action.shape), self.schema.action.dtype)
        scalars = {k: np.empty((n,), STEP_SCALARS[k]) for k in ("reward", "terminated", "truncated", "intervention")}
        for j, i in enumerate(indices):
            a, b = int(starts[j]), int(starts[j + 1])
            for k in names:
                observation[k][a + j : b + j + 1] = self._reader(i, f"observation/{k}").read_all()
            action[a:b] = self._reader(i, "action").read_all()
            for k, arr in scalars.items():
                arr[a:b] = self._reader(i, k).read_all()
        episode_of = np.repeat(np.arange(len(indices)), lengths)
        obs_index = np.arange(n, dtype=np.int64) + episode_of
        return Transitions(
            observation=observation,
            action=action,
            obs_index=obs_index,
            next_obs_index=obs_index + 1,
            episode_index=np.asarray(indices, dtype=np.int64)[episode_of],
            episode_starts=starts,
            **scalars,
        )

    # ---------------------------------------------------------------------------------- validation
    def validate(self, deep: bool = False, episodes: Iterable[int] | None = None) -> int:
        """Check committed episodes against the schema; returns how many were checked.

        Shallow: metadata, array shapes and dtypes, chunk files present. Deep: also read every chunk
        through zarr (zstd and shard-index checksums catch bit rot). `episodes` limits the per-episode
        checks (default: all). Raises DataValidationError listing every problem found.
        """
        problems: list[str] = []
        run, indices, strays = _list_episodes(self.path / EPISODES_DIR)
        for name in strays:
            problems.append(f"{self.path / EPISODES_DIR / name}: unexpected entry (not an episode index)")
        if run != len(indices):
            problems.append(f"{self.path / EPISODES_DIR}: episode {episode_name(run)} is missing but later ones exist")
        checked = range(run) if episodes is None else sorted({int(i) for i in episodes})
        if checked and not 0 <= checked[0] <= checked[-1] < run:
            raise IndexError(f"{self.path}: episodes to validate must be in [0, {run}), got {list(checked)}")
        for i in checked:
            problems.extend(self._episode_problems(i, deep))
        if problems:
            shown = "\n  - ".join(problems[:50])
            more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
            raise DataValidationError(
                f"{self.path}: {len(problems)} problem(s) found by validate():\n  - {shown}{more}"
            )
        return len(checked)

    def _expected_arrays(self, length: int) -> dict[str, tuple[tuple[int, ...], str]]:
        expected = {f"observation/{k}": ((length + 1, *s.shape), s.dtype) for k, s in self.schema.observation.items()}
        expected["action"] = ((length, *self.schema.action.shape), self.schema.action.dtype)
        expected.update({k: ((length,), dtype) for k, dtype in STEP_SCALARS.items()})
        expected.update({k: ((length,), "string") for k in STEP_STRINGS})
        return expected

    def _episode_problems(self, index: int, deep: bool) -> list[str]:
        ep_dir = self.path / EPISODES_DIR / episode_name(index)
        try:
            meta = self._read_metadata(index)  # from disk, and maybe beyond this reader's snapshot
        except DataValidationError as err:
            return [str(err)]
        if meta.length < 1:
            return [f"{ep_dir}: metadata length: expected >= 1, got {meta.length}"]
        expected = self._expected_arrays(meta.length)
        info_dir = ep_dir / "info"
        if info_dir.is_dir():
            for p in sorted(info_dir.iterdir()):
                if p.is_dir():
                    expected[f"info/{p.name}"] = ((meta.length,), "")  # any numeric dtype
        problems = []
        groups = {"", "observation", "info"}
        for sub in groups:
            if (ep_dir / sub).is_dir():
                for p in sorted((ep_dir / sub).iterdir()):
                    key = f"{sub}/{p.name}".lstrip("/")
                    if p.name != "zarr.json" and key not in expected and key not in groups:
                        problems.append(f"{p}: unexpected entry; expected one of {sorted(expected)}")
        for key, (shape, dtype) in expected.items():
            problems.extend(self._array_problems(ep_dir / key, key, shape, dtype, deep))
        return problems

    def _array_problems(self, array_dir: Path, key: str, shape: tuple[int, ...], dtype: str, deep: bool) -> list[str]:
        try:
            meta = _read_json(array_dir / "zarr.json")
        except DataValidationError as err:
            return [f"{err} (array {key!r})"]
        got_shape, got_dtype = tuple(meta.get("shape", ())), meta.get("data_type")
        if got_shape != shape:
            return [f"{array_dir}: shape: expected {shape}, got {got_shape}"]
        if dtype and got_dtype != dtype:
            return [f"{array_dir}: dtype: expected {dtype}, got {got_dtype}"]
        if not dtype and got_dtype not in ("bool", "int64", "float64", "int32", "float32", "uint8"):
            return [f"{array_dir}: dtype: expected a numeric info dtype, got {got_dtype}"]
        try:
            per_file = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        except (KeyError, IndexError, TypeError):
            return [f"{array_dir}/zarr.json: chunk_grid: expected a regular grid"]
        n_files = -(-shape[0] // per_file)
        present = {p for p in os.listdir(array_dir) if p.startswith("c.")}
        trailing = ".0" * (len(shape) - 1)
        missing = [f"c.{f}{trailing}" for f in range(n_files) if f"c.{f}{trailing}" not in present]
        if missing:
            return [f"{array_dir}: chunk files missing: {missing[:5]}{'...' if len(missing) > 5 else ''}"]
        if deep:
            try:
                zarr.open_array(array_dir, mode="r")[...]
            except Exception as err:  # zarr and codec libraries raise many types on corrupt data
                return [f"{array_dir}: data cannot be read ({type(err).__name__}: {err})"]
        return []

    # ------------------------------------------------------------------------------------- writing
    def begin_episode(self, metadata: EpisodeMetadata) -> EpisodeWriter:
        """Start recording an episode; it becomes visible only when its writer commits.

        There is deliberately no option to skip fsync: without it, power loss after a rename can leave
        a visible episode with empty files, i.e. a store that no longer validates.
        """
        self._require_writable()
        writer = EpisodeWriter(self, metadata)
        self._writers.add(writer)
        return writer

    def _publish(self, writer: EpisodeWriter) -> int:
        """Steps 3-4 of the crash-safety argument: atomic rename, then make it durable."""
        with self._commit_lock:
            self._require_writable()
            index = self._count
            target = self.path / EPISODES_DIR / episode_name(index)
            if target.exists():
                raise StoreError(f"{target}: already exists; another process wrote to the store without the lock")
            os.rename(writer.path, target)
            # Visible from here on: count it before anything else can fail.
            self._count = index + 1
            writer._published = True
            self._writers.discard(writer)
            fsync_path(target.parent)
            fsync_path(writer.path.parent)
            return index


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        return f"an array of shape {value.shape} {value.dtype}"
    text = repr(value if not isinstance(value, np.ndarray) else value[()])
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({getattr(value, 'dtype', type(value).__name__)})"


def _step_value_error(where: str, expected: str, value: Any) -> DataValidationError:
    return DataValidationError(f"{where}: expected {expected}, got {_describe(value)}")


def _as_field(value: Any, spec: FieldSpec, n: int | None, where: str) -> np.ndarray:
    """`value` as an array of `spec` (with a leading axis of n when n is not None), or a clear error.

    Allowed implicit casts: any safe cast, and any number to a float field (float64 -> float32 obs).
    """
    arr = np.asarray(value)
    shape = spec.shape if n is None else (n, *spec.shape)
    expected = f"shape {shape} {spec.dtype}"
    if arr.shape != shape:
        raise _step_value_error(where, expected, arr)
    if arr.dtype != spec.dtype:
        target = np.dtype(spec.dtype)
        castable = np.can_cast(arr.dtype, target, "safe") or (target.kind == "f" and arr.dtype.kind in "biuf")
        if not castable:
            raise _step_value_error(where, expected, arr)
        arr = arr.astype(target)
    return arr


def _as_scalar_column(value: Any, key: str, dtype: str, n: int | None, where: str) -> np.ndarray:
    arr = np.asarray(value)
    shape = () if n is None else (n,)
    if arr.shape != shape:
        raise _step_value_error(f"{where} {key!r}", f"shape {shape} ({dtype})", value)
    if dtype == "bool":
        if arr.dtype != np.bool_:
            raise _step_value_error(f"{where} {key!r}", "a bool", value)
    elif arr.dtype.kind not in "biuf":
        raise _step_value_error(f"{where} {key!r}", f"a number ({dtype})", value)
    return arr.astype(dtype).reshape(-1)


def _info_dtype(value: np.ndarray) -> np.dtype:
    kind = value.dtype.kind
    return np.dtype("bool") if kind == "b" else np.dtype("int64") if kind in "iu" else np.dtype("float64")


class EpisodeWriter:
    """Records one episode into the store's staging area; `commit` publishes it atomically.

    Image-like fields are buffered `frames_per_shard` frames at a time and written to disk by a
    background thread while recording continues (a 10 Hz control loop should not stall on compression);
    the other fields stay in memory until commit. Use as a context manager: an exception inside the
    block aborts the episode, leaving the store as it was.
    """

    def __init__(self, store: EpisodeStore, metadata: EpisodeMetadata) -> None:
        if not isinstance(metadata, EpisodeMetadata):
            raise TypeError(f"metadata: expected EpisodeMetadata, got {type(metadata).__name__}")
        self.store = store
        self.name = uuid.uuid4().hex
        self.path = store.path / STAGING_DIR / self.name
        self._metadata = dataclasses.replace(metadata, started_unix_s=time.time(), length=0)
        schema = store.schema
        self._schema = schema
        write_group(self.path, {EPISODE_ATTR: self._metadata.to_json()})
        write_group(self.path / "observation")
        # Image-like fields: key -> (spec, in-memory block being filled).
        self._frame_specs: dict[str, FieldSpec] = {
            f"observation/{k}": s for k, s in schema.observation.items() if s.is_frame
        }
        if schema.action.is_frame:
            self._frame_specs["action"] = schema.action
        self._blocks = {k: self._new_block(s) for k, s in self._frame_specs.items()}
        self._block_fill = 0  # rows in the current blocks (all frame fields fill in lockstep)
        self._rows_flushed = 0  # rows of every frame field already handed to the writer thread
        self._columns: dict[str, list[np.ndarray]] = {}  # non-frame fields, blocks of rows
        self._info_dtypes: dict[str, np.dtype] | None = None
        self._steps = 0
        self._ended_at: int | None = None  # step index that set terminated/truncated
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="episode-writer")
        self._pending: concurrent.futures.Future[None] | None = None
        self._fsyncs: list[concurrent.futures.Future[None]] = []  # of shards written while recording
        self._closed = False
        self._published = False  # set by EpisodeStore._publish right after the rename

    def _new_block(self, spec: FieldSpec) -> np.ndarray:
        return np.empty((self._schema.frames_per_shard, *spec.shape), dtype=spec.dtype)

    @property
    def num_steps(self) -> int:
        return self._steps

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._closed:
            return
        self.abort()
        if exc_type is None:
            raise StoreError(f"{self.path}: episode left its `with` block without commit() or abort(); it was aborted")

    def _where(self, step: int) -> str:
        return f"{self.store.path}: episode being recorded, step {step}"

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{self.path}: this episode was already committed or aborted; begin a new one")
        if self._pending is not None and self._pending.done():
            self._pending.result()  # re-raise a failure of the writer thread here, in the caller

    # ------------------------------------------------------------------------------------ appending
    def append(self, step: Mapping[str, Any]) -> None:
        """Add one step: the observation *before* the action, the action, and what the env returned.

        Keys: observation (dict), action, reward, terminated, truncated; optional timestamp_s,
        intervention, language_instruction, language_correction, info (dict of scalars).
        """
        self._add(step, n=None)

    def extend(self, steps: Mapping[str, Any]) -> None:
        """Add n steps at once: the same keys as `append` with a leading axis of n (bulk import)."""
        action = np.asarray(steps.get("action")) if isinstance(steps, Mapping) else None
        if action is None or action.ndim == 0:
            raise _step_value_error(f"{self._where(self._steps)} 'action'", "an array with a leading step axis", action)
        self._add(steps, n=len(action))

    def _add(self, step: Mapping[str, Any], n: int | None) -> None:
        self._check_open()
        where = self._where(self._steps)
        if not isinstance(step, Mapping):
            raise DataValidationError(f"{where}: expected a dict of step fields, got {type(step).__name__}")
        missing = [k for k in REQUIRED_STEP_KEYS if k not in step]
        unknown = [k for k in step if k not in REQUIRED_STEP_KEYS and k not in OPTIONAL_STEP_KEYS]
        if missing or unknown:
            raise DataValidationError(
                f"{where}: missing keys {missing} / unknown keys {unknown}; "
                f"required {list(REQUIRED_STEP_KEYS)}, "
                f"optional {list(OPTIONAL_STEP_KEYS)}"
            )
        if self._ended_at is not None:
            raise DataValidationError(
                f"{where}: the episode already ended at step {self._ended_at} (terminated or truncated); "
                "commit it and begin a new episode"
            )
        rows = self._validate(step, n, where)
        count = 1 if n is None else n
        if count == 0:
            return
        ended = rows["terminated"] | rows["truncated"]
        if ended[:-1].any():
            raise DataValidationError(
                f"{where}: terminated/truncated set at step {self._steps + int(np.argmax(ended))} before the "
                "last step of the block; an episode ends at its first terminated or truncated step"
            )
        for key, value in rows.items():
            if key not in self._frame_specs:  # copied: callers often reuse their observation buffers
                self._columns.setdefault(key, []).append(value.copy())
        self._add_frames({k: rows[k] for k in self._frame_specs}, count)
        self._steps += count
        if ended[-1]:
            self._ended_at = self._steps - 1

    def _validate(self, step: Mapping[str, Any], n: int | None, where: str) -> dict[str, np.ndarray]:
        """Step dict -> key -> (count, ...) arrays in the schema's dtypes."""
        schema = self._schema
        count = 1 if n is None else n
        rows: dict[str, np.ndarray] = {}
        obs = step["observation"]
        if not isinstance(obs, Mapping) or set(obs) != set(schema.observation):
            got = sorted(obs) if isinstance(obs, Mapping) else type(obs).__name__
            raise DataValidationError(
                f"{where} 'observation': expected a dict with keys {sorted(schema.observation)}, got {got}"
            )
        for name, spec in schema.observation.items():
            arr = _as_field(obs[name], spec, n, f"{where} 'observation/{name}'")
            rows[f"observation/{name}"] = arr.reshape(count, *spec.shape)
        rows["action"] = _as_field(step["action"], schema.action, n, f"{where} 'action'").reshape(
            count, *schema.action.shape
        )
        defaults: dict[str, Any] = {"timestamp_s": np.nan, "intervention": False}
        for key, dtype in STEP_SCALARS.items():
            value = step.get(key, defaults.get(key))
            if n is not None and key in defaults and key not in step:
                value = np.full(n, value, dtype=dtype)
            rows[key] = _as_scalar_column(value, key, dtype, n, where)
        for key in STEP_STRINGS:
            value = step.get(key, "" if n is None else [""] * n)
            values = [value] if n is None else list(value) if not isinstance(value, str) else None
            if values is None or len(values) != count or not all(isinstance(v, str) for v in values):
                raise _step_value_error(f"{where} {key!r}", "a str" if n is None else f"{n} strs", value)
            rows[key] = np.array(values, dtype=object)
        rows.update(self._validate_info(step.get("info", {}), n, where))
        return rows

    def _validate_info(self, info: Any, n: int | None, where: str) -> dict[str, np.ndarray]:
        if not isinstance(info, Mapping):
            raise DataValidationError(f"{where} 'info': expected a dict of scalars, got {type(info).__name__}")
        if self._info_dtypes is not None and set(info) != set(self._info_dtypes):
            raise DataValidationError(
                f"{where} 'info': expected the same keys as the first step {sorted(self._info_dtypes)}, "
                f"got {sorted(info)}"
            )
        out, dtypes = {}, {}
        for name, value in info.items():
            check_name(name, f"{where} 'info' key")
            arr = np.asarray(value)
            shape = () if n is None else (n,)
            if arr.shape != shape or arr.dtype.kind not in "biuf":
                raise _step_value_error(f"{where} 'info/{name}'", f"a number or bool of shape {shape}", arr)
            dtype = _info_dtype(arr) if self._info_dtypes is None else self._info_dtypes[name]
            if not (np.can_cast(arr.dtype, dtype, "safe") or (dtype.kind == "f" and arr.dtype.kind in "iuf")):
                raise _step_value_error(f"{where} 'info/{name}'", f"{dtype} (as in the first step)", arr)
            out[f"info/{name}"], dtypes[name] = arr.astype(dtype).reshape(-1), dtype
        if self._info_dtypes is None:
            self._info_dtypes = dtypes
        return out

    # ---------------------------------------------------------------------------------- frame blocks
    def _add_frames(self, frames: dict[str, np.ndarray], count: int) -> None:
        if not frames:
            return
        per_block = self._schema.frames_per_shard
        done = 0
        while done < count:
            take = min(per_block - self._block_fill, count - done)
            for key, block in self._blocks.items():
                block[self._block_fill : self._block_fill + take] = frames[key][done : done + take]
            self._block_fill += take
            done += take
            if self._block_fill == per_block:
                self._flush_blocks()

    def _flush_blocks(self) -> None:
        """Hand the full blocks to the writer thread (at most one block in flight: bounded memory)."""
        if self._pending is not None:
            self._pending.result()
        blocks, start = self._blocks, self._rows_flushed
        self._pending = self._executor.submit(self._write_blocks, blocks, start)
        self._blocks = {k: self._new_block(s) for k, s in self._frame_specs.items()}
        self._rows_flushed += self._block_fill
        self._block_fill = 0

    def _write_blocks(self, blocks: dict[str, np.ndarray], start: int) -> None:
        """Writer thread: one full shard per frame field; its fsync starts now so commit has less to flush."""
        shard = start // self._schema.frames_per_shard
        for key, block in blocks.items():
            self._fsyncs.append(fsync_later(write_shard(self.path / key, shard, block, self._schema)))

    # ------------------------------------------------------------------------------ commit / abort
    def commit(self, final_observation: Mapping[str, Any], *, success: bool | None = None,
               source: Source | str | None = None, extra: Mapping[str, Any] | None = None) -> int:
        """Publish the episode atomically and return its index; after this returns it is durable.

        `final_observation` is the observation after the last step (row T of every observation).
        `source` and `extra` (merged into the metadata's `extra`) record what is known only at the end,
        e.g. that a person took over during an online episode (source "intervention").
        """
        self._check_open()
        where = self._where(self._steps)
        if self._steps == 0:
            raise DataValidationError(f"{where}: cannot commit an episode with 0 steps; abort() it instead")
        schema = self._schema
        if not isinstance(final_observation, Mapping) or set(final_observation) != set(schema.observation):
            got = sorted(final_observation) if isinstance(final_observation, Mapping) else type(final_observation)
            raise DataValidationError(
                f"{where} 'final_observation': expected a dict with keys {sorted(schema.observation)}, got {got}"
            )
        final = {
            f"observation/{k}": _as_field(final_observation[k], s, None, f"{where} 'final_observation/{k}'")
            for k, s in schema.observation.items()
        }
        updates: dict[str, Any] = {} if source is None else {"source": source}
        if extra:
            updates["extra"] = {**self._metadata.extra, **extra}
        metadata = dataclasses.replace(
            self._metadata, length=self._steps, success=success, committed_unix_s=time.time(), **updates
        )  # validates `success`, `source` and `extra`
        try:
            if self._pending is not None:
                self._pending.result()
            self._write_tail(final)
            write_group(self.path, {EPISODE_ATTR: metadata.to_json()})
            for future in self._fsyncs:
                future.result()
            fsync_tree(self.path)
            index = self.store._publish(self)
        except BaseException:
            if not self._published:
                self.abort()
            else:
                self._close()
            raise
        self._close()
        return index

    def _write_tail(self, final: dict[str, np.ndarray]) -> None:
        """Frames still in memory plus the final observation, then every array's zarr metadata."""
        fill, start = self._block_fill, self._rows_flushed
        for key, block in self._blocks.items():
            rows = block[:fill]
            if key in final:  # observations have one more row than steps; fill < F so it still fits
                rows = np.concatenate([rows, final[key][None]])
            if len(rows):
                write_shard(self.path / key, start // self._schema.frames_per_shard, rows, self._schema)
            write_frame_metadata(self.path / key, start + len(rows), self._frame_specs[key], self._schema)
        for key, blocks in self._columns.items():
            data = np.concatenate(blocks)
            if key in final:
                data = np.concatenate([data, final[key][None]])
            if key in STEP_STRINGS:
                data = data.astype(str)
            if key.startswith("info/") and not (self.path / "info").is_dir():
                write_group(self.path / "info")
            write_vector_array(self.path / key, data, self._schema)

    def abort(self) -> None:
        """Discard the episode; the store is left exactly as before `begin_episode`."""
        if self._closed:
            return
        if self._pending is not None:
            with contextlib.suppress(Exception):  # the episode is being discarded anyway
                self._pending.result()
        self._close()
        # If this fails (or the process dies), the directory stays in staging/, invisible to readers,
        # and the next writer's repair() removes it.
        shutil.rmtree(self.path, ignore_errors=True)

    def _close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
        self.store._writers.discard(self)
