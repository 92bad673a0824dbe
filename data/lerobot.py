"""LeRobotDataset v3.0 folders: export an episode store to one, import one into a store (extra `lerobot`).

Layout written (LeRobot's `CODEBASE_VERSION = "v3.0"`: many episodes per file):

    meta/info.json                                  codebase_version, fps, features, totals, path templates
    meta/stats.json                                 min / max / mean / std / count per numeric feature
    meta/tasks.parquet                              task_index, task
    meta/episodes/chunk-000/file-000.parquet        one row per episode: length, tasks, data and video file
                                                    indices, dataset_from/to_index, videos/<key>/from/to_timestamp
    data/chunk-000/file-000.parquet                 one row per frame (all episodes)
    videos/<key>/chunk-000/file-000.mp4             one file per camera, episodes' frames concatenated

Mapping from the store (T transitions, T + 1 observations per episode): frame t of an episode is
observation t, action t and what the step returned (`next.reward`, `next.done`), LeRobot's RL convention.
Observations named `<cam>` that are (H, W, 3) uint8 become the video feature `observation.images.<cam>`,
others `observation.<name>` (so `state` is `observation.state`). LeRobot has no place for the observation
after the last step, so it is kept where LeRobot readers do not look: non-video keys in the episode row
(`robot_stack/final.observation.<name>`), video keys as one extra frame at `to_timestamp` (the next
episode's frames start one frame later). The episode metadata (task, source, seed, success, extra) goes
into `robot_stack/metadata` as JSON, and the store's other per-step fields into extra frame columns
(`next.truncated`, `intervention`, `wall_time_s`, `language_*`, `info.<name>`), so import(export(store))
gives back the same episodes; images only within the video codec's tolerance.

A LeRobot dataset made elsewhere imports too: without the final observation its last frame's observation
is copied as the final one (noted in the episode's `extra`), without `next.reward` / `next.done` rewards
are 0 and the episode ends truncated.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from data.episode_store import EpisodeStore
from data.schema import STEP_STRINGS, DataValidationError, EpisodeMetadata, FieldSpec, Source, StoreSchema

EXTRA = "lerobot"
CODEBASE_VERSION = "v3.0"
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CHUNKS_SIZE = 1000
DEFAULT_VIDEO_CODEC = "libsvtav1"  # LeRobot's choice (AV1, yuv420p); libx264 when this build lacks it
IMAGE_PREFIX = "observation.images."
OURS = "robot_stack/"  # episode-row columns only this project reads
# LeRobot reads meta/tasks.parquet with pandas and expects the task text as the frame's index: this is the
# metadata pandas writes for such a frame (index column "task"), so no pandas is needed to write it here.
_TASKS_PANDAS_META = {
    "index_columns": ["task"], "column_indexes": [], "pandas_version": "2.2.0",
    "columns": [
        {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object", "metadata": None},
        {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
         "metadata": None},
    ],
}


def require(module: str, extra: str) -> ModuleType:
    """Import an optional dependency or fail naming the extra (data/ may not import robot.core.extras)."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"'{module}' is needed for LeRobot datasets; install it with: "
                          f"pip install 'robot-stack[{extra}]'") from err


def _pyarrow() -> tuple[ModuleType, ModuleType]:
    return require("pyarrow", EXTRA), require("pyarrow.parquet", EXTRA)


def _av() -> ModuleType:
    os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole config per file otherwise
    return require("av", EXTRA)


def is_video_spec(spec: FieldSpec) -> bool:
    return len(spec.shape) == 3 and spec.shape[2] == 3 and spec.dtype == "uint8"


def observation_feature(name: str, spec: FieldSpec) -> str:
    return f"{IMAGE_PREFIX}{name}" if is_video_spec(spec) else f"observation.{name}"


# ============================================================================================ video I/O
def pick_video_codec(preferred: str = DEFAULT_VIDEO_CODEC) -> str:
    av = _av()
    for name in (preferred, "libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:  # noqa: S112 - av raises UnknownCodecError or ValueError by version
            continue
    raise RuntimeError(f"no usable video encoder: tried {preferred}, libx264, mpeg4 in this PyAV build")


class VideoWriter:
    """Streaming mp4 encoder: frames go to the codec as they come, so memory stays one frame per call.

    yuv420p halves chroma resolution, so H and W must be even. GOP 2 (LeRobot's default) keeps random
    access to any frame cheap.
    """

    def __init__(self, path: Path, fps: int, codec: str = DEFAULT_VIDEO_CODEC, crf: int = 30, gop: int = 2) -> None:
        self.av = _av()
        self.path, self.fps, self.crf, self.gop = Path(path), fps, crf, gop
        self.codec = pick_video_codec(codec)
        self.container = self.av.open(str(path), "w")
        self.stream = None
        self.count = 0

    def add(self, frames: Any) -> None:
        """Append RGB uint8 frames: one (H, W, 3) array or an iterable of them."""
        frames = [frames] if isinstance(frames, np.ndarray) and frames.ndim == 3 else frames
        for frame in frames:
            frame = np.ascontiguousarray(frame, dtype=np.uint8)
            if self.stream is None:
                height, width = frame.shape[:2]
                if height % 2 or width % 2:
                    raise DataValidationError(
                        f"{self.path}: frames are {height} x {width}; expected even height and width (yuv420p video)"
                    )
                self.stream = self.container.add_stream(self.codec, rate=self.fps)
                self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
                options = {"g": str(self.gop), "crf": str(self.crf)}
                if self.codec == "libsvtav1":
                    options["preset"] = "10"
                self.stream.options = options
            video_frame = self.av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = self.count, Fraction(1, self.fps)
            for packet in self.stream.encode(video_frame):
                self.container.mux(packet)
            self.count += 1

    def close(self) -> int:
        """Flush the encoder and close the file; returns the number of frames written."""
        try:
            if self.stream is not None:
                for packet in self.stream.encode():
                    self.container.mux(packet)
        finally:
            self.container.close()
        return self.count


def write_video(path: Path, frames: Any, fps: int, codec: str = DEFAULT_VIDEO_CODEC, crf: int = 30) -> int:
    """Encode RGB uint8 frames (an iterable of (H, W, 3)) to `path`; returns the number of frames."""
    writer = VideoWriter(path, fps, codec, crf)
    try:
        writer.add(frames)
    finally:
        count = writer.close()
    return count


def read_video(path: Path, fps: float, start_s: float = 0.0, stop_s: float = math.inf) -> np.ndarray:
    """Frames whose timestamps lie in [start_s, stop_s) (half a frame of tolerance), as (N, H, W, 3) uint8."""
    av = _av()
    if not path.is_file():
        raise DataValidationError(f"{path}: video file is missing")
    half = 0.5 / fps
    out = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataValidationError(f"{path}: no video stream; expected an mp4 with one video stream")
            stream = container.streams.video[0]
            if start_s > half:
                container.seek(int(max(start_s - half, 0) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                t = float(frame.time)
                if t < start_s - half:
                    continue
                if t >= stop_s - half:
                    break
                out.append(frame.to_ndarray(format="rgb24"))
    except (av.error.FFmpegError, OSError) as err:
        raise DataValidationError(f"{path}: cannot decode video ({err}); the file may be truncated or damaged") from err
    if not out:
        return np.zeros((0, 0, 0, 3), np.uint8)
    return np.stack(out)


# ============================================================================================ export
def _flat(values: np.ndarray) -> Any:
    pa, _ = _pyarrow()
    values = np.ascontiguousarray(values)
    if values.ndim == 1:
        return pa.array(values)
    width = int(np.prod(values.shape[1:]))
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), width)


def _feature(dtype: str, shape: Sequence[int], names: Any = None) -> dict[str, Any]:
    return {"dtype": dtype, "shape": list(shape), "names": names}


def _stats(values: np.ndarray) -> dict[str, Any]:
    values = values.reshape(len(values), -1).astype(np.float64)
    return {"min": values.min(0).tolist(), "max": values.max(0).tolist(), "mean": values.mean(0).tolist(),
            "std": values.std(0).tolist(), "count": [len(values)]}


class _RunningStats:
    """min / max / mean / std per channel over rows added in blocks (video pixels never all in memory)."""

    def __init__(self, width: int) -> None:
        self.n, self.sum, self.sq = 0, np.zeros(width), np.zeros(width)
        self.min, self.max = np.full(width, np.inf), np.full(width, -np.inf)

    def add(self, rows: np.ndarray) -> None:
        self.n += len(rows)
        self.sum += rows.sum(0)
        self.sq += np.square(rows).sum(0)
        self.min, self.max = np.minimum(self.min, rows.min(0)), np.maximum(self.max, rows.max(0))

    def result(self) -> dict[str, Any]:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        return {"min": self.min.tolist(), "max": self.max.tolist(), "mean": mean.tolist(), "std": std.tolist(),
                "count": [self.n]}


def export_lerobot(
    store: EpisodeStore,
    root: str | os.PathLike[str],
    fps: int = 10,
    episodes: Sequence[int] | None = None,
    robot_type: str | None = None,
    video_codec: str = DEFAULT_VIDEO_CODEC,
    crf: int = 30,
) -> Path:
    """Write store episodes as a LeRobot v3.0 dataset folder at `root` (must not exist); returns it.

    Assembled in a hidden sibling folder and renamed into place, so `root` is absent or complete.
    """
    pa, pq = _pyarrow()
    root = Path(root)
    if root.exists():
        raise FileExistsError(f"{root}: already exists; choose a new folder for the LeRobot dataset")
    indices = list(range(len(store))) if episodes is None else [int(i) for i in episodes]
    if not indices:
        raise ValueError(f"{store.path}: no episodes to export")
    if fps <= 0:
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    schema = store.schema
    videos = {n: s for n, s in schema.observation.items() if is_video_spec(s)}
    plain = {n: s for n, s in schema.observation.items() if n not in videos}
    tmp = root.parent / f".{root.name}.{uuid.uuid4().hex}.creating"
    (tmp / "meta").mkdir(parents=True)
    codec = pick_video_codec(video_codec)
    writers: dict[str, VideoWriter] = {}
    try:
        columns: dict[str, list[np.ndarray]] = {}
        ep_rows: list[dict[str, Any]] = []
        tasks: dict[str, int] = {}
        pixel_stats: dict[str, _RunningStats] = {}
        for name in videos:
            path = tmp / VIDEO_PATH.format(video_key=IMAGE_PREFIX + name, chunk_index=0, file_index=0)
            path.parent.mkdir(parents=True, exist_ok=True)
            writers[name] = VideoWriter(path, fps, codec, crf)
            pixel_stats[name] = _RunningStats(3)
        info_keys: set[str] = set()
        video_cursor = 0  # frames already in each video file (all cameras advance together)
        total = 0
        for ep_index, store_index in enumerate(indices):
            ep = store.episode(store_index)
            data = ep.load()
            steps = len(data["action"])
            info_keys.update(k for k in data if k.startswith("info/"))
            frame_tasks = [s or ep.metadata.task for s in data["language_instruction"]]
            for task in frame_tasks:
                tasks.setdefault(task, len(tasks))
            rows = {
                "timestamp": (np.arange(steps) / fps).astype(np.float32),
                "frame_index": np.arange(steps, dtype=np.int64),
                "episode_index": np.full(steps, ep_index, np.int64),
                "index": np.arange(total, total + steps, dtype=np.int64),
                "task_index": np.array([tasks[t] for t in frame_tasks], np.int64),
                "action": data["action"],
                "next.reward": data["reward"],
                "next.done": data["terminated"] | data["truncated"],
                "next.truncated": data["truncated"],
                "intervention": data["intervention"],
                "wall_time_s": data["timestamp_s"],
                **{key: data[key].astype(object) for key in STEP_STRINGS},
            }
            for name in plain:
                rows[f"observation.{name}"] = data[f"observation/{name}"][:steps]
            for key in sorted(k for k in data if k.startswith("info/")):
                rows["info." + key[5:]] = data[key]
            for key, value in rows.items():
                columns.setdefault(key, []).append(value)
            row: dict[str, Any] = {
                "episode_index": ep_index, "tasks": sorted(set(frame_tasks), key=frame_tasks.index), "length": steps,
                "data/chunk_index": 0, "data/file_index": 0,
                "dataset_from_index": total, "dataset_to_index": total + steps,
                OURS + "metadata": json.dumps(ep.metadata.to_json()),
                OURS + "final_frame_in_video": True,
            }
            for name in plain:
                row[OURS + f"final.observation.{name}"] = data[f"observation/{name}"][steps].reshape(-1).tolist()
            for name in videos:
                key = IMAGE_PREFIX + name
                frames = data[f"observation/{name}"]  # T + 1 frames
                writers[name].add(frames)
                pixel_stats[name].add(frames.reshape(-1, 3).astype(np.float64) / 255.0)
                row.update({
                    f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": video_cursor / fps,
                    f"videos/{key}/to_timestamp": (video_cursor + steps) / fps,
                })
            row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
            video_cursor += steps + 1
            total += steps
            ep_rows.append(row)
        # Every episode has the same info keys in a LeRobot table; a key missing in one episode is an error.
        for key in info_keys:
            if len(columns.get("info." + key[5:], [])) != len(indices):
                raise DataValidationError(
                    f"{store.path}: info key {key!r} is in some episodes but not all; LeRobot frames need one set "
                    "of columns (export the episodes with the same info keys together)"
                )
        frame_table = pa.table({k: _flat(np.concatenate(v)) for k, v in columns.items()})
        _write_parquet(pq, frame_table, tmp / DATA_PATH.format(chunk_index=0, file_index=0))
        episodes_table = pa.Table.from_pylist(ep_rows)
        _write_parquet(pq, episodes_table, tmp / EPISODES_PATH.format(chunk_index=0, file_index=0))
        task_table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                               "task": pa.array(list(tasks.keys()), pa.string())})
        task_table = task_table.replace_schema_metadata({b"pandas": json.dumps(_TASKS_PANDAS_META).encode()})
        _write_parquet(pq, task_table, tmp / "meta" / "tasks.parquet")

        features: dict[str, Any] = {}
        stats: dict[str, Any] = {}
        for name, spec in schema.observation.items():
            key = observation_feature(name, spec)
            if name in videos:
                height, width, channels = spec.shape
                frames = writers.pop(name).close()
                features[key] = {**_feature("video", spec.shape, ["height", "width", "channels"]), "info": {
                    "video.height": height, "video.width": width, "video.channels": channels,
                    "video.codec": codec, "video.pix_fmt": "yuv420p", "video.fps": fps, "video.is_depth_map": False,
                    "has_audio": False}}
                stats[key] = {s: np.asarray(v).reshape(3, 1, 1).tolist() if s != "count" else [frames]
                              for s, v in pixel_stats[name].result().items()}
            else:
                features[key] = _feature(spec.dtype, spec.shape)
        features["action"] = _feature(schema.action.dtype, schema.action.shape)
        for key in frame_table.column_names:
            if key in features:
                continue
            sample = np.concatenate(columns[key])
            dtype = "string" if sample.dtype == object else sample.dtype.name
            features[key] = _feature(dtype, [1])
        for key in frame_table.column_names:
            sample = np.concatenate(columns[key])
            if sample.dtype != object:
                stats[key] = _stats(sample)
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": robot_type or store.metadata(indices[0]).robot,
            "total_episodes": len(indices), "total_frames": total, "total_tasks": len(tasks),
            "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": fps,
            "splits": {"train": f"0:{len(indices)}"}, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if videos else None, "features": features,
        }
        (tmp / "meta" / "info.json").write_text(json.dumps(info, indent=2) + "\n")
        (tmp / "meta" / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        os.rename(tmp, root)
    finally:
        for writer in writers.values():  # only after an error: finished ones were popped
            writer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _write_parquet(pq: ModuleType, table: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


# ============================================================================================ import
def _read_json_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataValidationError(f"{path}: file is missing; expected a LeRobot v3.0 dataset folder")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataValidationError(f"{path}: cannot read JSON ({err}); the file may be truncated") from err
    if not isinstance(obj, dict):
        raise DataValidationError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _read_table(path: Path) -> Any:
    pa, pq = _pyarrow()
    if not path.is_file():
        raise DataValidationError(f"{path}: file is missing")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataValidationError(
            f"{path}: cannot be read as parquet ({err}); expected a complete parquet file (a truncated copy gives this)"
        ) from err


def _column(table: Any, key: str, path: Path, shape: Sequence[int], dtype: str) -> np.ndarray:
    """Column `key` as (N, *shape) of `dtype`, or one error naming the file, the key and what was expected."""
    pa, _ = _pyarrow()
    if key not in table.column_names:
        raise DataValidationError(f"{path}: key {key!r} is missing; found keys {table.column_names}")
    col = table.column(key).combine_chunks()
    width = int(np.prod(shape)) if len(shape) else 1
    expected = f"{dtype} values of shape {tuple(shape)}"
    try:
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type):
            lengths = col.value_lengths().to_numpy(zero_copy_only=False)
            if len(lengths) and (lengths != width).any():
                bad = int(np.flatnonzero(lengths != width)[0])
                raise DataValidationError(
                    f"{path}: key {key!r} row {bad} has {int(lengths[bad])} values; expected {expected}"
                )
            values = col.flatten().to_numpy(zero_copy_only=False)
        elif width == 1:
            values = col.to_numpy(zero_copy_only=False)
        else:
            raise DataValidationError(f"{path}: key {key!r} has scalar type {col.type}; expected {expected}")
    except (pa.ArrowException, TypeError) as err:
        raise DataValidationError(f"{path}: key {key!r} cannot be read ({err}); expected {expected}") from err
    target = np.dtype(dtype)
    kind_ok = values.dtype.kind in ("b" if target.kind == "b" else "biu" if target.kind in "iu" else "biuf")
    if not kind_ok or (values.dtype.kind == "f" and target.kind != "f"):
        raise DataValidationError(f"{path}: key {key!r} has dtype {values.dtype}; expected {expected}")
    return values.astype(target, copy=False).reshape(len(col), *shape)


def read_info(root: Path) -> dict[str, Any]:
    """meta/info.json, checked: version v3.x, fps, features with dtype and shape."""
    path = root / "meta" / "info.json"
    info = _read_json_file(path)
    version = info.get("codebase_version")
    if not isinstance(version, str) or not version.startswith("v3"):
        raise DataValidationError(
            f"{path}: key 'codebase_version' is {version!r}; expected 'v3.0' (convert v2.x datasets with LeRobot's "
            "convert_dataset_v21_to_v30 first)"
        )
    fps = info.get("fps")
    if not isinstance(fps, (int, float)) or fps <= 0:
        raise DataValidationError(f"{path}: key 'fps' is {fps!r}; expected a positive number")
    features = info.get("features")
    if not isinstance(features, dict) or "action" not in features:
        got = sorted(features) if isinstance(features, dict) else type(features).__name__
        raise DataValidationError(f"{path}: key 'features' must be an object with at least 'action'; got {got}")
    for key, feat in features.items():
        if not (isinstance(feat, dict) and isinstance(feat.get("dtype"), str)
                and isinstance(feat.get("shape"), list) and all(isinstance(d, int) for d in feat["shape"])):
            raise DataValidationError(
                f"{path}: key 'features/{key}' is {feat!r}; expected {{'dtype': str, 'shape': [int, ...]}}"
            )
    return info


def lerobot_schema(root: str | os.PathLike[str]) -> StoreSchema:
    """Schema of a store for a LeRobot dataset's observation.* features and its action."""
    info = read_info(Path(root))
    observation = {}
    for key, feat in info["features"].items():
        if key.startswith(IMAGE_PREFIX):
            if feat["dtype"] not in ("video", "image") or len(feat["shape"]) != 3:
                raise DataValidationError(
                    f"{Path(root) / 'meta' / 'info.json'}: key 'features/{key}' is {feat['dtype']} {feat['shape']}; "
                    "expected a video of shape [height, width, 3]"
                )
            if feat["dtype"] == "image":
                raise DataValidationError(
                    f"{Path(root) / 'meta' / 'info.json'}: key 'features/{key}' stores images in parquet; "
                    "only video features are supported"
                )
            observation[key[len(IMAGE_PREFIX):]] = FieldSpec(tuple(feat["shape"]), "uint8")
        elif key.startswith("observation."):
            observation[key[len("observation."):]] = FieldSpec(tuple(feat["shape"]) or (1,), _numeric(feat, key, root))
    action = info["features"]["action"]
    return StoreSchema(observation=observation, action=FieldSpec(tuple(action["shape"]) or (1,),
                                                                 _numeric(action, "action", root)))


def _numeric(feat: Mapping[str, Any], key: str, root: Any) -> str:
    try:
        dtype = np.dtype(feat["dtype"])
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "biuf":
        raise DataValidationError(
            f"{Path(root) / 'meta' / 'info.json'}: key 'features/{key}' has dtype {feat['dtype']!r}; "
            "expected a numeric dtype (float32, int64, bool, ...)"
        )
    return dtype.name


def read_episodes_meta(root: Path) -> list[dict[str, Any]]:
    """Rows of meta/episodes/*/*.parquet sorted by episode_index, with the keys import needs checked."""
    files = sorted((root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
    if not files:
        raise DataValidationError(
            f"{root / 'meta' / 'episodes'}: no chunk-*/file-*.parquet files; expected LeRobot v3.0 episode metadata"
        )
    rows = []
    for path in files:
        table = _read_table(path)
        for key in ("episode_index", "length", "dataset_from_index", "dataset_to_index"):
            _column(table, key, path, (), "int64")
        for row in table.to_pylist():
            row["_file"] = str(path)
            rows.append(row)
    rows.sort(key=lambda r: r["episode_index"])
    return rows


def read_tasks(root: Path) -> dict[int, str]:
    path = root / "meta" / "tasks.parquet"
    table = _read_table(path)
    index = _column(table, "task_index", path, (), "int64")
    name_key = next((k for k in ("task", "__index_level_0__") if k in table.column_names), None)
    if name_key is None:
        raise DataValidationError(f"{path}: key 'task' is missing; found keys {table.column_names}")
    return dict(zip(index.tolist(), table.column(name_key).to_pylist(), strict=True))


def import_lerobot(
    root: str | os.PathLike[str], store: EpisodeStore, metadata: EpisodeMetadata | None = None
) -> list[int]:
    """Commit every episode of a LeRobot v3.0 folder to `store` (schema: `lerobot_schema(root)`).

    Episodes exported by this module get their own metadata back; others get `metadata` (default: task
    from the dataset's task text, source demo) with the LeRobot episode index in `extra`.
    """
    root = Path(root)
    info = read_info(root)
    fps = float(info["fps"])
    expected_schema = lerobot_schema(root)
    if store.schema.observation != expected_schema.observation or store.schema.action != expected_schema.action:
        raise DataValidationError(
            f"{store.path}: schema {store.schema.to_json()['observation']} / action {store.schema.action} does not "
            f"match the dataset's {expected_schema.to_json()['observation']} / action {expected_schema.action}"
        )
    tasks = read_tasks(root)
    data_template = info.get("data_path") or DATA_PATH
    video_template = info.get("video_path") or VIDEO_PATH
    videos = {n: IMAGE_PREFIX + n for n, s in store.schema.observation.items() if is_video_spec(s)}
    plain = [n for n in store.schema.observation if n not in videos]
    tables: dict[Path, tuple[Any, np.ndarray]] = {}
    indices = []
    for row in read_episodes_meta(root):
        ep_where = f"{row['_file']}: episode {row['episode_index']}"
        data_path = root / data_template.format(chunk_index=int(row.get("data/chunk_index") or 0),
                                                file_index=int(row.get("data/file_index") or 0))
        if data_path not in tables:
            table = _read_table(data_path)
            tables[data_path] = (table, _column(table, "index", data_path, (), "int64"))
        table, global_index = tables[data_path]
        start, stop = int(row["dataset_from_index"]), int(row["dataset_to_index"])
        sel = np.flatnonzero((global_index >= start) & (global_index < stop))
        steps = stop - start
        if len(sel) != steps or steps < 1 or int(row["length"]) != steps:
            raise DataValidationError(
                f"{data_path}: key 'index' has {len(sel)} rows in [{start}, {stop}) for {ep_where} (length "
                f"{row['length']}); expected {steps} >= 1 rows (a truncated or mismatched data file)"
            )
        part = table.take(sel)

        def col(key: str, shape: Sequence[int], dtype: str, part: Any = part, data_path: Path = data_path) -> Any:
            return _column(part, key, data_path, shape, dtype)

        spec_of = store.schema.observation
        obs = {n: col(f"observation.{n}", spec_of[n].shape, spec_of[n].dtype) for n in plain}
        action = col("action", store.schema.action.shape, store.schema.action.dtype)
        names = part.column_names
        reward = col("next.reward", (), "float32") if "next.reward" in names else np.zeros(steps, np.float32)
        done = col("next.done", (), "bool") if "next.done" in names else np.zeros(steps, bool)
        truncated = col("next.truncated", (), "bool") if "next.truncated" in names else np.zeros(steps, bool)
        if "next.done" not in names:
            truncated[-1] = True
        terminated = done & ~truncated
        ours = bool(row.get(OURS + "final_frame_in_video"))
        extra_notes: dict[str, Any] = {"lerobot_source": root.name, "lerobot_episode_index": row["episode_index"]}
        final = {}
        for n in plain:
            stored = row.get(OURS + f"final.observation.{n}")
            if stored is not None:
                if len(stored) != int(np.prod(spec_of[n].shape)):
                    raise DataValidationError(
                        f"{row['_file']}: key '{OURS}final.observation.{n}' of episode {row['episode_index']} has "
                        f"{len(stored)} values; expected shape {spec_of[n].shape}"
                    )
                final[n] = np.asarray(stored, dtype=spec_of[n].dtype).reshape(spec_of[n].shape)
            else:
                final[n] = obs[n][-1]
                extra_notes["lerobot_final_observation"] = "copied from the last frame"
        for n, key in videos.items():
            start_s = row.get(f"videos/{key}/from_timestamp")
            if start_s is None:
                raise DataValidationError(f"{ep_where}: key 'videos/{key}/from_timestamp' is missing")
            video_path = root / video_template.format(
                video_key=key, chunk_index=int(row.get(f"videos/{key}/chunk_index") or 0),
                file_index=int(row.get(f"videos/{key}/file_index") or 0))
            want = steps + (1 if ours else 0)
            frames = read_video(video_path, fps, float(start_s), float(start_s) + want / fps)
            expect_shape = (want, *spec_of[n].shape)
            if frames.shape != expect_shape:
                raise DataValidationError(
                    f"{video_path}: decoded {frames.shape[0]} frames of {frames.shape[1:]} for {ep_where} from "
                    f"{start_s:.3f} s; expected {want} frames of {spec_of[n].shape} (truncated video?)"
                )
            obs[n] = frames[:steps]
            if ours:
                final[n] = frames[steps]
            else:
                final[n] = frames[-1]
                extra_notes["lerobot_final_observation"] = "copied from the last frame"
        step: dict[str, Any] = {
            "observation": obs, "action": action, "reward": reward, "terminated": terminated, "truncated": truncated,
        }
        if "intervention" in names:
            step["intervention"] = col("intervention", (), "bool")
        if "wall_time_s" in names:
            step["timestamp_s"] = col("wall_time_s", (), "float64")
        for key in STEP_STRINGS:
            if key in names:
                step[key] = [str(s) for s in part.column(key).to_pylist()]
        if "language_instruction" not in names and "task_index" in names:
            step["language_instruction"] = [tasks.get(int(i), "") for i in col("task_index", (), "int64")]
        info_cols = [k for k in names if k.startswith("info.")]
        if info_cols:
            step["info"] = {}
            for k in info_cols:
                values = part.column(k).to_numpy(zero_copy_only=False)
                step["info"][k[5:]] = values
        raw_meta = row.get(OURS + "metadata")
        if raw_meta:
            try:
                meta = EpisodeMetadata.from_json(json.loads(raw_meta))
            except (ValueError, TypeError) as err:
                raise DataValidationError(f"{row['_file']}: key '{OURS}metadata' of {ep_where}: {err}") from err
            meta = replace(meta, length=0, started_unix_s=None, committed_unix_s=None)
            success = meta.success
        else:
            row_tasks = row.get("tasks") or []
            base = metadata or EpisodeMetadata(task=row_tasks[0] if row_tasks else "", robot=str(
                info.get("robot_type") or ""), source=Source.DEMO)
            meta = replace(base, extra={**base.extra, **extra_notes})
            success = None
        if "lerobot_final_observation" in extra_notes and raw_meta:
            meta = replace(meta, extra={**meta.extra, "lerobot_final_observation": "copied from the last frame"})
        with store.begin_episode(meta) as writer:
            writer.extend(step)
            indices.append(writer.commit(final, success=success))
    return indices
