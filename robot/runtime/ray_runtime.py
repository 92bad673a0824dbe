"""Ray runtime: robot actors (on the robot PC) and one learner (on the GPU box), several actors per learner.

    python -m robot.runtime.ray_runtime RUN_DIR     (runtime.ray_address, runtime.num_actors, ...)

The same `LearnerCore` / `ActorCore` as the async runtime, with Ray actor calls as the transport
(inside Ray, values travel through Ray's own serialisation; weights still travel as versioned
safetensors bytes). Placement: the learner asks for `runtime.ray_learner_gpus` GPUs; robot actors ask
for one unit of the custom resource `runtime.ray_actor_resource` (start the robot PC's Ray node with
`--resources '{"robot_pc": 1}'`). Secure the cluster before you connect machines: README, "Runtimes".

Restarts: both kinds of Ray actor are created with `max_restarts`, so Ray restarts a killed process. A
restarted learner resumes from its checkpoint (a new incarnation) and asks for the missing episodes; the
robot actors hold the robot while calls to the learner fail or time out, then reconnect. A restarted
robot actor reopens its episode store (the half-recorded episode is discarded) and the driver starts its
loop again; the learner keeps learning meanwhile. Heartbeats: every call from a robot actor is one
(the learner drops actors silent for `peer_timeout_s` from its count), and every answer carries the
learner's incarnation and update count (the actor holds when answers stop or its weights are too old).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from robot.core.extras import require

MAX_RESTARTS = 3


def _log(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()


def _lost_errors(ray) -> tuple[type[BaseException], ...]:
    """The errors that mean 'the other side is gone or restarting'."""
    names = ("RayActorError", "ActorDiedError", "ActorUnavailableError", "GetTimeoutError")
    return tuple(getattr(ray.exceptions, n) for n in names if hasattr(ray.exceptions, n))


class LearnerService:
    """The learner inside a Ray actor: a training thread plus methods the robot actors call."""

    def __init__(self, run_dir: str) -> None:
        from robot.run_dir import load_config
        from robot.runtime.learner import LearnerCore

        self.config = load_config(run_dir)
        self.core = LearnerCore(self.config, Path(run_dir), _log)
        self.rt = self.config.runtime
        self.last_heard: dict[str, float] = {}
        self.actor_stats: dict[str, dict[str, Any]] = {}
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._train_loop, name="learner-train", daemon=True)
        self._thread.start()
        _log(f"learner: incarnation {self.core.incarnation} on pid {os.getpid()}")

    def _train_loop(self) -> None:
        from robot.runtime.learner import learn_until_done

        try:
            learn_until_done(self.core)
        except Exception as err:  # said, not swallowed: the actors then hold until Ray restarts this learner
            _log(f"learner: training stopped: {type(err).__name__}: {err}")
            raise
        self.finished.set()

    def _status(self, actor_id: str) -> dict[str, Any]:
        self.last_heard[actor_id] = time.monotonic()
        return {**self.core.status(), "done": self.finished.is_set()}

    def hello(self, actor_id: str, fingerprint: str) -> dict[str, Any]:
        if fingerprint != self.core.fingerprint:
            raise ValueError(f"actor {actor_id} runs another config (fingerprint {fingerprint}, "
                             f"learner {self.core.fingerprint})")
        _log(f"learner: actor {actor_id} connected; resend from its episode {self.core.resume_from(actor_id)}")
        return {**self._status(actor_id), "resume_from": self.core.resume_from(actor_id)}

    def ingest(self, actor_id: str, index: int, arrays: dict, success: bool) -> dict[str, Any]:
        self.core.ingest(actor_id, index, arrays, success)
        return self._status(actor_id)

    def heartbeat(self, actor_id: str, stats: dict[str, Any]) -> dict[str, Any]:
        self.actor_stats[actor_id] = stats
        return self._status(actor_id)

    def weights(self) -> tuple[str, int, bytes]:
        version, blob = self.core.weights()
        return self.core.incarnation, version, blob

    def summary(self) -> dict[str, Any]:
        return {**self.core.summary(), "incarnation": self.core.incarnation, "done": self.finished.is_set()}

    def pid(self) -> int:
        return os.getpid()


class RobotActorService:
    """One robot actor inside a Ray actor; `run(learner)` acts until the learner is done."""

    def __init__(self, run_dir: str, actor_id: str) -> None:
        from robot.run_dir import load_config
        from robot.runtime.actor import ActorCore

        self.config = load_config(run_dir)
        self.actor_id = actor_id
        self.core = ActorCore(self.config, Path(run_dir), actor_id, _log)

    def pid(self) -> int:
        return os.getpid()

    def stats(self) -> dict[str, Any]:
        return self.core.stats()

    def run(self, learner) -> dict[str, Any]:
        import ray

        from robot.runtime.learner import config_fingerprint

        core, rt, lost = self.core, self.config.runtime, _lost_errors(ray)
        timeout = rt.peer_timeout_s
        connected, pending, last_beat, backoff = False, [], 0.0, 0.1
        while True:
            try:
                if not connected:
                    core.learner_lost()
                    status = ray.get(learner.hello.remote(self.actor_id, config_fingerprint(self.config)),
                                     timeout=timeout)
                    pending = list(range(status["resume_from"], core.episode))
                    core.heard_from_learner(status["incarnation"], status["updates"])
                    connected, backoff = True, 0.1
                    _log(f"actor {self.actor_id}: connected to learner {status['incarnation']}; "
                         f"sending {len(pending)} committed episodes it lacks")
                now = time.monotonic()
                status = None
                if pending:
                    arrays, success = core.episode_arrays(pending[0])
                    status = ray.get(learner.ingest.remote(self.actor_id, pending[0], arrays, success), timeout=timeout)
                    pending.pop(0)
                elif now - last_beat >= rt.heartbeat_s:
                    status = ray.get(learner.heartbeat.remote(self.actor_id, core.stats()), timeout=timeout)
                    last_beat = now
                if status is not None:
                    core.heard_from_learner(status["incarnation"], status["updates"])
                    if status["done"]:
                        _log(f"actor {self.actor_id}: learner finished; stopping")
                        return core.stats()
                    if (status["incarnation"], status["version"]) != (core.weights_incarnation, core.weights_version):
                        core.load_weights(*ray.get(learner.weights.remote(), timeout=timeout))
                index = core.step()
                if index is not None:
                    pending.append(index)
                if core.hold_reason is not None or core.finished:
                    time.sleep(0.01)
            except lost as err:
                connected = False
                core._hold(f"learner unreachable ({type(err).__name__})")
                time.sleep(backoff)
                backoff = min(2 * backoff, 2.0)


def learner_name(run_dir: Path) -> str:
    """Ray name of a run's learner (`ray.get_actor(name)` finds it, e.g. to inspect or stop it)."""
    return f"learner:{Path(run_dir).resolve().name}"


def actor_name(run_dir: Path, actor_id: str) -> str:
    return f"{actor_id}:{Path(run_dir).resolve().name}"


def run_ray(config, run_dir: Path, timeout_s: float | None = None, log=_log) -> dict[str, Any]:
    """Create the learner and `runtime.num_actors` robot actors, keep their loops running, return the summary.

    Uses the Ray session already initialised by the caller, else `ray.init(runtime.ray_address or None)`.
    """
    ray = require("ray", extra="ray")
    rt = config.runtime
    if not ray.is_initialized():
        ray.init(address=rt.ray_address or None, include_dashboard=False)
    run_dir = Path(run_dir).resolve()
    learner_cls = ray.remote(LearnerService)
    actor_cls = ray.remote(RobotActorService)
    learner = learner_cls.options(name=learner_name(run_dir), max_restarts=MAX_RESTARTS, max_concurrency=8,
                                  num_gpus=rt.ray_learner_gpus).remote(str(run_dir))
    resources = {rt.ray_actor_resource: 1} if rt.ray_actor_resource else None
    actors = [actor_cls.options(name=actor_name(run_dir, f"actor-{i}"), max_restarts=MAX_RESTARTS,
                                resources=resources, max_concurrency=2).remote(str(run_dir), f"actor-{i}")
              for i in range(rt.num_actors)]
    lost = _lost_errors(ray)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        loops = {actor.run.remote(learner): actor for actor in actors}
        while loops:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"ray runtime: not finished after {timeout_s} s")
            ready, _ = ray.wait(list(loops), timeout=1.0)
            for ref in ready:
                actor = loops.pop(ref)
                try:
                    ray.get(ref)
                except lost as err:  # the robot actor died; Ray restarts it, start its loop again
                    log(f"ray runtime: a robot actor died ({type(err).__name__}); restarting its loop")
                    loops[actor.run.remote(learner)] = actor
        for _ in range(100):  # the learner may be restarting right now
            try:
                return ray.get(learner.summary.remote(), timeout=rt.peer_timeout_s)
            except lost:
                time.sleep(0.5)
        raise RuntimeError("ray runtime: the learner did not come back to report its summary")
    finally:
        for handle in [*actors, learner]:  # never leave Ray actors behind
            ray.kill(handle, no_restart=True)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    from robot.run_dir import load_config

    parser = argparse.ArgumentParser(prog="python -m robot.runtime.ray_runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(argv)
    sys.stdout.write(json.dumps(run_ray(load_config(args.run_dir), args.run_dir), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
