"""The `robot` command (also `python -m robot`).

    robot tasks                              list registered tasks and their spaces
    robot collect-demos TASK -n N --out DIR  scripted expert demos into an episode store
    robot collect-demos TASK -n N --teleop keyboard|spacemouse   record demos yourself
    robot train TASK [--key value ...]       train (options: robot train TASK --help)
    robot train --resume RUN_DIR             continue a run from its last checkpoint
    robot eval RUN_DIR [--episodes N]        evaluate a run's latest checkpoint
    robot dataset ...                        inspect, validate, convert, replay and generate datasets
    robot reward-classifier ...              train and evaluate a learned success classifier
    robot serve ...                          the robot server (real arm, or --twin TASK in MuJoCo)
    robot doctor                             check serial ports, devices, cameras and loop latency
    robot planner ...                        the language planner: sft, rl, pref, eval

Errors in the command line exit with status 2 and one line naming the bad value and what is accepted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from robot.config import ConfigError, apply_overrides, describe_type, flat_fields

console = Console()
err_console = Console(stderr=True)


class CommandLineError(Exception):
    """Bad command-line input; reported as one line, exit status 2."""


class CliParser(argparse.ArgumentParser):
    """argparse with one-line errors; every `robot` subcommand module builds its parser from it."""

    def error(self, message: str):  # one clear line instead of usage + message
        message = message.replace("unrecognized arguments:", "unknown option(s):")
        raise CommandLineError(f"{message} (see '{self.prog} --help')")


# ---------------------------------------------------------------------------------------------
# robot tasks
# ---------------------------------------------------------------------------------------------
def cmd_tasks(_args: argparse.Namespace) -> int:
    import envs

    table = Table(title="registered tasks", title_justify="left")
    for col in ("task", "gym id", "observation", "action", "steps", "description"):
        table.add_column(col)
    for name in envs.task_names():
        spec = envs.get_task(name)
        env = envs.make(name)
        table.add_row(name, spec.gym_id, _space(env.observation_space), _space(env.action_space),
                      str(spec.max_episode_steps), spec.description)
        env.close()
    console.print(table)
    return 0


def _space(space) -> str:
    shape = getattr(space, "shape", None)
    return f"{type(space).__name__}{tuple(shape) if shape is not None else ''}"


# ---------------------------------------------------------------------------------------------
# robot train
# ---------------------------------------------------------------------------------------------
def _train_parser(config) -> CliParser:
    parser = CliParser(
        prog="robot train",
        description="Train SAC/RLPD on a task. Every config field is an option; defaults include the task preset.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", nargs="?", help="task name (robot tasks lists them)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    for key, (tp, value, doc) in flat_fields(config).items():
        if key == "task":
            continue
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else getattr(value, "value", value)
        names = [f"--{key}"] + ([f"--{key.replace('_', '-')}"] if "_" in key else [])
        parser.add_argument(
            *names, dest=key, default=argparse.SUPPRESS, metavar=describe_type(tp).upper().split()[0],
            help=f"{doc} [{describe_type(tp)}; default: {shown}]",
        )
    return parser


def _task_from_argv(argv: list[str]) -> str | None:
    for token in argv:
        if not token.startswith("-"):
            return token
        if token == "--resume":
            return None
    return None


def cmd_train(argv: list[str]) -> int:
    import envs
    from robot.presets import default_config
    from robot.run_dir import create_run_dir, load_config, save_config

    task = _task_from_argv(argv)
    if task is not None:
        try:
            envs.get_task(task)
        except ValueError as err:
            raise CommandLineError(str(err)) from None
    config = default_config(task or "pick-cube")
    args = vars(_train_parser(config).parse_args(argv))
    resume_dir = args.pop("resume", None)
    args.pop("task", None)
    if resume_dir is not None:
        if task is not None:
            raise CommandLineError("--resume takes the task from the run folder; drop the task name")
        run_dir = Path(resume_dir)
        config = load_config(run_dir)
        extra = {k: v for k, v in args.items() if k != "total_env_steps"}
        if extra:
            raise CommandLineError(f"--resume accepts only --total_env_steps as an override, got {sorted(extra)}")
        config = apply_overrides(config, args)
        save_config(run_dir, config)
    else:
        if task is None:
            raise CommandLineError("missing TASK; known tasks: " + ", ".join(envs.task_names()))
        config = apply_overrides(config, args)
        run_dir = create_run_dir(config.run_root, config.task, config.name)
        save_config(run_dir, config)
    return _run_training(config, run_dir, resume=resume_dir is not None)


def _run_training(config, run_dir: Path, resume: bool) -> int:
    from robot.plots import plot_learning_curve
    from robot.progress import RichReporter, key_value_table
    from robot.runtime import RuntimeKind
    from robot.train import Trainer

    console.print(f"[bold]run folder[/] {run_dir}")
    reporter = RichReporter(console)
    if RuntimeKind(config.runtime.kind) is not RuntimeKind.SYNC:
        return _run_distributed(config, run_dir, resume, reporter)
    try:
        trainer = Trainer(config, run_dir, reporter)
    except Exception:
        if not resume:  # a run that could not start (bad device, env, demo store) leaves no folder behind
            import shutil

            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    console.print(
        f"task {config.task} | device {trainer.device} | {config.total_env_steps} env steps | "
        f"UTD {config.agent.utd_ratio} | {config.agent.num_critics} critics | {config.num_demos} demos"
    )
    start = time.perf_counter()
    summary = trainer.run(resume=resume)
    wall = time.perf_counter() - start
    curve = plot_learning_curve(run_dir, title=f"{config.task} ({run_dir.name})")
    final, best = summary["final_success_rate"], summary["best_success_rate"]
    console.print(key_value_table("summary", {
        "final eval success": "-" if final is None else f"{final:.0%}",
        "best eval success": "-" if best is None else f"{best:.0%} at step {summary['best_at_step']}",
        "final eval return": summary["final_return"],
        "env steps": summary["env_steps"],
        "gradient updates": summary["updates"],
        "episodes": summary["episodes"],
        "wall time": f"{wall / 60:.1f} min" + (" (this session)" if resume else ""),
        "curve": str(curve),
        "resume with": f"robot train --resume {run_dir}",
    }))
    return 0


def _run_distributed(config, run_dir: Path, resume: bool, reporter) -> int:
    """`--runtime.kind async|ray`: learner and actors (robot.runtime) on this run folder, until the budget is done.

    Both continue by themselves from what the folder holds (the learner's last checkpoint, each actor's
    committed episodes), so `--resume` needs no checkpoint: a run stopped before its first one resumes too.
    """
    from robot.core.metrics import read_metrics
    from robot.plots import plot_learning_curve
    from robot.progress import key_value_table
    from robot.runtime import RuntimeKind

    kind, rt = RuntimeKind(config.runtime.kind), config.runtime
    console.print(f"task {config.task} | runtime {kind.value}: 1 learner, {rt.num_actors} actor(s) | "
                  f"{config.total_env_steps} env steps | UTD {config.agent.utd_ratio} | "
                  f"robot {config.robot_server or 'sim'} | logs in {run_dir / 'logs'}")

    start = time.perf_counter()
    last = {"t": start, "step": None, "updates": None}

    def poll() -> None:  # the learner's metrics rows (every log_every env steps) drive the progress bar
        rows = [r for r in read_metrics(run_dir) if "train/updates" in r]
        if not rows or rows[-1]["step"] == last["step"]:
            return
        now, row = time.perf_counter(), rows[-1]
        if last["step"] is not None:
            dt = now - last["t"]
            reporter.progress(row["step"], {"perf/env_steps_per_s": (row["step"] - last["step"]) / dt,
                                            "perf/updates_per_s": (row["train/updates"] - last["updates"]) / dt})
        last.update(t=now, step=row["step"], updates=row["train/updates"])

    reporter.start(config.total_env_steps, 0)
    try:
        if kind is RuntimeKind.ASYNC:
            from robot.runtime.local import launch

            summary = launch(config, run_dir, poll=poll)
        else:
            from robot.runtime.ray_runtime import run_ray

            summary = run_ray(config, run_dir)
    except (RuntimeError, TimeoutError) as err:  # a side failed: its log says why
        raise CommandLineError(f"{kind.value} runtime: {err}") from None
    finally:
        reporter.finish()
    wall = time.perf_counter() - start
    curve = plot_learning_curve(run_dir, title=f"{config.task} ({run_dir.name}, {kind.value})")
    success = summary["train_success_rate"]
    console.print(key_value_table("summary", {
        "train success (last 20 episodes)": "-" if success is None else f"{success:.0%}",
        "env steps": summary["env_steps"],
        "gradient updates": summary["updates"],
        "episodes per actor": ", ".join(f"{a} {n}" for a, n in sorted(summary["episodes"].items())),
        "interventions": summary["interventions"],
        "wall time": f"{wall / 60:.1f} min" + (" (this session)" if resume else ""),
        "curve": str(curve),
        "evaluate with": f"robot eval {run_dir}",
        "resume with": f"robot train --resume {run_dir}",
    }))
    return 0


# ---------------------------------------------------------------------------------------------
# robot eval
# ---------------------------------------------------------------------------------------------
def cmd_eval(args: argparse.Namespace) -> int:
    from robot.core.checkpoint import atomic_write_text, latest_checkpoint, load_state
    from robot.core.device import resolve_device
    from robot.progress import key_value_table
    from robot.run_dir import load_config
    from robot.train import build_agent, evaluate

    run_dir = Path(args.run_dir)
    config = load_config(run_dir)
    ckpt = Path(args.checkpoint) if args.checkpoint else latest_checkpoint(run_dir / "checkpoints")
    if ckpt is None or not (ckpt / "agent.safetensors").is_file():
        raise CommandLineError(f"{run_dir}: no committed checkpoint to evaluate (expected checkpoints/step_N/)")
    from envs.real import make_env, parse_server_address

    server, token_file = config.robot_server, config.robot_token_file
    if args.server is not None:  # another robot server than the run's (or "" for the sim)
        server, token_file = args.server, args.token_file or ""
        if server:
            parse_server_address(server)
    env = make_env(config.task, config.env, server, token_file)  # a robot env connects only at reset
    device = resolve_device(config.device)
    agent = build_agent(env.observation_space, env.action_space.shape[0], config, device)
    env.close()
    tensors, layout = load_state(ckpt, "agent")
    agent.load_state_tensors({k: v.to(device) for k, v in tensors.items()}, layout)
    if server:
        console.print(f"evaluating on the robot server {server}")
    result = evaluate(agent, config.task, config.env, args.seed if args.seed is not None else config.seed + 1000,
                      args.episodes, server, token_file)
    out = {"checkpoint": ckpt.name, "episodes": args.episodes, **result}
    atomic_write_text(run_dir / f"eval_{ckpt.name}.json", json.dumps(out, indent=2) + "\n")
    console.print(key_value_table(f"eval of {run_dir.name} / {ckpt.name}", {
        "success rate": f"{result['eval/success_rate']:.0%}",
        "mean return": result["eval/return"],
        "mean episode length": result["eval/episode_length"],
        "episodes": args.episodes,
    }))
    return 0


# ---------------------------------------------------------------------------------------------
# robot collect-demos
# ---------------------------------------------------------------------------------------------
def cmd_collect_demos(args: argparse.Namespace) -> int:
    import envs
    from robot.demos import collect_demos

    spec = envs.get_task(args.task)
    if args.n <= 0:
        raise CommandLineError(f"-n: expected a positive number of episodes, got {args.n}")
    out = Path(args.out or f"demos/{spec.name}")
    if args.teleop:
        if args.server:
            raise CommandLineError("--teleop records in the sim; --server works with the scripted expert only")
        return _collect_teleop_demos(spec, args, out)
    if args.server:
        from envs.real import parse_server_address

        parse_server_address(args.server)
        console.print(f"collecting on the robot server {args.server}")
    demos = collect_demos(spec.name, args.n, args.noise, args.seed, server=args.server or "",
                          token_file=args.token_file or "")
    from robot.demo_store import write_demos

    write_demos(out, spec, demos, noise_std=args.noise)
    lengths = [len(d) for d in demos]
    console.print(f"wrote {len(demos)} successful {spec.name} demos to {out} "
                  f"(mean length {sum(lengths) / len(lengths):.1f} steps)")
    return 0


def _collect_teleop_demos(spec, args: argparse.Namespace, out: Path) -> int:
    from hardware.errors import HardwareError
    from robot.interventions import make_teleop_device, record_teleop_episodes

    device = make_teleop_device(args.teleop)
    console.print(f"recording {args.n} {spec.name} episodes with the {args.teleop}; successful ones go to {out}")
    try:
        indices = record_teleop_episodes(spec.name, device, args.n, out, seed=args.seed, keep_failed=args.keep_failed)
    except (HardwareError, ImportError) as err:
        raise CommandLineError(f"--teleop {args.teleop}: {err}") from None
    console.print(f"wrote {len(indices)} teleop episodes (source 'demo') to {out}")
    return 0


# ---------------------------------------------------------------------------------------------
def _main_parser() -> CliParser:
    parser = CliParser(prog="robot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    sub.add_parser("tasks", help="list registered tasks")
    demos = sub.add_parser("collect-demos", help="record scripted expert demos into an episode store")
    demos.add_argument("task")
    demos.add_argument("-n", type=int, required=True, help="number of successful episodes")
    demos.add_argument("--out", help="episode store folder (default: demos/TASK)")
    demos.add_argument("--noise", type=float, default=0.1, help="expert action noise std (default: 0.1)")
    demos.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    demos.add_argument("--teleop", choices=("keyboard", "spacemouse"),
                       help="record with a teleop device instead of the scripted expert")
    demos.add_argument("--keep-failed", action="store_true", help="teleop: also keep episodes that did not succeed")
    demos.add_argument("--server", metavar="HOST:PORT", help="run the episodes on a robot server (robot serve)")
    demos.add_argument("--token-file", metavar="FILE", help="the server's token (default: $ROBOT_SERVER_TOKEN)")
    sub.add_parser("train", help="train a policy (robot train TASK --help)", add_help=False)
    ev = sub.add_parser("eval", help="evaluate a run's latest checkpoint")
    ev.add_argument("run_dir")
    ev.add_argument("--episodes", type=int, default=50, help="episodes (default: 50)")
    ev.add_argument("--checkpoint", help="a specific checkpoint folder (default: the latest)")
    ev.add_argument("--seed", type=int, default=None, help="episode seed base (default: run seed + 1000)")
    ev.add_argument("--server", metavar="HOST:PORT",
                    help="evaluate on this robot server (default: the run's robot_server; '' for the sim)")
    ev.add_argument("--token-file", metavar="FILE", help="the server's token (default: $ROBOT_SERVER_TOKEN)")
    for name, (_module, help_text) in SUBCOMMAND_MODULES.items():
        sub.add_parser(name, help=f"{help_text} (robot {name} --help)", add_help=False)
    return parser


# Subcommands that live in their own module: `main(argv) -> int` there parses the rest of the line.
# Imported only when used, so `robot tasks` does not pay for transformers or Ray.
SUBCOMMAND_MODULES = {
    "dataset": ("robot.dataset_cli", "inspect, validate, convert, replay and generate datasets"),
    "reward-classifier": ("robot.reward_classifier_cli", "train and evaluate a learned success classifier"),
    "serve": ("robot.serve_cli", "run the robot server (real arm, or --twin TASK)"),
    "doctor": ("robot.doctor_cli", "check serial ports, devices, cameras and loop latency"),
    "planner": ("robot.planner_cli", "language planner: sft, rl, pref, eval"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return cmd_train(argv[1:])
        if argv and argv[0] in SUBCOMMAND_MODULES:
            import importlib

            module = importlib.import_module(SUBCOMMAND_MODULES[argv[0]][0])
            return module.main(argv[1:])
        args = _main_parser().parse_args(argv)
        if args.command is None:
            _main_parser().print_help()
            return 2
        handlers = {"tasks": cmd_tasks, "eval": cmd_eval, "collect-demos": cmd_collect_demos}
        return handlers[args.command](args)
    except (CommandLineError, ConfigError, ValueError, FileNotFoundError) as err:
        err_console.print(f"[red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with 'robot train --resume RUN_DIR'")
        return 130


if __name__ == "__main__":
    sys.exit(main())
