"""The async runtime end to end: `robot train --runtime.kind async` and `--resume`, image agents over the wire,
an actor driving the digital twin, and what the actors' episode stores record (robot, source)."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from data.episode_store import EpisodeStore
from data.schema import Source
from robot.cli import main as robot_main
from robot.core.metrics import read_metrics
from robot.runtime.actor import ActorCore, actor_dir
from robot.runtime.learner import LearnerCore, summary_path
from robot.runtime.local import run_actor, serve_learner
from robot.runtime.wire import decode, encode
from tests.robot.test_runtime_async import TINY, new_run
from tests.robot.test_twin_session import twin, twin_stats  # noqa: F401 - the module's twin server fixture

CLI_TINY = [f"--{k}={v}" for k, v in TINY.items() if k != "total_env_steps"]


def store_metadata(run_dir, actor_id: str = "actor-0") -> list:
    with EpisodeStore.open(actor_dir(run_dir, actor_id) / "episodes") as store:
        return [store.metadata(i) for i in range(len(store))]


def run_in_threads(config, run_dir) -> tuple[dict, dict]:
    """Learner (listening thread) and one actor in this process: the socket transport without process start-up."""
    result: dict = {}
    learner = threading.Thread(target=lambda: result.update(serve_learner(config, run_dir, log=lambda _m: None)))
    learner.start()
    try:
        stats = run_actor(config, run_dir, "actor-0", log=lambda _m: None)
    finally:
        learner.join(timeout=120)
    assert not learner.is_alive()
    return result, stats


def test_robot_train_async_runs_resumes_and_evaluates_through_the_cli(tmp_path, capsys):
    args = ["train", "reach", "--runtime.kind", "async", "--total_env_steps", "150", "--run_root", str(tmp_path),
            *CLI_TINY, "--learning_starts=50", "--interventions.until_step=60", "--device=cpu"]
    assert robot_main(args) == 0
    (run_dir,) = tmp_path.iterdir()
    out = capsys.readouterr().out
    assert "runtime async" in out and "summary" in out
    summary = json.loads(summary_path(run_dir).read_text())
    assert summary["env_steps"] >= 150 and summary["updates"] == summary["env_steps"] - 50 + 1
    rows = read_metrics(run_dir)  # the same run-folder layout as a 'sync' run
    assert rows and rows[-1]["train/updates"] > 0 and (run_dir / "curve.png").is_file()
    (ckpt,) = (run_dir / "checkpoints").glob("step_*")
    # The actor's store: robot and source per episode (the scripted person took over in the first only).
    meta = store_metadata(run_dir)
    assert {m.robot for m in meta} == {"panda_sim"}
    assert meta[0].source is Source.INTERVENTION and meta[0].extra["interventions"] > 0
    assert meta[-1].source is Source.ONLINE and meta[-1].extra["interventions"] == 0

    assert robot_main(["train", "--resume", str(run_dir), "--total_env_steps", "250"]) == 0
    resumed = json.loads(summary_path(run_dir).read_text())
    assert resumed["env_steps"] >= 250 and resumed["updates"] == resumed["env_steps"] - 50 + 1
    assert "resumed from step_" in (run_dir / "logs" / "learner.log").read_text()
    assert sum(m.length for m in store_metadata(run_dir)) == resumed["env_steps"]  # nothing sent twice or lost

    assert robot_main(["eval", str(run_dir), "--episodes", "1"]) == 0  # the learner's checkpoint is a run's
    assert list(run_dir.glob("eval_step_*.json"))


def test_image_agent_learns_over_the_socket_and_frames_travel_as_raw_uint8(tmp_path):
    config, run_dir = new_run(tmp_path, total_env_steps=100, learning_starts=60, random_steps=60,
                              **{"env.image_obs": True, "env.cameras": "front", "env.image_size": "32,32",
                                 "image.encoder.small_channels": "8,8", "image.encoder.latent_dim": 16,
                                 "image.encoder.proprio_dim": 8, "interventions.device": "none"})
    summary, stats = run_in_threads(config, run_dir)
    assert summary["env_steps"] >= 100 and summary["updates"] == summary["env_steps"] - 60 + 1
    assert stats["weights_version"] > 0  # the actor acted on published image-agent weights
    core = ActorCore(config, run_dir, "actor-0", log=lambda _m: None)
    try:
        arrays, _ = core.episode_arrays(0)
    finally:
        core.close()
    front = arrays["obs/front"]
    assert front.dtype == np.uint8 and front.shape == (51, 32, 32, 3) and front.any()
    frame = encode("episode", {"index": 0}, arrays)
    raw = sum(a.nbytes for a in arrays.values())
    assert raw < len(frame) < raw + 2048  # raw bytes plus a small JSON header: no pickle, no text encoding
    assert np.array_equal(decode(frame).arrays["obs/front"], front)
    # A restarted learner resumes the frame buffers and the pixel agent from the run's checkpoint.
    again = LearnerCore(config, run_dir, log=lambda _m: None)
    assert again.env_steps == summary["env_steps"] and len(again.online) == summary["online_size"]


def test_async_actor_drives_the_twin_and_labels_its_episodes(twin, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.delenv("ROBOT_SERVER_TOKEN", raising=False)
    before = twin_stats(twin)
    config, run_dir = new_run(tmp_path, total_env_steps=100, learning_starts=60, random_steps=60,
                              robot_server=twin.address, robot_token_file=str(twin.token_file),
                              **{"runtime.kind": "async", "interventions.until_step": 40})
    summary, stats = run_in_threads(config, run_dir)
    assert summary["env_steps"] >= 100 and summary["episodes"] == {"actor-0": stats["episodes"]}
    after = twin_stats(twin)
    assert after["targets"] - before["targets"] >= summary["env_steps"]  # every step was a target on the twin
    assert after["resets"] - before["resets"] >= stats["episodes"]
    meta = store_metadata(run_dir)
    assert {m.robot for m in meta} == {"panda_twin"}
    assert [m.source for m in meta] == [Source.INTERVENTION] + [Source.ONLINE] * (len(meta) - 1)

    import envs
    from robot.demo_store import write_demos
    from robot.demos import collect_demos

    demos = collect_demos("reach", 1, 0.1, 0, server=twin.address, token_file=str(twin.token_file))
    assert demos[0].robot == "panda_twin"
    write_demos(tmp_path / "demos", envs.get_task("reach"), demos, noise_std=0.1)
    with EpisodeStore.open(tmp_path / "demos") as store:
        assert store.metadata(0).robot == "panda_twin" and store.metadata(0).source is Source.DEMO


def test_robot_server_needs_one_actor(tmp_path):
    with pytest.raises(ValueError, match="one robot server serves one actor"):
        new_run(tmp_path, robot_server="127.0.0.1:5555", **{"runtime.kind": "async", "runtime.num_actors": 2})
