"""Simulation speed of every Panda task against raw MuJoCo stepping of the same model, and render speed.

- env, state observations: ``envs.make(task)`` (TimeLimit included) stepped with uniform random actions,
  resets included; each env step = n x (mj_step1 -> Cartesian impedance tick -> mj_step2) plus action
  handling, the task's observation and reward.
- raw mj_step (the limit, the peer): the same model and data, n mj_step calls per env step with the arm
  torques frozen at the gravity-holding values of the reset (the arm stays up, the contacts resemble the
  env's), restored at the same episode rate. The goal is env / raw >= 0.8 for the state tasks.
- The env ticks its controller with the compiled tick (``controllers.native_tick``, the default
  ``compiled_controller=True``); the "Python tick" column is the same env with ``compiled_controller=False``
  (the controller's own Python tick at every physics step), for comparison.
- env, image observations: the same with ``image_obs=True`` (front + wrist, 128 x 128 RGB).
- render: 128 x 128 camera images (update_scene + render) of the pick-cube scene, in frames/s, with the
  OpenGL backend in use (``MUJOCO_GL``), with shadows (the default, reported as ``render_fps``) and without
  (``image_shadows=False``).
- breakdown (pick-cube, Python tick): the substep loop timed part by part (perf_counter_ns around each call adds ~0.1
  us per part), plus the per-env-step remainder (action -> target, observation, reward, wrappers).

Each rate is the best of ``--repeats`` runs, env and raw interleaved (the machine may be shared; best-of
filters out other load).

    python -m benchmarks.sim_speed [--repeats 5]   # writes benchmarks/results/sim_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# envs first: it picks a headless OpenGL backend (MUJOCO_GL), which MuJoCo reads when first imported.
import envs  # noqa: E402, I001
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from envs.rendering import CameraRenderer  # noqa: E402

EPISODE_STEPS = 100
TASKS = ("reach", "pick-cube", "peg-insert", "stack-cubes")


def env_steps_per_s(env, n_steps: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (n_steps, *env.action_space.shape)).astype(np.float32)
    env.reset(seed=seed)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return n_steps / (time.perf_counter() - start)


def raw_steps_per_s(env, n_steps: int, seed: int) -> float:
    """Env-step equivalents per second of bare mj_step on the env's own model and data."""
    inner = env.unwrapped
    m, d, n_sub = inner.model, inner.data, inner.config.n_substeps
    step = mujoco.mj_step
    inner.reset(seed=seed)  # arm at home, torques = gravity hold, objects placed
    kind = mujoco.mjtState.mjSTATE_INTEGRATION
    state = np.empty(mujoco.mj_stateSize(m, kind))
    mujoco.mj_getState(m, d, state, kind)
    start = time.perf_counter()
    for i in range(n_steps):
        if i % EPISODE_STEPS == 0:
            mujoco.mj_setState(m, d, state, kind)
            mujoco.mj_forward(m, d)
        for _ in range(n_sub):
            step(m, d)
    return n_steps / (time.perf_counter() - start)


def breakdown_us(env, n_steps: int, seed: int) -> dict[str, float]:
    """Mean time of each part of an env step [us]: per substep parts and the per-env-step remainder."""
    inner = env.unwrapped
    m, d, n_sub = inner.model, inner.data, inner.config.n_substeps
    compute, arm_ctrl = inner.controller.compute, inner._arm_ctrl
    clock = time.perf_counter_ns
    rng = np.random.default_rng(seed)
    t_step1 = t_ctrl = t_step2 = t_total = 0
    inner.reset(seed=seed)

    def timed_simulate() -> None:
        nonlocal t_step1, t_ctrl, t_step2
        for _ in range(n_sub):
            t0 = clock()
            mujoco.mj_step1(m, d)
            t1 = clock()
            np.copyto(arm_ctrl, compute())
            t2 = clock()
            mujoco.mj_step2(m, d)
            t3 = clock()
            t_step1 += t1 - t0
            t_ctrl += t2 - t1
            t_step2 += t3 - t2

    inner._simulate = timed_simulate  # instance attribute: shadows the method for this env only
    try:
        for i in range(n_steps):
            if i % EPISODE_STEPS == 0:
                env.reset()
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            t0 = clock()
            env.step(action)
            t_total += clock() - t0
    finally:
        del inner._simulate
    n_ticks = n_steps * n_sub
    return {
        "mj_step1_us_per_tick": t_step1 / n_ticks / 1e3,
        "controller_us_per_tick": t_ctrl / n_ticks / 1e3,
        "mj_step2_us_per_tick": t_step2 / n_ticks / 1e3,
        "env_step_overhead_us": (t_total - t_step1 - t_ctrl - t_step2) / n_steps / 1e3,
    }


def render_fps(n_frames: int, repeats: int, shadows: bool = True) -> float:
    """Frames per second of 128 x 128 images of the pick-cube scene, front and wrist alternating (best of
    repeats)."""
    env = envs.make("pick-cube").unwrapped
    env.reset(seed=0)
    renderer = CameraRenderer(env.model, 128, 128, shadows=shadows)
    mujoco.mj_camlight(env.model, env.data)
    renderer.render(env.data, "front")  # first frame: context and buffers
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n_frames):
            renderer.render(env.data, ("front", "wrist")[i % 2])
        best = max(best, n_frames / (time.perf_counter() - start))
    renderer.close()
    env.close()
    return best


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        for row in [header, *rows]:
            print("  ".join(f"{cell:>14s}" for cell in row))
        return
    table = Table(title=title)
    for i, col in enumerate(header):
        table.add_column(col, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500, help="env steps per timed state run")
    parser.add_argument("--image-steps", type=int, default=30, help="env steps per timed image run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is reported")
    args = parser.parse_args()

    rows, per_task = [], {}
    for name in TASKS:
        env = envs.make(name)
        env_steps_per_s(env, 50, seed=0)  # warm up: first-call checks, allocations
        # Interleaved repeats, so that load from other processes hits both sides alike; best of each.
        python_env = envs.make(name, dataclasses.replace(envs.get_task(name).config_cls(), compiled_controller=False))
        env_steps_per_s(python_env, 20, seed=0)
        env_rates, raw_rates, python_rates = [], [], []
        for r in range(args.repeats):
            env_rates.append(env_steps_per_s(env, args.steps, seed=r))
            raw_rates.append(raw_steps_per_s(env, args.steps, seed=r))
            python_rates.append(env_steps_per_s(python_env, args.steps // 2, seed=r))
        image_env = envs.make(name, dataclasses.replace(envs.get_task(name).config_cls(), image_obs=True))
        env_steps_per_s(image_env, 5, seed=0)
        image_rate = max(env_steps_per_s(image_env, args.image_steps, seed=r) for r in range(args.repeats))
        image_env.close()
        env_rate, raw_rate, python_rate = max(env_rates), max(raw_rates), max(python_rates)
        per_task[name] = {
            "env_steps_per_s": round(env_rate, 1),
            "python_tick_env_steps_per_s": round(python_rate, 1),
            "compiled_tick": env.unwrapped._stepper is not None,
            "raw_env_steps_per_s": round(raw_rate, 1),
            "ratio_to_raw_mj_step": round(env_rate / raw_rate, 3),
            "image_env_steps_per_s": round(image_rate, 1),
            "substeps_per_env_step": env.unwrapped.config.n_substeps,
        }
        rows.append([name, f"{env_rate:.0f}", f"{raw_rate:.0f}", f"{env_rate / raw_rate:.2f}",
                     f"{python_rate:.0f} ({python_rate / raw_rate:.2f})", f"{image_rate:.1f}"])

    pick_config = dataclasses.replace(envs.get_task("pick-cube").config_cls(), compiled_controller=False)
    pick = envs.make("pick-cube", pick_config)
    parts = min(
        (breakdown_us(pick, min(args.steps, 300), seed=r) for r in range(args.repeats)),
        key=lambda p: p["controller_us_per_tick"],
    )
    n_sub = pick.unwrapped.config.n_substeps
    raw_us = 1e6 / (per_task["pick-cube"]["raw_env_steps_per_s"] * n_sub)
    fps = render_fps(60, args.repeats)
    fps_no_shadows = render_fps(60, args.repeats, shadows=False)
    min_ratio = min(t["ratio_to_raw_mj_step"] for t in per_task.values())
    backend = os.environ.get("MUJOCO_GL", "glfw")

    print_table(
        "Panda tasks: env steps/s (random actions, resets, TimeLimit) vs raw mj_step (goal ratio >= 0.8)",
        ["task", "state env/s", "raw mj_step/s", "ratio", "Python tick env/s (ratio)", "image env/s"],
        rows,
    )
    print_table(
        "pick-cube step breakdown with the Python tick, and rendering",
        ["measure", "value"],
        [
            ["raw mj_step (us)", f"{raw_us:.1f}"],
            ["env: mj_step1 (us/tick)", f"{parts['mj_step1_us_per_tick']:.1f}"],
            ["env: Python controller tick incl. ctrl copy (us/tick)", f"{parts['controller_us_per_tick']:.1f}"],
            ["env: mj_step2 (us/tick)", f"{parts['mj_step2_us_per_tick']:.1f}"],
            ["env: per-step overhead (action, obs, reward) (us)", f"{parts['env_step_overhead_us']:.0f}"],
            [f"render 128x128 (frames/s, MUJOCO_GL={backend})", f"{fps:.0f}"],
            ["render 128x128 without shadows (frames/s)", f"{fps_no_shadows:.0f}"],
        ],
    )
    path = write_result(
        "sim_speed",
        {
            "ratio_to_raw_mj_step": min_ratio,
            "render_fps": round(fps, 1),
            "min_ratio_task": min(per_task, key=lambda t: per_task[t]["ratio_to_raw_mj_step"]),
            "goal_ratio": 0.8,
        },
        " ".join(["python -m benchmarks.sim_speed", *sys.argv[1:]]),
        tasks=per_task,
        pick_cube_breakdown_us={k: round(v, 2) for k, v in parts.items()},
        raw_mj_step_us=round(raw_us, 2),
        physics_dt_s=pick.unwrapped.config.physics_dt_s,
        render={
            "backend": backend,
            "size": [128, 128],
            "cameras": ["front", "wrist"],
            "fps_with_shadows": round(fps, 1),
            "fps_without_shadows": round(fps_no_shadows, 1),
        },
        mujoco=mujoco.__version__,
        steps_per_run=args.steps,
        image_steps_per_run=args.image_steps,
        repeats=args.repeats,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
