"""Peg insertion: eval success vs env steps with and without scripted interventions (same seeds, same budget).

The scripted expert (`envs.make_expert("peg-insert")`) plays the person with the default 'corrective'
schedule (`robot.interventions`): it steps in only when the policy made no progress toward the goal for 10
steps or drifted 3 cm away from its best, and then (with a chance of 1/2 at the start of training, halving
every 5 000 env steps) guides the episode to its end, once per episode, so the policy also lives through
its own failures and the intervention rate falls over training without a hard stop. Intervention
transitions go to the online and the demo buffer. Both arms use the same small SAC/RLPD config, env
settings, scripted demos and seeds; evaluation is the deterministic policy without any intervention, 20
fixed episodes. Each (arm, seed) runs in its own process with one torch thread, `--jobs`
at a time. `--set interventions.KEY=VALUE` changes the schedule of the "with" arm (exploration only; the
recorded result uses the defaults). The recorded result (BENCHMARKS.md):

    python -m benchmarks.interventions --steps 20000 --eval_every 2500 --seeds 0 1 2 3 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARMS = ("without", "with")


def overrides(arm: str, seed: int, steps: int, eval_every: int, run_root: Path, schedule: dict | None = None) -> dict:
    """The run config of one arm: identical except for the intervention device (and its schedule)."""
    return {
        "seed": seed, "total_env_steps": steps, "eval_every": eval_every, "eval_episodes": 20,
        "checkpoint_every": steps, "log_every": 500, "learning_starts": 200, "random_steps": 0,
        "num_demos": 5, "agent.hidden_dims": "128,128", "agent.batch_size": 128, "agent.num_critics": 2,
        "agent.utd_ratio": 2, "agent.discount": 0.96,
        # SERL's real peg board is fixed; the hole here moves +-1 cm between episodes. HIL-SERL's 1 cm per
        # action unit (the task default is SERL's 2 cm): the scripted expert then succeeds far more often.
        "env.board_xy_half_range_m": "0.01,0.01", "env.action_scale_m": 0.01,
        "interventions.device": "scripted" if arm == "with" else "none",
        **(schedule if arm == "with" else {}),
        "run_root": str(run_root),
    }


def run_arm(arm: str, seed: int, steps: int, eval_every: int, out: Path, schedule: dict) -> None:
    from robot.config import apply_overrides
    from robot.core.metrics import read_metrics
    from robot.presets import default_config
    from robot.run_dir import create_run_dir, save_config
    from robot.train import Trainer

    run_root = out.parent / "runs"
    config = apply_overrides(default_config("peg-insert"), overrides(arm, seed, steps, eval_every, run_root, schedule))
    run_dir = create_run_dir(config.run_root, config.task, f"{arm}-seed{seed}")
    save_config(run_dir, config)
    start = time.perf_counter()
    trainer = Trainer(config, run_dir)
    summary = trainer.run()
    rows = read_metrics(run_dir)
    out.write_text(json.dumps({
        "curve": [(e["step"], e["eval/success_rate"]) for e in summary["evals"]],
        "wall_s": time.perf_counter() - start,
        "interventions": summary.get("interventions", 0), "takeovers": summary.get("takeovers", 0),
        "train_success": [(r["step"], r["train/success_rate"]) for r in rows if "train/success_rate" in r],
        "intervention_rate": intervention_rate(rows, eval_every),
        "final_error_mm": final_tip_error_mm(trainer.agent, config, seed),
    }))


def intervention_rate(rows: list[dict], window: int) -> list[tuple[int, float]]:
    """Share of env steps executed by the person in each `window` of steps, from the cumulative
    `train/interventions` counts in metrics.jsonl: [(window end step, share)]."""
    counts = {int(r["step"]): r["train/interventions"] for r in rows if "train/interventions" in r}
    ends = [s for s in sorted(counts) if s % window == 0]
    return [(end, (counts[end] - counts.get(end - window, 0.0)) / window) for end in ends]


def parse_schedule(items: list[str]) -> dict:
    """`interventions.KEY=VALUE` strings -> config overrides; anything else is refused."""
    schedule = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("interventions.") or key == "interventions.device":
            raise SystemExit(f"--set {item!r}: expected interventions.KEY=VALUE (a schedule setting)")
        schedule[key] = value
    return schedule


def final_tip_error_mm(agent, config, seed: int, episodes: int = 20) -> float:
    """Mean distance [mm] from the peg tip to the insertion goal (insert_depth_m below the hole's mouth) at the
    end of the deterministic policy's eval episodes: a continuous measure of how close it gets."""
    import envs
    from robot.demos import episode_seed, run_episode
    from robot.interventions import peg_goal_distance

    env = envs.make(config.task, config.env)
    errors = []
    for i in range(episodes):
        ep = run_episode(env, lambda o, _i: agent.act(o, deterministic=True), episode_seed(seed, 2, i))
        last = ep.next_obs[-1].astype(np.float64)
        errors.append(0.0 if ep.success else 1000.0 * peg_goal_distance(last, config.env))
    env.close()
    return float(np.mean(errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--eval_every", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (one torch thread each)")
    parser.add_argument("--set", nargs="*", default=[], metavar="interventions.KEY=VALUE",
                        help="schedule settings of the 'with' arm (default: the corrective defaults)")
    parser.add_argument("--worker", nargs=3, metavar=("ARM", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    schedule = parse_schedule(args.set)
    if args.worker:
        import torch

        torch.set_num_threads(1)
        arm, seed, out = args.worker
        run_arm(arm, int(seed), args.steps, args.eval_every, Path(out), schedule)
        return

    from rich.console import Console
    from rich.table import Table

    from benchmarks.common import run_worker_pool, write_result

    work = Path(tempfile.mkdtemp(prefix="interventions_bench_"))
    jobs = [(arm, seed) for seed in args.seeds for arm in ARMS]
    worker_args = ["--steps", str(args.steps), "--eval_every", str(args.eval_every), "--set", *args.set]
    start = time.perf_counter()
    results = run_worker_pool("benchmarks.interventions", jobs, worker_args, args.jobs, work)
    wall = time.perf_counter() - start

    steps = sorted({s for r in results.values() for s, _ in r["curve"]})
    means: dict[str, dict[int, float]] = {arm: {} for arm in ARMS}
    for arm in ARMS:
        for step in steps:
            values = [dict(map(tuple, results[(arm, s)]["curve"])).get(step) for s in args.seeds]
            means[arm][step] = float(np.mean([v for v in values if v is not None]))
    table = Table(title=f"peg-insert eval success vs env steps (mean over seeds {args.seeds})")
    table.add_column("env steps", justify="right")
    table.add_column("without interventions (per seed)", justify="right")
    table.add_column("with scripted interventions (per seed)", justify="right")
    table.add_column("intervention share of the window's steps", justify="right")
    rates = {s: dict(map(tuple, results[("with", s)]["intervention_rate"])) for s in args.seeds}
    rate_means = {step: float(np.mean([rates[s].get(step, np.nan) for s in args.seeds])) for step in steps}

    def cell(arm: str, step: int) -> str:
        per_seed = " / ".join(f"{dict(map(tuple, results[(arm, s)]['curve'])).get(step, np.nan):.0%}"
                              for s in args.seeds)
        return f"{means[arm][step]:.0%} ({per_seed})"

    for step in steps:
        table.add_row(str(step), cell("without", step), cell("with", step), f"{rate_means[step]:.1%}")
    error = {arm: float(np.mean([results[(arm, s)]["final_error_mm"] for s in args.seeds])) for arm in ARMS}
    table.add_row("final tip error [mm]", f"{error['without']:.1f}", f"{error['with']:.1f}", "")
    human = [results[("with", s)]["interventions"] for s in args.seeds]
    takeovers = [results[("with", s)]["takeovers"] for s in args.seeds]
    Console().print(table)
    final = steps[-1]
    summary = {
        "success_with": means["with"][final], "success_without": means["without"][final],
        "best_with": max(means["with"].values()), "best_without": max(means["without"].values()),
        # Eval success averaged over every eval point: less noisy than one 20-episode eval at the end.
        "mean_over_evals_with": float(np.mean(list(means["with"].values()))),
        "mean_over_evals_without": float(np.mean(list(means["without"].values()))),
        "env_steps": args.steps, "seeds": args.seeds,
        "intervention_steps_mean": float(np.mean(human)), "takeovers_mean": float(np.mean(takeovers)),
        "final_tip_error_mm_with": error["with"], "final_tip_error_mm_without": error["without"],
        "success_with_per_seed": [results[("with", s)]["curve"][-1][1] for s in args.seeds],
        "success_without_per_seed": [results[("without", s)]["curve"][-1][1] for s in args.seeds],
        "intervention_rate_mean": [(step, rate_means[step]) for step in steps],
        "schedule": schedule or "corrective defaults",
    }
    Console().print(f"final success with {summary['success_with']:.0%} vs without {summary['success_without']:.0%}; "
                    f"{summary['intervention_steps_mean']:.0f} intervention steps in "
                    f"{summary['takeovers_mean']:.0f} takeovers per run; wall {wall / 60:.1f} min")
    path = write_result(
        "interventions", summary, "python -m benchmarks.interventions " + " ".join(sys.argv[1:]),
        curves={f"{k[0]}_seed{k[1]}": v["curve"] for k, v in results.items()},
        wall_s={f"{k[0]}_seed{k[1]}": v["wall_s"] for k, v in results.items()}, total_wall_s=wall,
        train_success={f"{k[0]}_seed{k[1]}": v["train_success"] for k, v in results.items()},
        intervention_rate={f"with_seed{s}": results[("with", s)]["intervention_rate"] for s in args.seeds},
    )
    print(f"wrote {path}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
