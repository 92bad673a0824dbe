"""Async runtime: wire format, learner ingest, stale-weight refusal, transport hardening, kill -9 of each side."""

import json
import os
import signal
import subprocess
import threading
import time
from multiprocessing.connection import AuthenticationError, Client
from pathlib import Path

import numpy as np
import pytest

from data.episode_store import EpisodeStore
from robot.config import apply_overrides
from robot.core.metrics import read_metrics
from robot.presets import default_config
from robot.run_dir import create_run_dir, save_config
from robot.runtime.actor import ActorCore, actor_dir
from robot.runtime.learner import EpisodeOrderError, LearnerCore, acting_state, summary_path
from robot.runtime.local import LearnerServer, recv, run_secret, serve_learner, spawn
from robot.runtime.wire import WireError, decode, encode, weights_to_bytes

TINY = {
    "total_env_steps": 400, "learning_starts": 100, "random_steps": 50, "checkpoint_every": 150, "log_every": 100,
    "num_demos": 0, "agent.hidden_dims": "16,16", "agent.batch_size": 16, "agent.num_critics": 2,
    "runtime.publish_every": 10, "runtime.heartbeat_s": 0.2, "runtime.peer_timeout_s": 2.0,
    "interventions.device": "scripted", "interventions.schedule": "late", "interventions.explore_steps": 20,
    "interventions.takeover_steps": 10,
}


def tiny_config(root: Path, **extra):
    return apply_overrides(default_config("reach"), {**TINY, "run_root": str(root), **extra})


def new_run(root: Path, **extra) -> tuple:
    config = tiny_config(root, **extra)
    run_dir = create_run_dir(config.run_root, config.task)
    save_config(run_dir, config)
    return config, run_dir


def episode(n: int, obs_dim: int = 20, human: slice = slice(0, 0), truncated_end: bool = True) -> dict:
    """An episode message: T + 1 observations (row t holds t + 0.5 in every column), T steps."""
    obs = np.repeat(np.arange(n + 1, dtype=np.float32)[:, None] + 0.5, obs_dim, axis=1)
    intervention = np.zeros(n, bool)
    intervention[human] = True
    end = np.eye(n)[-1] > 0
    return {"obs/state": obs, "action": np.full((n, 3), 0.25, np.float32), "reward": np.ones(n, np.float32),
            "terminated": np.zeros(n, bool) if truncated_end else end, "truncated": end if truncated_end else ~end,
            "intervention": intervention}


def store_totals(path: Path) -> tuple[int, int]:
    """(transitions, intervention transitions) committed in an actor's episode store."""
    with EpisodeStore.open(path) as store:
        t = store.load_transitions()
        return len(t), int(t.intervention.sum())


# ---------------------------------------------------------------------------------------------
def test_wire_round_trips_arrays_and_rejects_malformed_or_pickled_frames():
    arrays = {"obs": np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32), "done": np.eye(5, dtype=bool)[0]}
    msg = decode(encode("episode", {"index": 3}, arrays, blob=b"xyz"))
    assert msg.kind == "episode" and msg.meta == {"index": 3} and msg.blob == b"xyz"
    assert all(np.array_equal(msg.arrays[k], v) and msg.arrays[k].dtype == v.dtype for k, v in arrays.items())
    import pickle

    frame = encode("episode", {}, {"obs": np.zeros(4, np.float32)})
    bad = {
        "pickle": pickle.dumps({"kind": "episode"}),
        "truncated": frame[:-3],
        "trailing": frame + b"\0",
        "object dtype": frame.replace(b'"<f4"', b'"|O8"'),
        "header length": frame[:4] + (2**31).to_bytes(4, "little") + frame[8:],
    }
    for data in bad.values():
        with pytest.raises(WireError):
            decode(data)
    with pytest.raises(WireError, match="dtype object"):
        encode("episode", {}, {"x": np.array([object()])})


def test_learner_routes_interventions_ignores_resends_refuses_gaps_bounds_utd_and_resumes(tmp_path):
    config, run_dir = new_run(tmp_path, learning_starts=10)
    core = LearnerCore(config, run_dir, log=lambda _m: None)
    assert core.ingest("a", 0, episode(30, human=slice(5, 12)))
    assert not core.ingest("a", 0, episode(30, human=slice(5, 12)))  # resent after a reconnect: ignored
    with pytest.raises(EpisodeOrderError, match="expected 1"):
        core.ingest("a", 2, episode(10))
    assert core.ingest("b", 0, episode(10, truncated_end=False))
    assert (len(core.online), len(core.demos), core.received) == (40, 7, {"a": 1, "b": 1})
    assert (core.interventions, core.takeovers) == (7, 1)
    assert core.online.terminated[:30].sum() == 0 and core.online.terminated[39] == 1  # time-outs stay non-terminal
    # Fixed update-to-data: one update per received env step after learning_starts, never more.
    while core.train_step() is not None:
        pass
    assert core.updates == 40 - 10 + 1 == core.allowed_updates()
    with pytest.raises(ValueError, match="missing arrays"):
        core.ingest("c", 0, {"obs/state": np.zeros((2, 20), np.float32)})
    bad = episode(5)
    bad["obs/state"] = bad["obs/state"][:-1]  # T rows instead of T + 1
    with pytest.raises(ValueError, match="one more row than steps"):
        core.ingest("c", 0, bad)
    core.checkpoint()
    alpha = float(core.agent.log_alpha.detach())
    again = LearnerCore(config, run_dir, log=lambda _m: None)  # a restarted learner
    assert again.incarnation != core.incarnation
    assert (again.received, again.updates, len(again.online), len(again.demos)) == ({"a": 1, "b": 1}, 31, 40, 7)
    assert float(again.agent.log_alpha.detach()) == alpha != np.log(config.agent.init_temperature)  # temperature kept
    assert again.resume_from("a") == 1 and again.resume_from("new") == 0


def test_ingest_while_training_never_yields_a_torn_transition(tmp_path):
    """LeRobot #3372 (buffer race): ingest threads and the training thread share the buffers under one lock."""
    config, run_dir = new_run(tmp_path, learning_starts=1, replay_capacity=64)
    core = LearnerCore(config, run_dir, log=lambda _m: None)
    torn: list[int] = []

    def check(block):  # stands in for the SAC update: every row must be one whole transition
        torn.append(int((~np.isclose(block["next_obs"] - block["obs"], 1.0)).any(axis=1).sum()))
        return {}

    core.agent.update = check
    feeder = threading.Thread(target=lambda: [core.ingest("a", i, episode(10, human=slice(0, 2))) for i in range(300)])
    core.ingest("a", 0, episode(10))
    feeder.start()
    while feeder.is_alive() or core.train_step() is not None:
        core.train_step()
    feeder.join()
    assert len(torn) > 100 and sum(torn) == 0


def test_actor_holds_on_stale_missing_or_foreign_weights_and_says_so(tmp_path):
    config, run_dir = new_run(tmp_path, random_steps=0, **{"runtime.max_weight_lag": 100})
    now = [0.0]
    messages: list[str] = []
    actor = ActorCore(config, run_dir, "actor-0", log=messages.append, clock=lambda: now[0])
    weights = weights_to_bytes(acting_state(actor.agent))
    try:
        assert actor.step() is None and actor.env_steps == 0 and "no connection" in messages[-1]
        actor.heard_from_learner("L1", 0)
        actor.step()
        assert actor.env_steps == 0 and "no weights" in messages[-1]
        actor.load_weights("L1", 0, weights)
        for _ in range(3):
            actor.step()
        assert actor.env_steps == 3 and "resuming" in messages[-1]
        actor.heard_from_learner("L1", 101)  # the learner moved on; these weights are 101 updates old
        for _ in range(3):
            actor.step()
        assert actor.env_steps == 3 and "101 updates behind the learner (max lag 100)" in messages[-1]
        actor.load_weights("L1", 100, weights)
        actor.step()
        assert actor.env_steps == 4
        actor.heard_from_learner("L2", 0)  # the learner restarted: weights of the old one are not trusted
        actor.step()
        assert actor.env_steps == 4 and "restarted" in messages[-1]
        actor.load_weights("L2", 0, weights)
        now[0] += config.runtime.peer_timeout_s + 1  # then it goes silent
        actor.step()
        assert actor.env_steps == 4 and "no heartbeat from the learner" in messages[-1]
        assert actor.holds == 3
    finally:
        actor.close()


def test_server_refuses_wrong_key_and_garbage_keeps_serving_and_leaks_no_descriptors(tmp_path):
    config, run_dir = new_run(tmp_path)
    core = LearnerCore(config, run_dir, log=lambda _m: None)
    log: list[str] = []
    server = LearnerServer(core, "127.0.0.1", 0, run_secret(run_dir), log.append)
    key = run_secret(run_dir)
    try:
        with pytest.raises(AuthenticationError):
            Client(server.address, authkey=b"wrong")
        import pickle

        conn = Client(server.address, authkey=key)
        conn.send_bytes(pickle.dumps({"kind": "hello", "actor_id": "evil"}))  # never unpickled
        with pytest.raises(EOFError):
            while True:
                conn.recv_bytes()
        conn.close()
        fds = len(os.listdir("/proc/self/fd"))
        for i in range(30):  # many reconnects (serl #69: "Too many open files")
            conn = Client(server.address, authkey=key)
            conn.send_bytes(encode("hello", {"actor_id": f"x{i}", "fingerprint": core.fingerprint}))
            assert recv(conn, 5.0).kind == "welcome"
            conn.close()
        deadline = time.monotonic() + 5
        while server.actors and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(os.listdir("/proc/self/fd")) <= fds + 2
        conn = Client(server.address, authkey=key)
        conn.send_bytes(encode("hello", {"actor_id": "other", "fingerprint": "0" * 16}))
        assert recv(conn, 5.0).kind == "error"
        conn.close()
        assert any("refused a connection" in m for m in log) and any("frame does not start" in m for m in log)
    finally:
        server.close()


def test_learner_without_actors_says_so_and_gives_up_when_told(tmp_path):
    config, run_dir = new_run(tmp_path, **{"runtime.actor_wait_timeout_s": 1.0})
    with pytest.raises(TimeoutError, match="no actor connected"):
        serve_learner(config, run_dir, log=lambda _m: None)


# ---------------------------------------------------------------------------------------------
def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _committed(path: Path) -> int:
    try:
        return len([p for p in os.listdir(path / "episodes") if p.isdigit()])
    except FileNotFoundError:
        return 0


def _log(run_dir: Path, name: str) -> str:
    path = run_dir / "logs" / f"{name}.log"
    return path.read_text() if path.exists() else ""


def test_two_processes_survive_kill_9_of_learner_and_of_actor_without_losing_a_committed_transition(tmp_path):
    config, run_dir = new_run(tmp_path, total_env_steps=1000, checkpoint_every=150)
    store = actor_dir(run_dir, "actor-0") / "episodes"
    learner = spawn("learner", run_dir)
    actor = spawn("actor", run_dir, "--id", "actor-0")
    children = [learner, actor]
    try:
        # 1. kill -9 the learner once it has checkpointed; the actor must hold and say so, then resume.
        _wait(lambda: list((run_dir / "checkpoints").glob("step_*")), 60, "a learner checkpoint")
        learner.send_signal(signal.SIGKILL)
        learner.wait()
        _wait(lambda: "holding the robot: learner unreachable" in _log(run_dir, "actor-actor-0").partition(
            "lost the learner")[2], 10, "the actor to notice and hold")
        held_at = _committed(store)
        time.sleep(1.0)
        assert _committed(store) == held_at  # holding: no episode advances while the learner is gone
        learner = spawn("learner", run_dir)
        children.append(learner)
        _wait(lambda: _log(run_dir, "learner").count("resumed from"), 30, "the learner to resume")
        # 2. kill -9 the actor mid-run; the learner keeps going and takes the restarted actor back.
        _wait(lambda: _committed(store) >= held_at + 3, 60, "the actor to resume after the learner restart")
        actor.send_signal(signal.SIGKILL)
        actor.wait()
        actor = spawn("actor", run_dir, "--id", "actor-0")
        children.append(actor)
        assert learner.wait(timeout=90) == 0
        assert actor.wait(timeout=30) == 0
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    summary = json.loads(summary_path(run_dir).read_text())
    transitions, human = store_totals(store)
    # No committed transition lost: the learner holds exactly what the actor's store committed, in both buffers.
    assert summary["online_size"] == summary["env_steps"] == transitions >= 1000
    assert summary["demo_size"] == summary["interventions"] == human > 0
    assert summary["episodes"] == {"actor-0": _committed(store)}
    learner_log, actor_log = _log(run_dir, "learner"), _log(run_dir, "actor-actor-0")
    assert "lost the learner" in actor_log and actor_log.count("connected to learner") >= 3
    assert "actor actor-0 disconnected" in learner_log
    assert "resumed from step_" in learner_log


def test_launcher_runs_learner_and_actors_as_processes_and_leaves_no_child(tmp_path):
    from robot.runtime.local import launch

    config, run_dir = new_run(tmp_path, total_env_steps=200, learning_starts=50, **{"runtime.num_actors": 2})
    summary = launch(config, run_dir, timeout_s=120)
    assert summary["env_steps"] >= 200 and set(summary["episodes"]) == {"actor-0", "actor-1"}
    assert summary["updates"] == summary["env_steps"] - config.learning_starts + 1
    rows = [r for r in read_metrics(run_dir) if "train/interventions" in r]
    assert rows and rows[-1]["train/interventions"] > 0 and rows[-1]["train/takeovers"] > 0
    out = subprocess.run(["pgrep", "-f", f"robot.runtime.local .* {run_dir}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


def test_in_process_trainer_refuses_another_runtime_and_names_the_command(tmp_path):
    from robot.train import Trainer

    config, run_dir = new_run(tmp_path, **{"runtime.kind": "async"})
    with pytest.raises(ValueError, match=f"python -m robot.runtime.local run {run_dir}"):
        Trainer(config, run_dir)
