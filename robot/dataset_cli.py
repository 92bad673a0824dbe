"""`robot dataset`: inspect, validate, convert, export video, replay in simulation, generate D4RL-style data.

    robot dataset info PATH [--json]                     episodes, steps, keys, sources, success, size
    robot dataset validate PATH                          deep check; exit 1 listing the problems
    robot dataset convert SRC DST [--to FORMAT]          episode store <-> D4RL HDF5 / LeRobot v3; Minari in
    robot dataset export-video STORE OUT.mp4 [-e N]      an episode's camera(s) to mp4
    robot dataset replay STORE [-e N] [--video OUT.mp4]  re-execute logged actions in the simulated task
    robot dataset generate TASK [--levels ...]           random / medium / expert / medium-replay with SAC

Formats are recognised from the path: an episode store is a folder with zarr.json, a LeRobot v3 dataset a
folder with meta/info.json, a D4RL file a .hdf5/.h5 with /observations, a Minari file one with
episode_<id> groups (or a Minari dataset folder with data/main_data.hdf5). A new destination's format is
its extension (.hdf5/.h5: D4RL), else an episode store unless `--to lerobot`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from robot.cli import CliParser, CommandLineError, console, err_console

FORMATS = ("store", "d4rl", "minari", "lerobot")
HDF5_SUFFIXES = (".hdf5", ".h5")


# ============================================================================================ formats
def detect_format(path: Path) -> str:
    """Format of an existing dataset path; a clear error when it is none of them."""
    if path.is_dir():
        if (path / "zarr.json").is_file():
            return "store"
        if (path / "meta" / "info.json").is_file():
            return "lerobot"
        if (path / "data" / "main_data.hdf5").is_file():
            return "minari"
        raise CommandLineError(
            f"{path}: not a dataset folder; expected an episode store (zarr.json), a LeRobot v3 dataset "
            "(meta/info.json) or a Minari dataset (data/main_data.hdf5)"
        )
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() not in HDF5_SUFFIXES:
        raise CommandLineError(f"{path}: unknown file type {path.suffix!r}; expected .hdf5/.h5 or a dataset folder")
    from data.hdf5_io import open_hdf5

    with open_hdf5(path) as f:
        if "observations" in f:
            return "d4rl"
        if any(name.startswith("episode_") for name in f):
            return "minari"
        raise CommandLineError(
            f"{path}: HDF5 file with keys {sorted(f.keys())[:8]}; expected D4RL (/observations) or Minari "
            "(/episode_<id> groups)"
        )


def _minari_file(path: Path) -> Path:
    return path / "data" / "main_data.hdf5" if path.is_dir() else path


def _destination_format(path: Path, to: str | None) -> str:
    if to is not None:
        if to == "minari":
            raise CommandLineError("--to minari: Minari is import-only; write 'store', 'd4rl' or 'lerobot'")
        if to == "d4rl" and path.suffix.lower() not in HDF5_SUFFIXES:
            raise CommandLineError(f"{path}: a D4RL destination needs a .hdf5 or .h5 name")
        return to
    return "d4rl" if path.suffix.lower() in HDF5_SUFFIXES else "store"


def _size_on_disk(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# ============================================================================================ info
def dataset_info(path: Path) -> dict[str, Any]:
    """A summary of any supported dataset (see `robot dataset info`)."""
    fmt = detect_format(path)
    out: dict[str, Any] = {"path": str(path), "format": fmt, "size_bytes": _size_on_disk(path)}
    if fmt == "store":
        from data.episode_store import EpisodeStore

        with EpisodeStore.open(path) as store:
            metas = [store.metadata(i) for i in range(len(store))]
            keys = {f"observation/{k}": s.to_json() for k, s in store.schema.observation.items()}
            keys["action"] = store.schema.action.to_json()
            first = store.episode(0) if metas else None
            for key in first.keys() if first is not None else []:  # noqa: SIM118 - Episode is not a Mapping
                if key.startswith("info/"):
                    keys[key] = {"shape": [], "dtype": str(first.array(key).dtype)}
        known = [m.success for m in metas if m.success is not None]
        out.update({
            "episodes": len(metas), "steps": int(sum(m.length for m in metas)), "keys": keys,
            "sources": _counts(m.source.value for m in metas), "tasks": _counts(m.task for m in metas),
            "success_rate": float(np.mean(known)) if known else None, "episodes_with_success": len(known),
        })
    elif fmt == "d4rl":
        from data.d4rl import load_d4rl_hdf5
        from data.hdf5_io import open_hdf5

        data = load_d4rl_hdf5(path)
        ends = data["terminals"] | data["timeouts"]
        keys = {}
        with open_hdf5(path) as f:
            f.visititems(lambda name, node: keys.__setitem__(name, {"shape": list(node.shape), "dtype": str(
                node.dtype)}) if hasattr(node, "shape") else None)
        out.update({
            "episodes": int(ends.sum() + (0 if ends[-1] else 1)), "steps": len(data["observations"]), "keys": keys,
            "terminals": int(data["terminals"].sum()), "timeouts": int(data["timeouts"].sum()),
            "mean_reward": float(data["rewards"].mean()),
        })
    elif fmt == "minari":
        from data.minari import read_minari_hdf5

        episodes = list(read_minari_hdf5(_minari_file(path)))
        first = episodes[0]
        keys = {f"observations/{k}": {"shape": list(v.shape[1:]), "dtype": str(v.dtype)}
                for k, v in first.observations.items()}
        keys["actions"] = {"shape": list(first.actions.shape[1:]), "dtype": str(first.actions.dtype)}
        out.update({"episodes": len(episodes), "steps": int(sum(len(e) for e in episodes)), "keys": keys,
                    "terminations": int(sum(e.terminations.sum() for e in episodes))})
    else:
        from data.lerobot import read_episodes_meta, read_info

        info = read_info(path)
        rows = read_episodes_meta(path)
        successes = []
        for row in rows:
            raw = row.get("robot_stack/metadata")
            if raw and json.loads(raw).get("success") is not None:
                successes.append(bool(json.loads(raw)["success"]))
        out.update({
            "episodes": len(rows), "steps": int(sum(r["length"] for r in rows)), "fps": info["fps"],
            "codebase_version": info["codebase_version"], "robot_type": info.get("robot_type"),
            "keys": {k: {"shape": v["shape"], "dtype": v["dtype"]} for k, v in info["features"].items()},
            "tasks": info.get("total_tasks"),
            "success_rate": float(np.mean(successes)) if successes else None,
        })
    return out


def _counts(values) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def cmd_info(args: argparse.Namespace) -> int:
    info = dataset_info(Path(args.path))
    if args.json:
        print(json.dumps(info, indent=2))  # noqa: T201 - machine-readable output
        return 0
    from rich.table import Table

    from robot.progress import key_value_table

    rows = {k: v for k, v in info.items() if k not in ("keys", "size_bytes", "path")}
    rows["size on disk"] = _human_bytes(info["size_bytes"])
    if rows.get("success_rate") is not None:
        rows["success_rate"] = f"{rows['success_rate']:.0%}"
    console.print(key_value_table(f"{info['path']} ({info['format']})", {
        k: (", ".join(f"{a}: {b}" for a, b in v.items()) if isinstance(v, dict) else "-" if v is None else v)
        for k, v in rows.items()
    }))
    table = Table(title="keys", title_justify="left")
    for col in ("key", "shape", "dtype"):
        table.add_column(col)
    for key, spec in info["keys"].items():
        table.add_row(key, str(tuple(spec["shape"])), spec["dtype"])
    console.print(table)
    return 0


# ============================================================================================ validate
def validate(path: Path) -> str:
    """Deep check of any supported dataset; returns a one-line summary or raises DataValidationError."""
    fmt = detect_format(path)
    if fmt == "store":
        from data.episode_store import EpisodeStore

        with EpisodeStore.open(path) as store:
            n = store.validate(deep=True)
        return f"{path}: episode store OK, {n} episodes checked (every chunk read)"
    if fmt == "d4rl":
        from data.d4rl import d4rl_episodes, load_d4rl_hdf5

        data = load_d4rl_hdf5(path)
        for key in ("observations", "actions", "rewards"):
            if not np.isfinite(data[key]).all():
                from data.schema import DataValidationError

                raise DataValidationError(f"{path}: key /{key} holds NaN or infinite values; expected finite numbers")
        return f"{path}: D4RL file OK, {len(data['observations'])} rows, {len(d4rl_episodes(data))} episodes"
    if fmt == "minari":
        from data.minari import read_minari_hdf5

        n = sum(1 for _ in read_minari_hdf5(_minari_file(path)))
        return f"{path}: Minari file OK, {n} episodes"
    with tempfile.TemporaryDirectory(prefix="robot-validate-") as tmp:  # decode every frame and row
        n = len(_import_into_store(path, "lerobot", Path(tmp) / "store", argparse.Namespace(
            task=None, robot="", source="demo", observation_key="state", max_episode_steps=None)))
    return f"{path}: LeRobot dataset OK, {n} episodes (every row and video frame decoded)"


def cmd_validate(args: argparse.Namespace) -> int:
    from data.schema import DataValidationError

    try:
        console.print(validate(Path(args.path)), highlight=False)
    except DataValidationError as err:
        err_console.print(f"[red]invalid:[/] {err}", highlight=False, soft_wrap=True)
        return 1
    return 0


# ============================================================================================ convert
def _template(args: argparse.Namespace, src: Path):
    from data.schema import EpisodeMetadata, Source

    try:
        source = Source(args.source)
    except ValueError:
        raise CommandLineError(f"--source: expected one of {[s.value for s in Source]}, got {args.source!r}") from None
    return EpisodeMetadata(task=args.task or src.stem, robot=args.robot, source=source)


def _import_into_store(src: Path, fmt: str, dst: Path, args: argparse.Namespace) -> list[int]:
    from data.episode_store import EpisodeStore

    if fmt == "d4rl":
        from data.d4rl import d4rl_schema, import_d4rl, load_d4rl_hdf5

        data = load_d4rl_hdf5(src, args.max_episode_steps)
        with EpisodeStore.create(dst, d4rl_schema(data, args.observation_key)) as store:
            return import_d4rl(data, store, _template(args, src), args.observation_key)
    if fmt == "minari":
        from data.minari import import_minari, minari_schema

        file = _minari_file(src)
        with EpisodeStore.create(dst, minari_schema(file, args.observation_key)) as store:
            return import_minari(file, store, _template(args, src), args.observation_key)
    if fmt == "lerobot":
        from data.lerobot import import_lerobot, lerobot_schema

        with EpisodeStore.create(dst, lerobot_schema(src)) as store:
            return import_lerobot(src, store, _template(args, src) if args.task else None)
    raise CommandLineError(f"cannot import format {fmt!r}")


@contextmanager
def _as_store(src: Path, fmt: str, near: Path, args: argparse.Namespace):
    """The source as an open episode store: itself, or a temporary import next to the destination."""
    from data.episode_store import EpisodeStore

    if fmt == "store":
        with EpisodeStore.open(src) as store:
            yield store
        return
    tmp = near.parent / f".{near.name}.{uuid.uuid4().hex}.import"
    try:
        _import_into_store(src, fmt, tmp, args)
        with EpisodeStore.open(tmp) as store:
            yield store
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def convert(src: Path, dst: Path, args: argparse.Namespace) -> str:
    src_fmt = args.from_format or detect_format(src)
    if src_fmt not in FORMATS:
        raise CommandLineError(f"--from: expected one of {', '.join(FORMATS)}, got {src_fmt!r}")
    dst_fmt = _destination_format(dst, args.to)
    if dst.exists():
        raise CommandLineError(f"{dst}: already exists; choose a new destination")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst_fmt == "store" and src_fmt != "store":
        n = len(_import_into_store(src, src_fmt, dst, args))
        return f"{src} ({src_fmt}) -> {dst} (store): {n} episodes"
    with _as_store(src, src_fmt, dst, args) as store:
        n = len(store)
        if dst_fmt == "store":
            shutil.copytree(store.path, dst, ignore=shutil.ignore_patterns("writer.lock"))
            (dst / "writer.lock").touch()
        elif dst_fmt == "d4rl":
            from data.d4rl import export_d4rl_hdf5

            key = args.observation_key if args.observation_key in store.schema.observation else None
            export_d4rl_hdf5(store, dst, key)
        else:
            from data.lerobot import export_lerobot

            export_lerobot(store, dst, fps=args.fps, video_codec=args.video_codec)
    return f"{src} ({src_fmt}) -> {dst} ({dst_fmt}): {n} episodes"


def cmd_convert(args: argparse.Namespace) -> int:
    console.print(convert(Path(args.src), Path(args.dst), args), highlight=False)
    return 0


# ============================================================================================ video / replay
def _open_store(path: str):
    from data.episode_store import EpisodeStore

    p = Path(path)
    if detect_format(p) != "store":
        raise CommandLineError(f"{p}: expected an episode store (convert other formats first with 'robot dataset "
                               "convert')")
    return EpisodeStore.open(p)


def _episode_index(store, value: int) -> int:
    if not -len(store) <= value < len(store):
        raise CommandLineError(f"--episode: expected 0..{len(store) - 1}, got {value}")
    return value % len(store)


def cmd_export_video(args: argparse.Namespace) -> int:
    from data.lerobot import write_video

    with _open_store(args.store) as store:
        cameras = [k for k, s in store.schema.observation.items() if len(s.shape) == 3 and s.shape[2] == 3]
        if not cameras:
            raise CommandLineError(f"{args.store}: the store has no camera observations (H x W x 3); "
                                   f"observations are {list(store.schema.observation)}")
        chosen = cameras if args.camera in (None, "all") else [args.camera]
        for cam in chosen:
            if cam not in cameras:
                raise CommandLineError(f"--camera: expected one of {cameras} or 'all', got {cam!r}")
        index = _episode_index(store, args.episode)
        data = store.episode(index).load([f"observation/{c}" for c in chosen])
        frames = np.concatenate([data[f"observation/{c}"] for c in chosen], axis=2)  # side by side
        n = write_video(Path(args.out), frames, args.fps)
    console.print(f"wrote {n} frames of episode {index} ({' | '.join(chosen)}) to {args.out}", highlight=False)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from rich.table import Table

    from robot.dataset_replay import ReplayMismatchError, replay_episode

    with _open_store(args.store) as store:
        indices = range(len(store)) if args.episode == "all" else [_episode_index(store, _int(args.episode))]
        if args.video and len(indices) != 1:
            raise CommandLineError("--video: replay one episode (--episode N) to write a side-by-side video")
        reports = []
        try:
            for i in indices:
                reports.append(replay_episode(store, i, args.tolerance, args.video, args.camera, args.fps))
        except ReplayMismatchError as err:
            err_console.print(f"[red]mismatch:[/] {err}", highlight=False, soft_wrap=True)
            return 1
    if args.json:
        print(json.dumps([r.to_json() for r in reports], indent=2))  # noqa: T201 - machine-readable output
        return 0
    table = Table(title=f"replay of {args.store}: divergence from the logged robot state", title_justify="left")
    for col in ("episode", "task", "steps", "quantity", "mean", "max", "final", "return logged / replayed"):
        table.add_column(col)
    for r in reports:
        for name, s in r.summary().items():
            table.add_row(str(r.episode), r.task, f"{r.steps}/{r.logged_steps}" + (" (ended early)" if r.ended_early
                          else ""), name, f"{s['mean']:.3g}", f"{s['max']:.3g}", f"{s['final']:.3g}",
                          f"{r.logged_return:.3g} / {r.replayed_return:.3g}")
    console.print(table)
    if args.video:
        console.print(f"side-by-side video (logged | replayed): {args.video}", highlight=False)
    return 0


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CommandLineError(f"--episode: expected an episode index or 'all', got {text!r}") from None


# ============================================================================================ generate
def cmd_generate(argv: list[str]) -> int:
    from robot.config import ConfigError, apply_overrides, describe_type, flat_fields
    from robot.dataset_generate import GenerateConfig, generate
    from robot.progress import RichReporter, key_value_table

    base = GenerateConfig()
    parser = CliParser(prog="robot dataset generate", description=(
        "D4RL-style datasets (random, medium, expert, medium-replay) for a task, made with our SAC. "
        "Budgets are options; the defaults take hours on a CPU, e.g. --train_steps 20000 --dataset_steps 10000 "
        "for a quick set."))
    parser.add_argument("task", help="hopper, halfcheetah, walker2d or a Panda task (robot tasks)")
    for key, (tp, value, doc) in flat_fields(base).items():
        if key in ("task", "train_overrides"):
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        parser.add_argument(*names, dest=key, default=argparse.SUPPRESS, metavar=describe_type(tp).upper().split()[0],
                            help=f"{doc} [{describe_type(tp)}; default: {shown}]")
    parser.add_argument("--set", dest="train_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a TrainConfig setting over the task's preset, e.g. --set agent.utd_ratio=1 (repeat)")
    args = vars(parser.parse_args(argv))
    import envs

    try:
        envs.get_task(args["task"])
    except ValueError as err:
        raise CommandLineError(str(err)) from None
    args["train_overrides"] = tuple(args["train_overrides"])
    try:
        config = apply_overrides(base, args)
    except ConfigError as err:
        raise CommandLineError(str(err)) from None
    summary = generate(config, reporter=RichReporter(console), say=lambda t: console.print(t, highlight=False))
    rows = {"random return": summary["random_return"]}
    if "expert_return" in summary:
        rows.update({"expert return (eval)": summary["expert_return"], "medium return (eval)": summary[
            "medium_return"], "medium checkpoint step": summary["medium_step"],
            "medium target return": summary["medium_target_return"]})
    for level, facts in summary["levels"].items():
        rows[level] = f"{facts['dataset_episodes']} episodes, {facts['dataset_steps']} steps -> " + ", ".join(
            facts["paths"])
    console.print(key_value_table(f"generated {config.task} datasets", rows))
    return 0


# ============================================================================================ main
def _parser() -> CliParser:
    parser = CliParser(prog="robot dataset", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    p = sub.add_parser("info", help="episodes, steps, keys, sources, success rate, size on disk")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p = sub.add_parser("validate", help="deep check; exit status 1 with the problems")
    p.add_argument("path")
    p = sub.add_parser("convert", help="between episode store, D4RL HDF5, LeRobot v3 (and from Minari HDF5)")
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--from", dest="from_format", choices=FORMATS, help="source format (default: detected)")
    p.add_argument("--to", choices=FORMATS, help="destination format (default: .hdf5/.h5 -> d4rl, else store)")
    p.add_argument("--task", help="episode task name when importing (default: source file name)")
    p.add_argument("--robot", default="", help="episode robot name when importing")
    p.add_argument("--source", default="demo", help="episode source when importing (demo, online, ...)")
    p.add_argument("--observation-key", "--observation_key", dest="observation_key", default="state",
                   help="store observation name of flat D4RL/Minari observations (default: state)")
    p.add_argument("--max-episode-steps", "--max_episode_steps", dest="max_episode_steps", type=int,
                   help="time limit, for old D4RL files without /timeouts")
    p.add_argument("--fps", type=int, default=10, help="frame rate of a LeRobot export (default: 10)")
    p.add_argument("--video-codec", "--video_codec", dest="video_codec", default="libsvtav1",
                   help="video encoder of a LeRobot export (default: libsvtav1, AV1 as LeRobot)")
    p = sub.add_parser("export-video", help="an episode's camera(s) to mp4")
    p.add_argument("store")
    p.add_argument("out")
    p.add_argument("-e", "--episode", type=int, default=0, help="episode index (default: 0; -1: the last)")
    p.add_argument("--camera", help="camera observation name, or 'all' side by side (default: all)")
    p.add_argument("--fps", type=int, default=10, help="frame rate (default: 10)")
    p = sub.add_parser("replay", help="re-execute logged actions in the simulated task; robot-state divergence")
    p.add_argument("store")
    p.add_argument("-e", "--episode", default="0", help="episode index or 'all' (default: 0)")
    p.add_argument("--video", help="write logged | replayed camera frames side by side to this mp4")
    p.add_argument("--camera", help="camera of the video (default: the first in the store)")
    p.add_argument("--fps", type=int, default=10, help="video frame rate (default: 10)")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest allowed difference of the reset observation from the logged one (default: 1e-4)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub.add_parser("generate", help="D4RL-style datasets with our SAC (robot dataset generate --help)", add_help=False)
    return parser


def main(argv: list[str]) -> int:
    argv = list(argv)
    if argv and argv[0] == "generate":
        return cmd_generate(argv[1:])
    args = _parser().parse_args(argv)
    if args.command is None:
        _parser().print_help()
        return 2
    handlers = {"info": cmd_info, "validate": cmd_validate, "convert": cmd_convert,
                "export-video": cmd_export_video, "replay": cmd_replay}
    return handlers[args.command](args)
