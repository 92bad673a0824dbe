"""Planner success after a fixed budget: SFT only, then each RL and each preference method from it.

Per seed: SFT of a new planner (160 steps of 16 plans: deliberately short, so success is partial), then
every method separately from that SFT checkpoint for the same budget (``--steps`` rollout batches of
8 prompts x G = 8 completions, lr 1e-3). Scored on 64 held-out tasks (the same for every run):
greedy success rate, and the success rate of 4 plans sampled per task at temperature 1 (what RL
maximises). The noisy-verifier corrections train against a verifier with 10 % false positives and
20 % false negatives (their reason to exist); every other method gets the exact verifier. Evaluation
is always exact. Default budget: 3 seeds x 19 runs of 20 steps, 7 minutes on a 2-core machine.

``--methods a,b`` reruns only those methods (and the SFT start they need) and replaces their rows in the
stored results, keeping the others; it refuses when the stored run used another number of seeds or
steps, and records in the JSON which rows were rerun and whether the SFT start reproduced.

    python -m benchmarks.planner_algorithms [--seeds 3] [--steps 20] [--methods noisy_backward,noisy_forward]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from benchmarks.common import RESULTS, write_result
from policies.planner.model import save_checkpoint
from policies.planner.trainer import PREF_ALGOS, RL_ALGOS, PlannerConfig, PlannerTrainer

NOISE = {"fp_rate": 0.1, "fn_rate": 0.2}


def _config(seed: int, **kw) -> PlannerConfig:
    cfg = PlannerConfig(seed=seed, train_tasks=500, eval_tasks=64, eval_samples=4, **kw)
    cfg.sft.steps, cfg.sft.batch_size = 160, 16
    cfg.rl.prompts_per_step, cfg.rl.group_size, cfg.rl.lr = 8, 8, 1e-3
    if kw.get("algo", "").startswith("noisy"):
        cfg.verifier.fp_rate, cfg.verifier.fn_rate = NOISE["fp_rate"], NOISE["fn_rate"]
    return cfg


def _scores(result: dict) -> tuple[float, float]:
    return result["eval/success_rate"], result["eval/sampled_success_rate"]


def run_seed(seed: int, steps: int, folder: str, console: Console,
             only: set[str] | None = None) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    sft = PlannerTrainer(_config(seed, command="sft"))
    sft.sft()
    out["sft"] = _scores(sft.evaluate())
    init = os.path.join(folder, f"sft_{seed}")
    save_checkpoint(sft.model, sft.tokenizer, init)
    for command, algos in (("rl", RL_ALGOS), ("pref", PREF_ALGOS)):
        for algo in algos:
            if only is not None and algo not in only:
                continue
            t0 = time.perf_counter()
            trainer = PlannerTrainer(_config(seed, command=command, algo=algo, init=init))
            (trainer.rl if command == "rl" else trainer.pref)(algo, steps)
            out[f"{command}:{algo}"] = _scores(trainer.evaluate())
            console.print(f"seed {seed} {command} {algo}: greedy {out[f'{command}:{algo}'][0]:.2f} "
                          f"sampled {out[f'{command}:{algo}'][1]:.2f} ({time.perf_counter() - t0:.0f} s)")
    return out


def _selected_methods(text: str) -> set[str] | None:
    if not text:
        return None
    chosen = {m.strip() for m in text.split(",") if m.strip()}
    unknown = chosen - set(RL_ALGOS) - set(PREF_ALGOS)
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(sorted(unknown))}; valid: "
                         f"{', '.join([*RL_ALGOS, *PREF_ALGOS])}")
    return chosen


def _stored_run(args: argparse.Namespace) -> dict:
    """The stored full run whose rows a --methods rerun replaces; it must match seeds and steps."""
    path = RESULTS / "planner_algorithms.json"
    if not path.is_file():
        raise SystemExit(f"--methods needs a stored full run at {path}; run without --methods first")
    stored = json.loads(path.read_text())
    config = stored.get("config", {})
    if (config.get("seeds"), config.get("steps")) != (args.seeds, args.steps):
        raise SystemExit(f"--methods: {path} was run with seeds={config.get('seeds')}, steps={config.get('steps')}; "
                         f"rerun with the same (got seeds={args.seeds}, steps={args.steps})")
    return stored


def plot(names: list[str], greedy: np.ndarray, sampled: np.ndarray, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(11, 4), dpi=120)
    for offset, data, label in ((-0.2, greedy, "greedy"), (0.2, sampled, "sampled (T = 1)")):
        ax.bar(x + offset, data.mean(1), 0.4, yerr=data.std(1), capsize=2, label=label)
    ax.axhline(greedy[0].mean(), color="C0", lw=0.8, ls="--")
    ax.axhline(sampled[0].mean(), color="C1", lw=0.8, ls="--")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("held-out success rate")
    ax.set_ylim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"planner success after SFT and a fixed budget per method ({greedy.shape[1]} seeds)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="rollout batches (preference rounds) per method")
    parser.add_argument("--methods", default="", help="comma-separated methods to rerun (default: all); "
                        "their rows replace the stored ones")
    args = parser.parse_args(argv)
    only = _selected_methods(args.methods)
    stored = _stored_run(args) if only is not None else None
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    console = Console()
    t0 = time.perf_counter()
    per_seed = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            per_seed.append(run_seed(seed, args.steps, folder, console, only))
    methods = {n: {"greedy": [s[n][0] for s in per_seed], "sampled": [s[n][1] for s in per_seed]}
               for n in per_seed[0]}
    extra = {}
    if stored is not None:
        extra = {"rerun": sorted(n for n in methods if n != "sft"),
                 "sft_reproduced": methods["sft"] == stored["methods"]["sft"],
                 "base_command": stored.get("base_command", stored["command"]),
                 "base_wall_s": stored.get("base_wall_s", stored.get("wall_s"))}
        if not extra["sft_reproduced"]:
            console.print("[yellow]the SFT start differs from the stored run's; rows are not strictly comparable")
        methods = {n: methods.get(n, row) for n, row in stored["methods"].items()}  # stored order, new rows
    names = list(methods)
    greedy = np.array([methods[n]["greedy"] for n in names])  # (methods, seeds)
    sampled = np.array([methods[n]["sampled"] for n in names])
    table = Table(title=f"planner success, {args.seeds} seeds, {args.steps} steps of 8 x 8 samples per method",
                  title_justify="left")
    for col in ("method", "greedy success", "sampled success", "vs SFT (sampled)"):
        table.add_column(col)
    for i, name in enumerate(names):
        delta = sampled[i].mean() - sampled[0].mean()
        table.add_row(name, f"{greedy[i].mean():.3f} ± {greedy[i].std():.3f}",
                      f"{sampled[i].mean():.3f} ± {sampled[i].std():.3f}", "" if i == 0 else f"{delta:+.3f}")
    console.print(table)
    rl_rows = [i for i, n in enumerate(names) if n.startswith("rl:")]
    best = max(rl_rows, key=lambda i: greedy[i].mean())
    best_sampled = max(rl_rows, key=lambda i: sampled[i].mean())
    png = RESULTS / "planner_algorithms.png"
    png.parent.mkdir(parents=True, exist_ok=True)
    plot(names, greedy, sampled, png)
    wall = time.perf_counter() - t0
    console.print(f"wall time {wall / 60:.1f} min; plot {png}")
    write_result(
        "planner_algorithms",
        {
            "sft_success": round(float(greedy[0].mean()), 3),
            "best_rl_success": round(float(greedy[best].mean()), 3),
            "best_rl_method": names[best],
            "sft_sampled_success": round(float(sampled[0].mean()), 3),
            "best_rl_sampled_success": round(float(sampled[best_sampled].mean()), 3),
            "best_rl_sampled_method": names[best_sampled],
        },
        "python -m benchmarks.planner_algorithms " + " ".join(sys.argv[1:] if argv is None else argv),
        methods=methods, wall_s=round(wall, 1), plot=str(png.relative_to(RESULTS.parent.parent)),
        config=vars(args), **extra,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
