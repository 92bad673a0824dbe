"""`robot reward-classifier`: train and evaluate a success classifier from an episode store.

    robot reward-classifier train STORE --out DIR [--steps N --success_frames K --encoder.kind ...]
    robot reward-classifier eval STORE --model DIR [--episodes held-out|all] [--threshold P]

`train` labels the last `success_frames` observations of successful episodes as positives and failed
episodes as negatives, holds out a share of the episodes of each class, trains with balanced batches and
random shifts, and writes DIR/{config.json, model.safetensors, metrics.json} with held-out precision
and recall. `eval` measures a trained model on the store's held-out episodes (those recorded in its
metrics.json) or on all episodes whose success is known.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robot.cli import CliParser, CommandLineError, console
from robot.config import apply_overrides, describe_type, flat_fields


def _parser() -> CliParser:
    from policies.reward_classifier import RewardClassifierConfig

    parser = CliParser(prog="robot reward-classifier", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser, required=True)
    train = sub.add_parser("train", help="train a classifier on an episode store")
    train.add_argument("store", help="episode store folder with successful and failed episodes")
    train.add_argument("--out", required=True, help="output folder for the model and its metrics")
    for key, (tp, value, doc) in flat_fields(RewardClassifierConfig()).items():
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else getattr(value, "value", value)
        train.add_argument(f"--{key}", dest=f"cfg:{key}", default=argparse.SUPPRESS,
                           metavar=describe_type(tp).upper().split()[0],
                           help=f"{doc} [{describe_type(tp)}; default: {shown}]")
    ev = sub.add_parser("eval", help="precision / recall of a trained classifier on a store")
    ev.add_argument("store", help="episode store folder")
    ev.add_argument("--model", required=True, help="folder written by 'robot reward-classifier train'")
    ev.add_argument("--episodes", choices=("held-out", "all"), default="held-out",
                    help="held-out: the episodes the model's metrics.json held out; all: every labelled episode")
    ev.add_argument("--threshold", type=float, default=None,
                    help="success probability threshold (default: the model's)")
    return parser


def _open_store(path: str):
    from data.episode_store import EpisodeStore

    if not Path(path).is_dir():
        raise FileNotFoundError(f"{path}: no episode store folder")
    return EpisodeStore.open(Path(path), mode="r")


def cmd_train(args: argparse.Namespace) -> int:
    from policies.reward_classifier import RewardClassifierConfig, train_reward_classifier
    from robot.progress import key_value_table

    overrides = {k[len("cfg:"):]: v for k, v in vars(args).items() if k.startswith("cfg:")}
    config = apply_overrides(RewardClassifierConfig(), overrides)
    store = _open_store(args.store)
    console.print(f"training a reward classifier on {args.store} "
                  f"({config.steps} steps, encoder {config.encoder.kind.value})")

    def progress(step: int, loss: float) -> None:
        if step % max(1, config.steps // 10) == 0:
            console.print(f"  step {step}/{config.steps}  loss {loss:.4f}")

    model, metrics = train_reward_classifier(store, config, progress)
    model.save(Path(args.out), metrics)
    console.print(key_value_table("held-out episodes", _shown(metrics)))
    console.print(f"wrote {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from policies.reward_classifier import (
        METRICS_FILE,
        RewardClassifier,
        classification_metrics,
        labelled_frames,
        predict_frames,
    )
    from robot.progress import key_value_table

    model = RewardClassifier.load(Path(args.model))
    store = _open_store(args.store)
    threshold = model.config.threshold if args.threshold is None else args.threshold
    if not 0.0 < threshold < 1.0:
        raise CommandLineError(f"--threshold: expected a probability in (0, 1), got {threshold}")
    if args.episodes == "held-out":
        metrics_path = Path(args.model) / METRICS_FILE
        if not metrics_path.is_file():
            raise CommandLineError(f"{metrics_path}: missing; use --episodes all")
        episodes = json.loads(metrics_path.read_text())["val_episodes"]
        if max(episodes, default=-1) >= len(store):
            raise CommandLineError(f"{args.store}: has {len(store)} episodes but the model held out {episodes}; "
                                   "is this the store it was trained on? Use --episodes all for another store")
    else:
        episodes = [e.index for e in store.episodes() if e.metadata.success is not None]
    data = labelled_frames(store, model.cameras, episodes, model.config.success_frames)
    metrics = {**classification_metrics(predict_frames(model, data), data.labels, threshold), "threshold": threshold,
               "episodes": len(episodes)}
    console.print(key_value_table(f"reward classifier on {args.episodes} episodes of {args.store}", _shown(metrics)))
    return 0


def _shown(metrics: dict) -> dict:
    keys = ("precision", "recall", "accuracy", "positives", "negatives", "threshold", "episodes")
    return {k: (f"{metrics[k]:.3f}" if isinstance(metrics[k], float) else metrics[k]) for k in keys if k in metrics}


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return {"train": cmd_train, "eval": cmd_eval}[args.command](args)
