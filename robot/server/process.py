"""``robot serve`` in a child process, for scripts, rehearsals and tests that need a server to talk to.

    with ServerProcess(["--twin", "reach", "--speed", "4"], token_file) as server:
        env = envs.real.make_env("reach", server=server.address, token_file=str(token_file))

The child binds a free loopback port (``--port 0``) and prints ``listening HOST PORT``; ``start`` waits for
that line. Its output keeps being read on a thread (a full pipe would block the server), and ``stop`` ends
it with SIGTERM (the server's clean shutdown) and returns its exit status.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from robot.serve_cli import TOKEN_ENV


class ServerProcess:
    """Args:
    args: ``robot serve`` arguments (``--twin TASK`` or ``--robot CONFIG``, ``--speed`` ...), without
        ``--port`` and ``--token-file``.
    token_file: the token file (written by the server if missing).
    start_timeout_s: longest wait for the ``listening`` line [s].
    """

    def __init__(self, args: list[str], token_file: str | Path, start_timeout_s: float = 60.0) -> None:
        self.args, self.token_file, self.start_timeout_s = list(args), Path(token_file), start_timeout_s
        self.proc: subprocess.Popen | None = None
        self.host, self.port = "", 0
        self.lines: list[str] = []
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def address(self) -> str:
        """``HOST:PORT`` as the ``--server`` options take it."""
        return f"{self.host}:{self.port}"

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self) -> ServerProcess:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        env.pop(TOKEN_ENV, None)  # the token comes from the file only
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "robot", "serve", *self.args, "--port", "0", "--token-file", str(self.token_file)],
            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self._reader = threading.Thread(target=self._read, name="serve-output", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self._listening.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"robot serve {' '.join(self.args)} did not start:\n{self.output}")
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("listening ") and not self._listening.is_set():
                _, self.host, port = line.split()
                self.port = int(port)
                self._listening.set()

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait (kill after ``timeout_s``); returns the exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
