"""The real-robot env: identical spaces and wrappers to the sim tasks, and whole episodes on the twin server.

The end-to-end test starts ``robot serve --twin TASK`` in a subprocess (1 kHz real-time MuJoCo arm, the
Franka torque callback, the TCP API) and runs scripted-expert episodes through ``envs.real``.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import envs
from envs.real import RealRobotConnection, make_real, panda_task_names

ROOT = Path(__file__).resolve().parents[2]


def wrapper_chain(env) -> list[str]:
    chain = []
    while hasattr(env, "env"):
        chain.append(type(env).__name__)
        env = env.env
    return chain


@pytest.mark.parametrize("task", panda_task_names())
@pytest.mark.parametrize("options", [{}, {"relative_frame": True, "rotation": True},
                                     {"image_obs": True, "cameras": ("wrist",), "image_size": (64, 96)}])
def test_spaces_and_wrappers_equal_the_sim_task(task, options):
    config = dataclasses.replace(envs.get_task(task).config_cls(), **options)
    sim, real = envs.make(task, config), make_real(task, config)
    try:
        assert real.observation_space == sim.observation_space
        assert real.action_space == sim.action_space
        assert real.action_space.dtype == sim.action_space.dtype == np.float32
        assert wrapper_chain(real) == wrapper_chain(sim)
        assert real.spec.max_episode_steps == sim.spec.max_episode_steps
    finally:
        sim.close()
        real.close()


def test_non_panda_task_is_refused():
    with pytest.raises(ValueError, match="not a Panda task"):
        make_real("hopper")


def test_missing_token_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("ROBOT_SERVER_TOKEN", raising=False)
    with pytest.raises(ValueError, match="ROBOT_SERVER_TOKEN"):
        RealRobotConnection().resolved_token()


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    """``robot serve --twin TASK`` subprocesses, started on demand: task -> RealRobotConnection."""
    started: dict[str, tuple[subprocess.Popen, RealRobotConnection]] = {}
    folder = tmp_path_factory.mktemp("twin")

    def start(task: str) -> RealRobotConnection:
        if task in started:
            return started[task][1]
        token_file = folder / f"{task}.token"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop("ROBOT_SERVER_TOKEN", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "robot", "serve", "--twin", task, "--port", "0", "--token-file", str(token_file),
             "--duration", "120"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 60
        port = None
        lines = []
        while port is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("listening "):
                port = int(line.split()[2])
        if port is None:
            proc.kill()
            pytest.fail("twin server did not start:\n" + "".join(lines))
        connection = RealRobotConnection(port=port, token=token_file.read_text().strip())
        started[task] = (proc, connection)
        return connection

    yield start
    for proc, _ in started.values():
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def run_episodes(env, expert, seeds):
    results = []
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        expert.reset()
        total, steps, success = 0.0, 0, False
        while True:
            obs, reward, terminated, truncated, info = env.step(expert(obs, info))
            assert env.observation_space.contains(obs)
            total += reward
            steps += 1
            if terminated or truncated:
                success = bool(info["is_success"])
                break
        results.append((success, total, steps, info))
    return results


def test_twin_reach_episodes_end_to_end(twin):
    connection = twin("reach")
    config = envs.get_task("reach").config_cls(relative_frame=True)
    env = make_real("reach", config, connection)
    expert = envs.make_expert("reach", noise_std=0.0, seed=0, config=config)
    try:
        results = run_episodes(env, expert, seeds=[3, 4])
        for success, total, steps, info in results:
            assert success and total == 1.0 and steps < 50, results
            assert info["watchdog"] in ("ok", "hold")
        # The seed reached the twin: the target of seed 3 is the sim's target of seed 3.
        obs, info = env.reset(seed=3)
        sim = envs.make("reach", config)
        _, sim_info = sim.reset(seed=3)
        np.testing.assert_allclose(info["state"][14:17], sim_info["state"][14:17], atol=1e-6)
        sim.close()
    finally:
        env.close()


def test_twin_pick_cube_with_gripper_end_to_end(twin):
    connection = twin("pick-cube")
    env = make_real("pick-cube", connection=connection)
    expert = envs.make_expert("pick-cube", noise_std=0.0, seed=0)
    try:
        ((success, total, steps, info),) = run_episodes(env, expert, seeds=[0])
        assert success and total == 1.0, (steps, info)
        assert env.unwrapped.client.state()["gripper_closed"]
    finally:
        env.close()


def test_twin_image_observations_match_the_space(twin):
    from envs.rendering import can_render

    ok, why = can_render()
    if not ok:
        pytest.skip(why)
    config = envs.get_task("reach").config_cls(image_obs=True, cameras=("front", "wrist"), image_size=(32, 48))
    env = make_real("reach", config, twin("reach"))
    try:
        obs, info = env.reset(seed=5)
        obs, *_ = env.step(np.zeros(3, dtype=np.float32))
        assert env.observation_space.contains(obs)
        assert obs["wrist"].std() > 1.0 and not np.array_equal(obs["front"], obs["wrist"])
        assert len(info["state"]) == 20  # the twin's world-frame task state, for experts
    finally:
        env.close()
