"""The robot server: a backend (twin or Franka) with its control loop, and the authenticated TCP API.

Threads: the backend's control loop (1 kHz), one acceptor, one handler per client (at most
``max_clients``). Handlers never block the loop for longer than a state copy: the backend's callback and
scene share short locks with the tick.

Requests (``op``; wire format in ``hardware.server.protocol``):

| op | fields | reply |
|---|---|---|
| hello | api, version, token | server info (arm, task, cameras, rate) |
| state | | ``state``: joints, tool pose and twist (world), gripper, watchdog; twin: ``task`` (state, reward, success) |
| set_target | pos [3], quat [4] (w, x, y, z) | ``accepted``, ``time_s`` (server clock), ``applied_ns`` (monotonic) |
| set_stiffness | stiffness [6] | ``accepted`` |
| gripper | closed (bool) | |
| frames | cameras [names], size [h, w] | ``frames`` entries + raw uint8 payload |
| reset | seed (int or null); task, task_config (optional) | ``state`` at the reset pose (twin: client's task config) |
| stats | | ``stats``: loop lateness, overruns, ticks |

A target sent while the arm is stopped (watchdog stop stage) is refused with code ``stopped``; ``reset``
re-arms it.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import threading
import time
from typing import Any

from hardware.server.protocol import (
    API_NAME,
    API_VERSION,
    ProtocolError,
    pack_arrays,
    recv_message,
    send_message,
)
from robot.server.config import NetConfig, is_loopback

logger = logging.getLogger(__name__)


class RobotServer:
    """Serve ``backend`` on ``net.host:net.port`` for clients holding ``token``.

    ``start()`` starts the backend's loop and the acceptor and returns; ``address`` is then the bound
    (host, port). ``close()`` stops everything.
    """

    def __init__(self, backend: Any, token: str, net: NetConfig | None = None) -> None:
        net = net or NetConfig()
        if not token:
            raise ValueError("the robot server needs a non-empty token")
        if not is_loopback(net.host) and not net.allow_remote:
            raise ValueError(f"refusing to bind {net.host!r}: not loopback and allow_remote is false")
        self.backend = backend
        self.net = net
        self._token = token.encode()
        self._listener: socket.socket | None = None
        self._closed = threading.Event()
        self._clients: set[socket.socket] = set()
        self._clients_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.refused = {"auth": 0, "version": 0, "protocol": 0, "busy": 0}
        self.address: tuple[str, int] = (net.host, net.port)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> RobotServer:
        self._listener = socket.create_server((self.net.host, self.net.port))
        self._listener.settimeout(0.2)  # the acceptor checks for close() this often
        self.address = self._listener.getsockname()[:2]
        self.backend.start()
        acceptor = threading.Thread(target=self._accept_loop, name="api-accept", daemon=True)
        acceptor.start()
        self._threads.append(acceptor)
        return self

    def wait(self, stop: threading.Event | None = None) -> None:
        """Block until ``stop`` is set or ``close()`` is called (the CLI's main thread)."""
        while not self._closed.is_set() and not (stop is not None and stop.is_set()):
            time.sleep(0.1)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        if self._listener is not None:
            self._listener.close()
        with self._clients_lock:
            for conn in list(self._clients):
                conn.close()
        for thread in self._threads:
            thread.join(2.0)
        self.backend.close()

    def __enter__(self) -> RobotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ connections
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._clients_lock:
                if len(self._clients) >= self.net.max_clients:
                    self.refused["busy"] += 1
                    self._refuse(conn, "busy", f"server busy: at most {self.net.max_clients} clients")
                    continue
                self._clients.add(conn)
            thread = threading.Thread(target=self._serve_client, args=(conn,), name="api-client", daemon=True)
            thread.start()
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]

    def _refuse(self, conn: socket.socket, code: str, message: str) -> None:
        with contextlib.suppress(OSError):
            send_message(conn, {"ok": False, "code": code, "error": message})
        conn.close()

    def _serve_client(self, conn: socket.socket) -> None:
        conn.settimeout(self.net.client_idle_timeout_s)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if not self._handshake(conn):
                return
            while not self._closed.is_set():
                header, _payload = recv_message(conn)
                if header.get("version") != API_VERSION:
                    self.refused["version"] += 1
                    self._refuse(conn, "version", f"API version mismatch: message has version "
                                 f"{header.get('version')!r}, server speaks {API_VERSION}")
                    return
                reply, payload = self._dispatch(header)
                send_message(conn, reply, payload)
        except ProtocolError as err:
            self.refused["protocol"] += 1
            self._refuse(conn, "protocol", str(err))
        except (OSError, ConnectionError):
            pass  # client left or went idle
        finally:
            with self._clients_lock:
                self._clients.discard(conn)
            conn.close()

    def _handshake(self, conn: socket.socket) -> bool:
        header, _ = recv_message(conn)
        if header.get("op") != "hello" or header.get("api") != API_NAME:
            self.refused["protocol"] += 1
            self._refuse(conn, "protocol", f"first message must be the '{API_NAME}' hello handshake")
            return False
        if header.get("version") != API_VERSION:
            self.refused["version"] += 1
            self._refuse(conn, "version", f"API version mismatch: client speaks {header.get('version')!r}, "
                         f"server speaks {API_VERSION}; update the older side")
            return False
        token = header.get("token")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self._token):
            self.refused["auth"] += 1
            self._refuse(conn, "auth", "missing or wrong token")
            return False
        send_message(conn, {"ok": True, "api": API_NAME, **self.backend.info()})
        return True

    # ------------------------------------------------------------------------------------ requests
    def _dispatch(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        op = header.get("op")
        backend = self.backend
        try:
            if op == "state":
                return {"ok": True, "state": backend.state()}, b""
            if op == "set_target":
                if backend.callback.finished:
                    return _error("stopped", "the arm stopped after "
                                  f"{backend.callback.silence.stop_after_s} s without targets; send 'reset'"), b""
                accepted = backend.set_target(_floats(header, "pos", 3), _floats(header, "quat", 4))
                applied_ns = time.monotonic_ns()  # for latency measurements (same machine clocks)
                return {"ok": True, "accepted": accepted, "time_s": backend.callback.read()["time_s"],
                        "applied_ns": applied_ns}, b""
            if op == "set_stiffness":
                return {"ok": True, "accepted": backend.set_stiffness(_floats(header, "stiffness", 6))}, b""
            if op == "gripper":
                closed = header.get("closed")
                if not isinstance(closed, bool):
                    return _error("bad_request", f"gripper: 'closed' must be true or false, got {closed!r}"), b""
                backend.set_gripper(closed)
                return {"ok": True}, b""
            if op == "frames":
                names, size = header.get("cameras"), header.get("size")
                if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
                    return _error("bad_request", f"frames: 'cameras' must be a list of names, got {names!r}"), b""
                if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) for s in size)):
                    return _error("bad_request", f"frames: 'size' must be [height, width], got {size!r}"), b""
                entries, payload = pack_arrays(backend.frames(names, (size[0], size[1])))
                return {"ok": True, "frames": entries}, payload
            if op == "reset":
                seed, task, task_config = header.get("seed"), header.get("task"), header.get("task_config")
                if seed is not None and not isinstance(seed, int):
                    return _error("bad_request", f"reset: 'seed' must be an integer or null, got {seed!r}"), b""
                if not (task is None or isinstance(task, str)) or not (task_config is None or
                                                                        isinstance(task_config, dict)):
                    return _error("bad_request", "reset: 'task' must be a name and 'task_config' an object"), b""
                return {"ok": True, "state": backend.reset(seed, task, task_config)}, b""
            if op == "stats":
                return {"ok": True, "stats": {**backend.stats(), "refused": dict(self.refused)}}, b""
            return _error("bad_request", f"unknown op {op!r}; known: state, set_target, set_stiffness, gripper, "
                          "frames, reset, stats"), b""
        except ValueError as err:
            return _error("bad_request", f"{op}: {err}"), b""


def _error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "code": code, "error": message}


def _floats(header: dict[str, Any], key: str, n: int) -> list[float]:
    value = header.get(key)
    if not (isinstance(value, list) and len(value) == n and all(isinstance(v, (int, float)) for v in value)):
        raise ValueError(f"'{key}' must be a list of {n} numbers, got {value!r}")
    return [float(v) for v in value]


def make_backend(config: Any) -> Any:
    """The backend of a ``RobotServerConfig``: ``TwinBackend`` or ``FrankaBackend``."""
    if config.arm == "twin":
        from robot.server.twin import TwinBackend

        return TwinBackend(config)
    from robot.server.franka_backend import FrankaBackend

    return FrankaBackend(config)
