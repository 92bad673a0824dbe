"""Asynchronous actor and learner on one machine: separate processes over an authenticated local socket.

    python -m robot.runtime.local learner RUN_DIR         the learner (agent, buffers, checkpoints)
    python -m robot.runtime.local actor RUN_DIR --id N    one actor (env, episode store)
    python -m robot.runtime.local run RUN_DIR             both (learner + runtime.num_actors actors)

(`robot train TASK --runtime.kind async` and `robot train --resume RUN_DIR` run `launch` on the run folder.)

Transport: `multiprocessing.connection` Listener/Client on `runtime.host` (loopback by default) with an
HMAC challenge on a per-run secret (`RUN_DIR/runtime/authkey`, mode 0600), and only `send_bytes` /
`recv_bytes` of `robot.runtime.wire` frames: no pickle crosses the socket. One connection per actor;
messages: hello -> welcome (+ resume_from), episode (after it is committed), heartbeat (both ways),
weights (versioned safetensors), stop, error.

Failure behaviour: an actor that loses its learner holds the robot and reconnects with backoff; the
restarted learner (new incarnation) resumes from its checkpoint and asks each actor to resend the
episodes it committed since. A learner that loses an actor keeps learning on what it has and takes
the actor back when it reconnects (a restarted actor discards its half-recorded episode and resends
the committed ones the learner lacks). Without any actor the learner says so every few seconds, and
gives up after `runtime.actor_wait_timeout_s` when that is set. An actor whose env fails (e.g. its
robot server is unreachable) exits with that error, and `launch` stops the run naming its log.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import AuthenticationError, Client, Connection, Listener
from pathlib import Path
from typing import Any

from robot.core.checkpoint import atomic_write_text
from robot.runtime.actor import ActorCore
from robot.runtime.learner import EpisodeOrderError, LearnerCore, config_fingerprint, learn_until_done, summary_path
from robot.runtime.wire import MAX_FRAME_BYTES, WireError, decode, encode

WAIT_LOG_PERIOD_S = 5.0


def log_line(text: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
    sys.stderr.flush()


def runtime_dir(run_dir: Path) -> Path:
    path = Path(run_dir) / "runtime"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_secret(run_dir: Path) -> bytes:
    """The run's shared HMAC key, created once (atomically, owner-only) by whichever process asks first."""
    path = runtime_dir(run_dir) / "authkey"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # the creator may not have written it yet
            key = path.read_text().strip()
            if key:
                return bytes.fromhex(key)
            time.sleep(0.01)
        raise ValueError(f"{path}: empty run secret; delete it and restart both sides") from None
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
        f.flush()
        os.fsync(f.fileno())
    return bytes.fromhex(path.read_text().strip())


def address_file(run_dir: Path) -> Path:
    return runtime_dir(run_dir) / "learner_address.json"


def recv(conn: Connection, timeout: float):
    """The next message, or None when nothing arrived within `timeout` seconds."""
    if not conn.poll(timeout):
        return None
    return decode(conn.recv_bytes(MAX_FRAME_BYTES))


# ---------------------------------------------------------------------------------------------
# Learner
# ---------------------------------------------------------------------------------------------
class LearnerServer:
    """Accepts actor connections; one thread per actor both receives and sends (a Connection is not shared)."""

    def __init__(self, core: LearnerCore, host: str, port: int, authkey: bytes, log=log_line) -> None:
        self.core, self.log = core, log
        self.rt = core.config.runtime
        self.listener = Listener((host, port), family="AF_INET", authkey=authkey)
        self.address = self.listener.address
        self.actors: dict[str, int] = {}  # connected actor -> connection generation
        self.actor_stats: dict[str, dict[str, Any]] = {}  # the latest heartbeat of each actor
        self._generation = 0
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.closed = threading.Event()
        self._threads: list[threading.Thread] = []
        threading.Thread(target=self._accept_loop, name="learner-accept", daemon=True).start()

    def _accept_loop(self) -> None:
        while not self.closed.is_set():
            try:
                conn = self.listener.accept()
            except (AuthenticationError, EOFError, OSError, ValueError) as err:
                if self.closed.is_set():
                    return
                self.log(f"learner: refused a connection ({type(err).__name__}: {err})")
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), name="learner-conn", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
            thread.start()

    def _serve(self, conn: Connection) -> None:
        actor_id, generation = None, -1
        rt, core = self.rt, self.core
        try:
            hello = recv(conn, rt.peer_timeout_s)
            if hello is None or hello.kind != "hello" or "actor_id" not in hello.meta:
                raise WireError(f"expected a hello message first, got {None if hello is None else hello.kind!r}")
            actor_id = str(hello.meta["actor_id"])
            if hello.meta.get("fingerprint") != core.fingerprint:
                conn.send_bytes(encode("error", {"message": (
                    f"actor {actor_id} runs another config (fingerprint {hello.meta.get('fingerprint')}, "
                    f"learner {core.fingerprint}); start it with the learner's run folder")}))
                raise WireError(f"actor {actor_id}: config fingerprint mismatch")
            with self._lock:
                self._generation += 1
                generation = self._generation
                self.actors[actor_id] = generation  # a reconnecting actor replaces its stale connection
            resume_from = core.resume_from(actor_id)
            conn.send_bytes(encode("welcome", {**core.status(), "resume_from": resume_from}))
            self.log(f"learner: actor {actor_id} connected; resend from its episode {resume_from}")
            sent_version, last_beat, last_heard = -1, 0.0, time.monotonic()
            while not self.closed.is_set() and self.actors.get(actor_id) == generation:
                now = time.monotonic()
                status = core.status()
                if status["version"] != sent_version:
                    version, blob = core.weights()
                    conn.send_bytes(encode("weights", {"incarnation": core.incarnation, "version": version}, blob=blob))
                    sent_version = version
                if self.finished.is_set():
                    conn.send_bytes(encode("stop", status))
                    return
                if now - last_beat >= rt.heartbeat_s:
                    conn.send_bytes(encode("heartbeat", status))
                    last_beat = now
                msg = recv(conn, min(rt.heartbeat_s, 0.02))
                if msg is None:
                    if now - last_heard > rt.peer_timeout_s:
                        self.log(f"learner: actor {actor_id} silent for {now - last_heard:.1f} s; dropping it")
                        return
                    continue
                last_heard = time.monotonic()
                if msg.kind == "episode":
                    core.ingest(actor_id, int(msg.meta["index"]), msg.arrays, bool(msg.meta.get("success", False)))
                elif msg.kind == "heartbeat":
                    self.actor_stats[actor_id] = msg.meta
                else:
                    raise WireError(f"unexpected message kind {msg.kind!r} from actor {actor_id}")
        except (EOFError, ConnectionError, OSError) as err:
            self.log(f"learner: actor {actor_id} disconnected ({type(err).__name__})")
        except (WireError, EpisodeOrderError, ValueError, KeyError) as err:
            self.log(f"learner: closing the connection of actor {actor_id}: {err}")
        finally:
            conn.close()
            with self._lock:
                if actor_id is not None and self.actors.get(actor_id) == generation:
                    del self.actors[actor_id]

    def finish(self, grace_s: float) -> None:
        """Tell connected actors to stop, give them `grace_s` to hear it, then close."""
        self.finished.set()
        deadline = time.monotonic() + grace_s
        while self.actors and time.monotonic() < deadline:
            time.sleep(0.01)
        self.close()

    def close(self) -> None:
        self.closed.set()
        self.listener.close()


def serve_learner(config, run_dir: Path, log=log_line) -> dict[str, Any]:
    """Run the learner until the env-step budget is received and learned on; returns its summary."""
    rt = config.runtime
    core = LearnerCore(config, run_dir, log)
    server = LearnerServer(core, rt.host, rt.port, run_secret(run_dir), log)
    host, port = server.address
    atomic_write_text(address_file(run_dir), json.dumps({"host": host, "port": port, "pid": os.getpid(),
                                                          "incarnation": core.incarnation}))
    log(f"learner: listening on {host}:{port} (incarnation {core.incarnation})")
    clock = {"last_actor": time.monotonic(), "last_log": time.monotonic()}

    def check_actors() -> None:
        now = time.monotonic()
        if server.actors:
            clock["last_actor"] = now
            return
        waited = now - clock["last_actor"]
        if rt.actor_wait_timeout_s and waited > rt.actor_wait_timeout_s:
            raise TimeoutError(
                f"learner: no actor connected for {waited:.0f} s (runtime.actor_wait_timeout_s); "
                f"start one with: python -m robot.runtime.local actor {run_dir} --id actor-0"
            )
        if now - clock["last_log"] >= WAIT_LOG_PERIOD_S:
            log(f"learner: waiting for actors (none connected for {waited:.0f} s; {core.env_steps} env steps so far)")
            clock["last_log"] = now

    try:
        summary = learn_until_done(core, tick=check_actors)
        server.finish(grace_s=3 * rt.heartbeat_s)
        return summary
    finally:
        server.close()


# ---------------------------------------------------------------------------------------------
# Actor
# ---------------------------------------------------------------------------------------------
def _connect(run_dir: Path, authkey: bytes) -> Connection:
    path = address_file(run_dir)
    if not path.is_file():
        raise ConnectionError(f"{path} does not exist yet (learner not started)")
    address = json.loads(path.read_text())
    return Client((address["host"], int(address["port"])), family="AF_INET", authkey=authkey)


LOST = (EOFError, ConnectionError, OSError, WireError)
"""Errors of the actor's connection that mean 'the learner is gone': hold, then reconnect."""


def _drop(conn: Connection, actor_id: str, err: BaseException, log) -> None:
    log(f"actor {actor_id}: lost the learner ({type(err).__name__}: {err}); holding, reconnecting")
    conn.close()


def run_actor(config, run_dir: Path, actor_id: str, log=log_line, teleop_device=None) -> dict[str, Any]:
    """Act until the learner says stop; hold whenever the learner or its weights cannot be trusted."""
    rt = config.runtime
    core = ActorCore(config, run_dir, actor_id, log, teleop_device=teleop_device)
    authkey = run_secret(run_dir)
    conn: Connection | None = None
    pending: deque[int] = deque()
    backoff, last_beat = 0.1, 0.0
    log(f"actor {actor_id}: {core.episode} committed episodes ({core.env_steps} env steps) in its store")
    try:
        while True:
            if conn is None:
                core.learner_lost()
                try:
                    conn = _connect(run_dir, authkey)
                    conn.send_bytes(encode("hello", {"actor_id": actor_id, "fingerprint": config_fingerprint(config),
                                                     "episodes": core.episode}))
                    welcome = recv(conn, rt.peer_timeout_s)
                    if welcome is not None and welcome.kind == "error":  # e.g. another config: retrying cannot help
                        raise RuntimeError(f"actor {actor_id}: the learner refused it: {welcome.meta.get('message')}")
                    if welcome is None or welcome.kind != "welcome":
                        raise ConnectionError(f"no welcome from the learner (got {welcome and welcome.kind})")
                except (OSError, EOFError, AuthenticationError, WireError, ConnectionError, ValueError) as err:
                    if conn is not None:
                        conn.close()
                        conn = None
                    core._hold(f"learner unreachable ({err})")
                    time.sleep(backoff)
                    backoff = min(2 * backoff, 2.0)
                    continue
                backoff = 0.1
                core.heard_from_learner(welcome.meta["incarnation"], welcome.meta["updates"])
                pending = deque(range(int(welcome.meta["resume_from"]), core.episode))
                log(f"actor {actor_id}: connected to learner {welcome.meta['incarnation']}; "
                    f"sending {len(pending)} committed episodes it lacks")
            try:
                msg = recv(conn, 0)
                while msg is not None:
                    if msg.kind == "weights":
                        core.load_weights(msg.meta["incarnation"], msg.meta["version"], msg.blob)
                    elif msg.kind == "heartbeat":
                        core.heard_from_learner(msg.meta["incarnation"], msg.meta["updates"])
                    elif msg.kind == "stop":
                        log(f"actor {actor_id}: learner finished; stopping")
                        return core.stats()
                    elif msg.kind == "error":
                        raise RuntimeError(f"actor {actor_id}: {msg.meta.get('message')}")
                    msg = recv(conn, 0)
                if pending:
                    index = pending.popleft()
                    arrays, success = core.episode_arrays(index)
                    conn.send_bytes(encode("episode", {"index": index, "success": success}, arrays))
            except LOST as err:
                conn = _drop(conn, actor_id, err, log)
                continue
            # Outside the learner's error handling: an env or robot failure ends this actor, with its error.
            index = core.step()
            if index is not None:
                pending.append(index)
            try:
                now = time.monotonic()
                if now - last_beat >= rt.heartbeat_s:
                    conn.send_bytes(encode("heartbeat", core.stats()))
                    last_beat = now
                if core.hold_reason is not None or core.finished:
                    conn.poll(0.01)  # holding: wait for the learner instead of spinning
            except LOST as err:
                conn = _drop(conn, actor_id, err, log)
    finally:
        if conn is not None:
            conn.close()
        core.close()


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def spawn(role: str, run_dir: Path, *extra: str) -> subprocess.Popen:
    """One side as its own process, its output in RUN_DIR/logs/<role>.log."""
    logs = Path(run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    name = role + (f"-{extra[-1]}" if extra else "")
    out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child, closed with it
    try:
        return subprocess.Popen([sys.executable, "-m", "robot.runtime.local", role, str(run_dir), *extra],
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def launch(config, run_dir: Path, timeout_s: float | None = None, poll=None, poll_s: float = 0.5) -> dict[str, Any]:
    """Start learner and actors as processes, wait for the learner, and never leave a child behind.

    `poll()` (e.g. the CLI's progress bar) runs every `poll_s` seconds while the learner works. A
    learner that fails, or an actor that fails while the learner still waits for data, ends the run
    with an error naming its log (an actor that cannot reach its robot would otherwise stall it).
    """
    run_secret(run_dir)
    logs = Path(run_dir) / "logs"
    children = [spawn("learner", run_dir)]
    try:
        for i in range(config.runtime.num_actors):
            children.append(spawn("actor", run_dir, "--id", f"actor-{i}"))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while children[0].poll() is None:
            failed = [(i, c.returncode) for i, c in enumerate(children[1:]) if c.poll() not in (None, 0)]
            if failed:
                i, code = failed[0]
                raise RuntimeError(f"actor-{i} exited with status {code}; see {logs / f'actor-actor-{i}.log'}")
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"async runtime: not finished after {timeout_s} s; see {logs}")
            if poll is not None:
                poll()
            time.sleep(poll_s)
        if children[0].returncode != 0:
            raise RuntimeError(f"learner exited with status {children[0].returncode}; see {logs / 'learner.log'}")
        for child in children[1:]:
            child.wait(timeout=10 * config.runtime.heartbeat_s + 10)
        return json.loads(summary_path(run_dir).read_text())
    finally:
        for child in children:  # cleanup on any exit, normal or not (LeRobot #3063)
            if child.poll() is None:
                child.kill()
                child.wait()


def main(argv: list[str] | None = None) -> int:
    from robot.run_dir import load_config

    parser = argparse.ArgumentParser(prog="python -m robot.runtime.local", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=("learner", "actor", "run"))
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--id", default="actor-0", help="actor id (actor role; default actor-0)")
    args = parser.parse_args(argv)
    config = load_config(args.run_dir)
    if args.role == "learner":
        serve_learner(config, args.run_dir)
    elif args.role == "actor":
        stats = run_actor(config, args.run_dir, args.id)
        log_line(f"actor {args.id}: {stats}")
    else:
        sys.stdout.write(json.dumps(launch(config, args.run_dir), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
