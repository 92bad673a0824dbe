"""Ray runtime: two robot actors feed one learner; kill -9 of the learner and of an actor loses nothing."""

import os
import signal
import threading
import time

import pytest

from robot.runtime.actor import actor_dir
from tests.robot.test_runtime_async import new_run, store_totals

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # an actor restarting, or not created yet
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_actors_one_learner_survive_kill_9_of_each_side(ray_session, tmp_path):
    from robot.runtime.ray_runtime import actor_name, learner_name, run_ray

    config, run_dir = new_run(tmp_path, total_env_steps=1000, checkpoint_every=150,
                              **{"runtime.kind": "ray", "runtime.num_actors": 2})
    result: dict = {}
    driver = threading.Thread(target=lambda: result.update(run_ray(config, run_dir, timeout_s=150)), daemon=True)
    driver.start()
    learner = _wait(lambda: ray.get_actor(learner_name(run_dir)), 60, "the learner")
    first_incarnation = _wait(lambda: ray.get(learner.summary.remote(), timeout=5)["incarnation"], 60, "learner up")
    _wait(lambda: list((run_dir / "checkpoints").glob("step_*")), 60, "a learner checkpoint")
    os.kill(ray.get(learner.pid.remote()), signal.SIGKILL)  # Ray restarts it; it resumes from its checkpoint
    second = _wait(lambda: ray.get(learner.summary.remote(), timeout=5), 60, "the restarted learner")
    assert second["incarnation"] != first_incarnation
    actor = ray.get_actor(actor_name(run_dir, "actor-1"))
    assert not ray.get(learner.summary.remote(), timeout=10)["done"]  # the actor dies mid-run
    os.kill(ray.get(actor.pid.remote(), timeout=10), signal.SIGKILL)  # Ray restarts it; the driver reruns its loop
    driver.join(timeout=150)
    assert not driver.is_alive() and result["done"]
    # Both actors fed the one learner, and every committed transition of both stores is in its buffers.
    stores = [store_totals(actor_dir(run_dir, a) / "episodes") for a in ("actor-0", "actor-1")]
    assert set(result["episodes"]) == {"actor-0", "actor-1"}
    assert result["online_size"] == result["env_steps"] == sum(t for t, _ in stores) >= 1000
    assert result["demo_size"] == result["interventions"] == sum(h for _, h in stores) > 0
    assert result["incarnation"] == second["incarnation"]
    with pytest.raises(ValueError):  # run_ray killed its actors on the way out
        ray.get_actor(learner_name(run_dir))


def test_robot_train_ray_through_the_cli(ray_session, tmp_path):
    """`robot train --runtime.kind ray` on the session's Ray: the learner's checkpoint and metrics in the run folder."""
    import json

    from robot.cli import main as robot_main
    from robot.runtime.learner import summary_path
    from tests.robot.test_runtime_async import TINY

    options = [f"--{k}={v}" for k, v in TINY.items() if k != "total_env_steps"]
    assert robot_main(["train", "reach", "--runtime.kind", "ray", "--total_env_steps", "120", *options,
                       "--learning_starts=50", "--run_root", str(tmp_path), "--device=cpu"]) == 0
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads(summary_path(run_dir).read_text())
    assert summary["env_steps"] >= 120 and summary["updates"] == summary["env_steps"] - 50 + 1
    assert list((run_dir / "checkpoints").glob("step_*")) and (run_dir / "metrics.jsonl").read_text()
