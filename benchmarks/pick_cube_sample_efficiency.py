"""Success rate vs environment steps on PandaPickCube: our learner with 20 demos vs SB3 SAC without demos.

Each (learner, seed) runs in its own process with one torch thread, `--jobs` at a time, and is
evaluated with the same deterministic-policy evaluation (20 fixed episodes) every `--eval_every` steps.
Ours runs the `robot train pick-cube` preset (plus the step budget); SB3 runs SAC("MlpPolicy") with
256-256 networks and its defaults otherwise.

    python -m benchmarks.pick_cube_sample_efficiency [--steps 20000] [--seeds 0 1 2] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def run_ours(seed: int, steps: int, eval_every: int, out: Path) -> None:
    from robot.config import apply_overrides
    from robot.presets import default_config
    from robot.run_dir import create_run_dir, save_config
    from robot.train import Trainer

    config = apply_overrides(default_config("pick-cube"), {
        "seed": seed, "total_env_steps": steps, "eval_every": eval_every, "checkpoint_every": steps,
        "run_root": str(out.parent / "runs"),
    })
    run_dir = create_run_dir(config.run_root, config.task, f"seed{seed}")
    save_config(run_dir, config)
    start = time.perf_counter()
    summary = Trainer(config, run_dir).run()
    curve = [(e["step"], e["eval/success_rate"]) for e in summary["evals"]]
    out.write_text(json.dumps({"curve": curve, "wall_s": time.perf_counter() - start}))


def run_sb3(seed: int, steps: int, eval_every: int, out: Path) -> None:
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    import envs
    from robot.train import evaluate

    class _Policy:  # our evaluate() calls agent.act(obs, deterministic=True)
        def __init__(self, model):
            self.model = model

        def act(self, obs, deterministic=True):
            return self.model.predict(obs, deterministic=deterministic)[0]

    curve: list[tuple[int, float]] = []

    class _Eval(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                result = evaluate(_Policy(self.model), "pick-cube", None, seed, 20)
                curve.append((self.num_timesteps, result["eval/success_rate"]))
            return True

    env = envs.make("pick-cube")
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, policy_kwargs={"net_arch": [256, 256]})
    start = time.perf_counter()
    model.learn(steps, callback=_Eval())
    out.write_text(json.dumps({"curve": curve, "wall_s": time.perf_counter() - start}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--eval_every", type=int, default=2_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=2, help="processes at a time (one torch thread each)")
    parser.add_argument("--worker", nargs=3, metavar=("LEARNER", "SEED", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(1)
        learner, seed, out = args.worker
        (run_ours if learner == "ours" else run_sb3)(int(seed), args.steps, args.eval_every, Path(out))
        return

    from rich.console import Console
    from rich.table import Table

    from benchmarks.common import run_worker_pool, write_result

    work = Path(tempfile.mkdtemp(prefix="pick_cube_bench_"))
    # Ours first: its runs are the long ones, so the short SB3 runs fill the other slot at the end.
    jobs = [(learner, seed) for learner in ("ours", "sb3") for seed in args.seeds]
    results = run_worker_pool("benchmarks.pick_cube_sample_efficiency", jobs,
                              ["--steps", str(args.steps), "--eval_every", str(args.eval_every)], args.jobs, work)

    steps = sorted({s for r in results.values() for s, _ in r["curve"]})
    table = Table(title=f"PandaPickCube eval success vs env steps (mean over seeds {args.seeds})")
    table.add_column("env steps", justify="right")
    for name in ("ours (20 demos)", "SB3 SAC (no demos)"):
        table.add_column(name, justify="right")
    means: dict[str, dict[int, float]] = {"ours": {}, "sb3": {}}
    for learner in means:
        for step in steps:
            values = [dict(map(tuple, results[(learner, s)]["curve"])).get(step) for s in args.seeds]
            values = [v for v in values if v is not None]
            if values:
                means[learner][step] = float(np.mean(values))
    for step in steps:
        table.add_row(str(step), *(f"{means[k].get(step, float('nan')):.0%}" for k in means))
    Console().print(table)
    if args.steps != 20_000:
        return  # the results file records the goal's budget only
    summary = {"success_at_20k": means["ours"].get(20_000), "sb3_success_at_20k": means["sb3"].get(20_000)}
    path = write_result(
        "pick_cube_sample_efficiency", summary,
        "python -m benchmarks.pick_cube_sample_efficiency " + " ".join(sys.argv[1:]),
        curves={f"{k[0]}_seed{k[1]}": v["curve"] for k, v in results.items()},
        wall_s={f"{k[0]}_seed{k[1]}": v["wall_s"] for k, v in results.items()},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
