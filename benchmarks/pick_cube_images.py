"""PandaPickCube from pixels: eval success vs env steps of the image agent with 20 demos, and the state
agent with the same budget, demos and hyperparameters as the peer.

Both run `robot train pick-cube` (the preset, 20 noisy scripted demos) through `Trainer`; the image run
adds `--env.image_obs true` with the front and wrist cameras at 128x128 (shadows off: 3-4x cheaper to
render with software OpenGL) and the default image agent (small conv encoder per camera, spatial
embeddings, DrQ shifts). The budget is env steps; on a CPU only a few hundred fit in ~8 minutes
(about 3-10 s per image update on a loaded 2-core machine), so the CPU result is a smoke-level
number, not a learning curve: run it with `--steps 20000 --utd 4 --batch 256` on a GPU for that.

    python -m benchmarks.pick_cube_images [--steps 150] [--eval_every 150] [--batch 32] [--utd 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def run(image: bool, args: argparse.Namespace, root: Path) -> dict:
    from robot.config import apply_overrides
    from robot.presets import default_config
    from robot.run_dir import create_run_dir, save_config
    from robot.train import Trainer

    overrides = {
        "seed": args.seed, "total_env_steps": args.steps, "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes, "checkpoint_every": args.steps, "log_every": min(50, args.steps),
        "learning_starts": args.learning_starts, "num_demos": 20, "agent.batch_size": args.batch,
        "agent.utd_ratio": args.utd, "device": args.device, "run_root": str(root), "agent.compile": args.compile,
        "max_wall_minutes": args.max_minutes if image else args.peer_max_minutes,
    }
    if image:
        overrides |= {"env.image_obs": "true", "env.cameras": "front,wrist", "env.image_size": "128,128",
                      "env.image_shadows": "false"}
    config = apply_overrides(default_config("pick-cube"), overrides)
    run_dir = create_run_dir(config.run_root, config.task, "pixels" if image else "state")
    save_config(run_dir, config)
    start = time.perf_counter()
    trainer = Trainer(config, run_dir)
    summary = trainer.run()
    return {"curve": [(e["step"], e["eval/success_rate"]) for e in summary["evals"]],
            "wall_s": time.perf_counter() - start, "device": str(trainer.device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="env steps per run (default: 150, ~8 min on CPU)")
    parser.add_argument("--eval_every", type=int, default=150)
    parser.add_argument("--eval_episodes", type=int, default=5)
    parser.add_argument("--learning_starts", type=int, default=50)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--utd", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--compile", default="none", help="none | compile | cuda-graph (the agent's update)")
    parser.add_argument("--max_minutes", type=float, default=0.0,
                        help="wall-clock cap of the pixel run (0: none); the state peer then gets the steps it reached")
    parser.add_argument("--peer_max_minutes", type=float, default=0.0, help="wall-clock cap of the state peer")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from benchmarks.common import write_result

    root = Path(tempfile.mkdtemp(prefix="pick_cube_images_"))
    results = {"pixels": run(True, args, root)}
    reached = results["pixels"]["curve"][-1][0] if results["pixels"]["curve"] else args.steps
    results["state"] = run(False, argparse.Namespace(**{**vars(args), "steps": reached}), root)
    table = Table(title=f"PandaPickCube eval success vs env steps, 20 demos, seed {args.seed}, "
                        f"batch {args.batch}, UTD {args.utd}, device {results['pixels']['device']}")
    for col in ("env steps", "pixels (2 cameras 128x128)", "state (peer)"):
        table.add_column(col, justify="right")
    curves = {k: dict(v["curve"]) for k, v in results.items()}
    for step in sorted(curves["pixels"]):
        table.add_row(str(step), f"{curves['pixels'][step]:.0%}", f"{curves['state'].get(step, float('nan')):.0%}")
    table.add_row("wall time", *(f"{results[k]['wall_s'] / 60:.1f} min" for k in ("pixels", "state")))
    Console().print(table)
    final = max(curves["pixels"])
    summary = {"success_at_budget": curves["pixels"][final], "budget_env_steps": final,
               "device": results["pixels"]["device"], "state_success_at_budget": curves["state"].get(final)}
    state_last = max(curves["state"])  # the peer's own cap may stop it short of the pixel run's steps
    summary |= {"state_last_env_steps": state_last, "state_success_last": curves["state"][state_last]}
    path = write_result("pick_cube_images", summary, "python -m benchmarks.pick_cube_images " + " ".join(sys.argv[1:]),
                        curves={k: v["curve"] for k, v in results.items()},
                        wall_s={k: v["wall_s"] for k, v in results.items()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
