"""A whole "real" session on the digital twin: demos, training with scripted interventions, evaluation.

``robot serve --twin reach`` runs in a child process (MuJoCo arm behind the token-protected TCP API, clock
fast-forwarded so the session fits the test budget); every step below goes through the ``robot`` CLI with
``--server`` / ``--robot_server`` and the token file, and the twin's own counters show that the
transitions came from it. A second part checks that the twin serves the client's task config.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import envs
from data.episode_store import EpisodeStore
from envs.real import make_env
from hardware.server.client import RobotClient
from hardware.server.protocol import ApiError
from robot.cli import main as robot_main
from robot.config import ConfigError
from robot.server.config import robot_config_from_dict
from robot.server.process import ServerProcess

SPEED = 3.0  # simulated seconds per wall-clock second (what a loaded 2-core machine sustains at 1 kHz)


@pytest.fixture(scope="module")
def twin(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("twin") / "robot.token"
    server = ServerProcess(["--twin", "reach", "--speed", str(SPEED)], token_file).start()
    yield server
    assert server.stop() == 0, server.output  # SIGTERM: a clean shutdown
    assert "stopped:" in server.output


def twin_stats(server: ServerProcess) -> dict:
    with RobotClient(server.host, server.port, server.token_file.read_text().strip(), timeout_s=10.0) as client:
        return client.stats()


def test_collect_train_evaluate_with_interventions_on_the_twin(twin, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROBOT_SERVER_TOKEN", raising=False)
    token = twin.token_file.read_text().strip()
    auth = ["--token-file", str(twin.token_file)]
    store = tmp_path / "demos"

    before = twin_stats(twin)
    assert robot_main(["collect-demos", "reach", "-n", "2", "--out", str(store), "--server", twin.address, *auth]) == 0
    with EpisodeStore.open(store) as demos:
        assert len(demos) == 2 and all(demos.metadata(i).success for i in range(2))
        demo_steps = sum(demos.metadata(i).length for i in range(2))
    after_demos = twin_stats(twin)
    assert after_demos["targets"] - before["targets"] >= demo_steps  # every demo step was a target on the twin
    assert after_demos["resets"] - before["resets"] >= 2

    steps = 160
    assert robot_main([
        "train", "reach", "--robot_server", twin.address, "--robot_token_file", str(twin.token_file),
        "--demo_store", str(store), "--total_env_steps", str(steps), "--random_steps", "40",
        "--learning_starts", "40", "--eval_every", "80", "--eval_episodes", "1", "--checkpoint_every",
        str(steps), "--log_every", "100", "--agent.hidden_dims", "32,32", "--agent.num_critics", "2",
        "--agent.batch_size", "32", "--device", "cpu", "--run_root", str(tmp_path / "runs"),
        "--interventions.device", "scripted", "--interventions.schedule", "late",
        "--interventions.explore_steps", "3", "--interventions.takeover_steps", "15",
        "--interventions.until_step", "30",
    ]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    summary = json.loads((run_dir / "eval_summary.json").read_text())
    assert summary["env_steps"] == steps and summary["final_success_rate"] is not None
    # One robot: the mid-run evaluation waited for the training episode to end (the sim's runs at step 80).
    assert [e["step"] >= 80 for e in summary["evals"]] == [True, True] and summary["evals"][-1]["step"] == steps
    assert summary["interventions"] > 0 and summary["takeovers"] >= 1  # the scripted stand-in took over
    after_train = twin_stats(twin)
    assert after_train["targets"] - after_demos["targets"] >= steps + 1  # training and its evaluation: twin steps
    assert after_train["resets"] - after_demos["resets"] >= summary["episodes"] + 1

    config = json.loads((run_dir / "config.json").read_text())
    assert config["robot_server"] == twin.address and config["robot_token_file"] == str(twin.token_file)
    for path in run_dir.rglob("*"):  # the token itself is never written to the run folder...
        assert not path.is_file() or token.encode() not in path.read_bytes(), path

    assert robot_main(["eval", str(run_dir), "--episodes", "1"]) == 0  # on the run's robot server
    (result,) = run_dir.glob("eval_step_*.json")
    assert json.loads(result.read_text())["episodes"] == 1
    assert twin_stats(twin)["targets"] > after_train["targets"]
    assert token not in capsys.readouterr().out  # ...nor printed


def test_twin_serves_the_clients_task_config(twin, monkeypatch):
    monkeypatch.delenv("ROBOT_SERVER_TOKEN", raising=False)
    spec = envs.get_task("reach")
    action = np.array([0.5, 0.3, -0.5], dtype=np.float32)
    rewards = {}
    for dense in (True, False):
        config = spec.config_cls(dense_reward=dense)
        env = make_env("reach", config, twin.address, str(twin.token_file))
        sim = envs.make("reach", config)
        try:
            env.reset(seed=7)
            sim.reset(seed=7)
            obs, reward, *_, info = env.step(action)
            sim_obs, sim_reward, *_ = sim.step(action)
        finally:
            env.close()
            sim.close()
        # The twin scored the step with this client's reward option (dense: a cost from the distance).
        expected = 0.9 * (1.0 - np.tanh(10.0 * info["distance_m"])) - 1.0 if dense else 0.0
        assert reward == pytest.approx(expected, abs=1e-6)
        assert sim_reward == pytest.approx(expected, abs=0.02)  # the sim agrees on the same state
        np.testing.assert_allclose(obs[:3], sim_obs[:3], atol=0.005)  # and the twin arm tracks the sim's
        rewards[dense] = reward
    assert rewards[True] < 0.0 == rewards[False]
    rebuilds = twin_stats(twin)["scene_rebuilds"]
    assert rebuilds >= 2  # dense on, then off again
    # Options that only shape the client's actions and observations keep the served scene.
    env = make_env("reach", spec.config_cls(relative_frame=True, action_scale_m=0.02), twin.address,
                   str(twin.token_file))
    env.reset(seed=0)
    env.close()
    assert twin_stats(twin)["scene_rebuilds"] == rebuilds

    # A config the task refuses, an unknown key, a field the server owns, another task: one clear error each.
    with RobotClient(twin.host, twin.port, twin.token_file.read_text().strip(), timeout_s=10.0) as client:
        with pytest.raises(ApiError, match="success_distance_m"):
            client.reset(0, task="reach", task_config={"success_distance_m": -1.0})
        with pytest.raises(ApiError, match="unknown config key 'grip_force'"):
            client.reset(0, task="reach", task_config={"grip_force": 3.0})
        with pytest.raises(ApiError, match="controller"):
            client.reset(0, task="reach", task_config={"controller": {}})
        with pytest.raises(ApiError, match="serves task 'reach'"):
            client.reset(0, task="pick-cube", task_config={})


def test_bad_server_options_are_one_line_errors(capsys, tmp_path):
    with pytest.raises(ConfigError, match="twin_speed"):
        robot_config_from_dict({"arm": "franka", "robot_ip": "172.16.0.2", "twin_speed": 2.0})
    with pytest.raises(ConfigError, match="twin_speed"):
        robot_config_from_dict({"arm": "twin", "task": "reach", "twin_speed": 50.0})
    assert robot_main(["train", "reach", "--robot_server", "localhost", "--run_root", str(tmp_path)]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert robot_main(["collect-demos", "reach", "-n", "1", "--server", "127.0.0.1:99999"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err


def test_fast_twin_keeps_wall_clock_watchdog_and_reports_its_speed():
    from robot.server.config import RobotServerConfig
    from robot.server.twin import TwinBackend

    backend = TwinBackend(RobotServerConfig(arm="twin", task="reach", twin_speed=4.0).check())
    try:
        # A silent client's pause is wall-clock time: 2 s of it are 8 s on a clock running 4x.
        assert backend.callback.silence.stop_after_s == pytest.approx(4.0 * backend.config.watchdog.stop_after_s)
        assert backend.loop.rate_hz == pytest.approx(4.0 * backend.config.rate_hz)
        assert backend.info()["speed"] == 4.0  # clients divide their waits by it
    finally:
        backend.close()
