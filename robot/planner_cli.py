"""`robot planner`: train and evaluate the language planner of the stack-cubes task.

    robot planner sft [--key value ...]                         SFT of a new model on scripted plans
    robot planner rl --algo grpo [--init RUN_DIR] [...]          RL from verifier rewards
    robot planner pref --algo dpo [--chi2 0.01] [--init RUN_DIR] preference optimisation on scored samples
    robot planner eval RUN_DIR [--tasks N] [--seed S]            greedy success rate, plan length, format errors

RL methods: grpo, dr_grpo, dapo, bnpo, bapo, steer, grpo_lambda, fapo, noisy_backward, noisy_forward, opmd,
asymre. Preference methods: dpo, rpo, nft, inpo, mpo, tdpo. Without --init, rl and pref first run SFT
(--sft.steps) on a new model in the same run. Every config field is an option (`robot planner rl --help`).
A run folder holds config.json, metrics.jsonl, tensorboard/, checkpoint/ (save_pretrained model and
tokenizer) and eval_summary.json. Needs the `lm` extra (transformers, tokenizers).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robot.cli import CliParser, CommandLineError, console
from robot.config import ConfigError, apply_overrides, describe_type, flat_fields, from_dict, save_json

ALIASES = {"pref.chi2": "--chi2"}


def _config_parser(command: str, config) -> CliParser:
    parser = CliParser(prog=f"robot planner {command}", description=__doc__.splitlines()[0])
    for key, (tp, value, doc) in flat_fields(config).items():
        if key == "command":
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else getattr(value, "value", value)
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        names += [ALIASES[key]] if key in ALIASES else []
        parser.add_argument(*names, dest=key, default=argparse.SUPPRESS, metavar=describe_type(tp).upper().split()[0],
                            help=f"{doc} [{describe_type(tp)}; default: {shown}]")
    return parser


class RichPlannerReporter:
    """One progress bar per phase (sft, the RL or preference method) with its latest loss and success."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task = None

    def start(self, total_steps: int, start_step: int) -> None:
        self.phase("train", total_steps)

    def phase(self, name: str, total: int) -> None:
        self.finish()
        self._progress = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                                  console=console)
        self._progress.start()
        self._task = self._progress.add_task(name, total=total, stats="")

    def progress(self, step: int, stats: dict[str, float]) -> None:
        if self._progress is None:
            return
        shown = []
        for key, label, fmt in (("sft/loss", "loss", "{:.3f}"), ("policy/loss", "loss", "{:.3f}"),
                                ("pref/loss", "loss", "{:.3f}"), ("train/success_rate", "success", "{:.0%}"),
                                ("perf/completion_tokens_per_s", "tok/s", "{:.0f}")):
            if stats.get(key) is not None:
                shown.append(f"{label} {fmt.format(stats[key])}")
        self._progress.update(self._task, completed=step, stats="  ".join(shown))

    def message(self, text: str) -> None:
        (self._progress.console if self._progress else console).print(text)

    def finish(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def cmd_train(command: str, argv: list[str]) -> int:
    from policies.planner.trainer import PlannerConfig, PlannerTrainer
    from robot.progress import key_value_table
    from robot.run_dir import create_run_dir

    base = PlannerConfig(command="sft")
    args = vars(_config_parser(command, base).parse_args(argv))
    if command != "sft" and "algo" not in args:
        raise CommandLineError(f"robot planner {command} needs --algo (see 'robot planner {command} --help')")
    config = apply_overrides(base, {**args, "command": command})
    run_dir = create_run_dir(config.run_root, f"planner-{command}" + (f"-{config.algo}" if config.algo else ""),
                             config.name)
    save_json(config, run_dir / "config.json")
    console.print(f"[bold]run folder[/] {run_dir}")
    trainer = PlannerTrainer(config, run_dir, RichPlannerReporter())
    n_params = sum(p.numel() for p in trainer.model.parameters())
    console.print(f"planner {command} {config.algo} | {n_params / 1e6:.2f} M parameters | "
                  f"{len(trainer.tokenizer)} tokens | {config.train_tasks} train / {config.eval_tasks} eval tasks")
    summary = trainer.run()
    start, final = summary["start"], summary["final"]
    rows = {"success rate": _pct(final["eval/success_rate"])}
    if command != "sft":
        rows["success rate at start"] = _pct(start["eval/success_rate"])
    rows |= {
        "format errors": _pct(final["eval/format_error_rate"]),
        "plan length (skills)": final["eval/plan_length"],
        "optimal share of successes": final["eval/optimal_share"],
        "steps": summary["steps"],
        "wall time": f"{summary['wall_s']:.0f} s",
        "checkpoint": str(run_dir / "checkpoint"),
    }
    console.print(key_value_table("planner summary", rows))
    return 0


def cmd_eval(argv: list[str]) -> int:
    from policies.planner.trainer import PlannerConfig, PlannerTrainer
    from robot.core.checkpoint import atomic_write_text
    from robot.progress import key_value_table

    parser = CliParser(prog="robot planner eval", description="evaluate a planner run's checkpoint")
    parser.add_argument("run_dir")
    parser.add_argument("--tasks", type=int, default=None, help="held-out tasks (default: the run's eval_tasks)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the held-out tasks (default: the run's)")
    args = parser.parse_args(argv)
    run_dir = Path(args.run_dir)
    path = run_dir / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a planner run folder (no config.json)")
    try:
        config = from_dict(PlannerConfig(), json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    if args.tasks is not None and args.tasks <= 0:
        raise CommandLineError(f"--tasks: expected a positive number, got {args.tasks}")
    config = dataclasses.replace(
        config, init=str(run_dir), model=dataclasses.replace(config.model, path=""),
        eval_tasks=args.tasks or config.eval_tasks, eval_seed=config.eval_seed if args.seed is None else args.seed,
        train_tasks=1,
    )
    trainer = PlannerTrainer(config)
    result = trainer.evaluate()
    out = {"tasks": config.eval_tasks, "seed": config.eval_seed, **result}
    atomic_write_text(run_dir / "eval.json", json.dumps(out, indent=2) + "\n")
    console.print(key_value_table(f"eval of {run_dir.name}", {
        "success rate": _pct(result["eval/success_rate"]),
        "format errors": _pct(result["eval/format_error_rate"]),
        "plan length (skills)": result["eval/plan_length"],
        "optimal share of successes": result["eval/optimal_share"],
        "tasks": config.eval_tasks,
    }))
    return 0


def _pct(value: float) -> str:
    return f"{value:.0%}"


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        console.print(__doc__)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("sft", "rl", "pref"):
        return cmd_train(command, rest)
    if command == "eval":
        return cmd_eval(rest)
    raise CommandLineError(f"unknown planner command {command!r}; expected sft, rl, pref or eval")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
