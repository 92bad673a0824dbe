"""Simulation speed of PandaPickCube against raw MuJoCo stepping of the same model.

- env: ``envs.make("pick-cube")`` (TimeLimit included) stepped with uniform random actions, resets
  included (every 100 steps); each env step = 50 x (mj_step1 -> Cartesian impedance tick -> mj_step2)
  plus action handling and the observation.
- raw mj_step (the limit): the same model and data, 50 mj_step calls per env step with the arm torques
  frozen at the gravity-holding values of the reset (so the arm stays up and the contacts resemble the
  env's), resets at the same rate.
- breakdown: the env's substep loop timed part by part (perf_counter_ns around each call adds ~0.1 us
  per part), plus the per-env-step remainder (action -> target, observation, wrappers).

Each rate is the best of ``--repeats`` runs, env and raw interleaved (the machine is shared; best-of
filters out other load).

    python benchmarks/sim_speed.py        # writes benchmarks/results/sim_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time
import timeit
from pathlib import Path

import mujoco
import numpy as np

import envs

RESULT_PATH = Path(__file__).resolve().parent / "results" / "sim_speed.json"
EPISODE_STEPS = 100


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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
    inner.reset(seed=seed)  # arm at home, torques = gravity hold, cube on the table
    state = np.empty(mujoco.mj_stateSize(m, mujoco.mjtState.mjSTATE_INTEGRATION))
    mujoco.mj_getState(m, d, state, mujoco.mjtState.mjSTATE_INTEGRATION)
    start = time.perf_counter()
    for i in range(n_steps):
        if i % EPISODE_STEPS == 0:
            mujoco.mj_setState(m, d, state, mujoco.mjtState.mjSTATE_INTEGRATION)
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
    original = inner._simulate

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

    inner._simulate = timed_simulate
    try:
        for i in range(n_steps):
            if i % EPISODE_STEPS == 0:
                env.reset()
            action = rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)
            t0 = clock()
            env.step(action)
            t_total += clock() - t0
    finally:
        inner._simulate = original
    n_ticks = n_steps * n_sub
    per_step_rest = (t_total - t_step1 - t_ctrl - t_step2) / n_steps
    return {
        "mj_step1_us_per_tick": t_step1 / n_ticks / 1e3,
        "controller_us_per_tick": t_ctrl / n_ticks / 1e3,
        "mj_step2_us_per_tick": t_step2 / n_ticks / 1e3,
        "env_step_overhead_us": per_step_rest / 1e3,
    }


def controller_tick_us(env, n_ticks: int) -> float:
    """One controller tick at a fixed mid-motion state, no physics in between (best of 20 chunks).

    The reference filter has converged after the first chunk, so this is the tick without the filter.
    """
    inner = env.unwrapped
    inner.reset(seed=0)
    inner.step(np.array([0.5, -0.5, 1.0, -1.0] + [0.0] * (inner.action_space.shape[0] - 4), np.float32))
    mujoco.mj_step1(inner.model, inner.data)
    return min(timeit.repeat(inner.controller.compute, number=n_ticks // 20, repeat=20)) / (n_ticks // 20) * 1e6


def print_table(rows: list[tuple[str, str]]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        for name, value in rows:
            print(f"{name:48s} {value}")
        return
    table = Table(title="PandaPickCube simulation speed")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="env steps per timed run")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the best is reported")
    parser.add_argument("--out", type=Path, default=RESULT_PATH, help="JSON result file")
    args = parser.parse_args()

    env = envs.make("pick-cube")
    n_sub = env.unwrapped.config.n_substeps
    env_steps_per_s(env, 100, seed=0)  # warm up: first-call checks, allocations
    # Interleaved repeats, so that load from other processes hits both sides alike; best of each.
    env_rates, raw_rates = [], []
    for r in range(args.repeats):
        env_rates.append(env_steps_per_s(env, args.steps, seed=r))
        raw_rates.append(raw_steps_per_s(env, args.steps, seed=r))
    env_rate, raw_rate = max(env_rates), max(raw_rates)
    parts = min(
        (breakdown_us(env, min(args.steps, 500), seed=r) for r in range(args.repeats)),
        key=lambda p: p["controller_us_per_tick"],
    )
    tick_us = controller_tick_us(env, 40000)
    raw_us = 1e6 / (raw_rate * n_sub)
    ratio = env_rate / raw_rate

    print_table(
        [
            ("env steps/s (random actions, resets, TimeLimit)", f"{env_rate:.0f}"),
            (f"raw mj_step, env-step equivalents/s ({n_sub} steps)", f"{raw_rate:.0f}"),
            ("ratio env / raw (goal >= 0.8)", f"{ratio:.2f}"),
            ("raw mj_step [us]", f"{raw_us:.1f}"),
            ("  env: mj_step1 [us/tick]", f"{parts['mj_step1_us_per_tick']:.1f}"),
            ("  env: controller incl. ctrl copy [us/tick]", f"{parts['controller_us_per_tick']:.1f}"),
            ("  env: mj_step2 [us/tick]", f"{parts['mj_step2_us_per_tick']:.1f}"),
            ("  env: per-step overhead (action, obs) [us]", f"{parts['env_step_overhead_us']:.0f}"),
            ("controller tick alone, fixed state, filter idle [us]", f"{tick_us:.1f}"),
        ]
    )
    result = {
        "summary": {
            "ratio_to_raw_mj_step": round(ratio, 3),
            "env_steps_per_s": round(env_rate, 1),
            "raw_env_steps_per_s": round(raw_rate, 1),
        },
        "command": "python benchmarks/sim_speed.py",
        "machine": cpu_name(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "substeps_per_env_step": n_sub,
        "physics_dt_s": env.unwrapped.config.physics_dt_s,
        "raw_mj_step_us": round(raw_us, 2),
        "breakdown_us": {k: round(v, 2) for k, v in parts.items()},
        "controller_tick_fixed_state_us": round(tick_us, 2),
        "steps_per_run": args.steps,
        "repeats": args.repeats,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(args.out)  # atomic: never a half-written result
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
