"""Client of the robot server API (see ``hardware.server.protocol`` for the wire format).

One TCP connection, one request at a time (a lock serialises callers); every call has a timeout.

    with RobotClient(port=5555, token=token) as robot:
        state = robot.state()
        robot.set_target(pos, quat)
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from hardware.server.protocol import (
    API_NAME,
    API_VERSION,
    ApiError,
    AuthError,
    VersionMismatchError,
    recv_message,
    send_message,
    unpack_arrays,
)


class RobotClient:
    """Args:
    host, port: the server's address (loopback by default).
    token: the shared secret the server was started with.
    timeout_s: longest wait for any reply [s].
    version: API version to announce (tests announce another to check the refusal).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 5555, token: str = "", timeout_s: float = 10.0,
                 version: int = API_VERSION) -> None:
        self.host, self.port, self.token, self.timeout_s, self.version = host, port, token, timeout_s, version
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self.server_info: dict[str, Any] = {}

    def connect(self) -> RobotClient:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        try:
            reply = self._exchange({"op": "hello", "api": API_NAME, "version": self.version, "token": self.token})
        except Exception:
            self.close()
            raise
        self.server_info = reply
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> RobotClient:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ requests
    def request(self, op: str, **fields: Any) -> tuple[dict[str, Any], bytes]:
        """Send ``op`` with ``fields``; returns the reply header and payload; raises ApiError if refused."""
        if self._sock is None:
            raise ConnectionError(f"not connected to the robot server at {self.host}:{self.port}; call connect()")
        return self._exchange_with_payload({"op": op, "version": self.version, **fields})

    def state(self) -> dict[str, Any]:
        return self.request("state")[0]["state"]

    def set_target(self, pos: Sequence[float], quat_wxyz: Sequence[float]) -> dict[str, Any]:
        """Tool pose target (world frame); returns the reply (``accepted``, server ``time_s``)."""
        return self.request("set_target", pos=[float(x) for x in pos], quat=[float(x) for x in quat_wxyz])[0]

    def set_stiffness(self, stiffness: Sequence[float]) -> dict[str, Any]:
        return self.request("set_stiffness", stiffness=[float(x) for x in stiffness])[0]

    def gripper(self, closed: bool) -> dict[str, Any]:
        return self.request("gripper", closed=bool(closed))[0]

    def frames(self, cameras: Sequence[str], size: tuple[int, int]) -> dict[str, tuple[np.ndarray, float]]:
        """Latest frame of each camera, resized to (height, width): name -> (uint8 array, timestamp [s])."""
        header, payload = self.request("frames", cameras=list(cameras), size=[int(size[0]), int(size[1])])
        return unpack_arrays(header["frames"], payload)

    def reset(self, seed: int | None = None, task: str | None = None,
              task_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """Back to the reset pose (the twin also resets its task); returns the state there.

        ``task`` and ``task_config`` (the client's env config fields): a twin refuses another task and
        serves its task with this config (validated); a real arm ignores them (its rewards are the client's).
        """
        fields: dict[str, Any] = {"seed": seed}
        if task is not None:
            fields["task"] = task
        if task_config is not None:
            fields["task_config"] = task_config
        return self.request("reset", **fields)[0]["state"]

    def stats(self) -> dict[str, Any]:
        """Control-loop timing (lateness, overruns) and counters."""
        return self.request("stats")[0]["stats"]

    # ------------------------------------------------------------------------------------ internals
    def _exchange(self, header: dict[str, Any]) -> dict[str, Any]:
        return self._exchange_with_payload(header)[0]

    def _exchange_with_payload(self, header: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        with self._lock:
            send_message(self._sock, header)
            reply, payload = recv_message(self._sock)
        if not reply.get("ok", False):
            code, message = str(reply.get("code", "error")), str(reply.get("error", "request refused"))
            error_cls = {"auth": AuthError, "version": VersionMismatchError}.get(code, ApiError)
            raise error_cls(code, f"robot server refused '{header.get('op')}': {message}")
        return reply, payload
