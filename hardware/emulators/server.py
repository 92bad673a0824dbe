"""Serve an emulated device over a pseudo-terminal or a TCP socket, with latency and fault injection.

The driver under test opens `server.url` exactly as it would open a USB adapter: the pty's slave
path goes through pyserial's POSIX backend, `socket://127.0.0.1:PORT` through its socket handler.
The device object only turns request bytes into reply frames; transport, timing and faults live
here, so every family gets the same faults:

- GARBAGE: random bytes before the reply (line noise, a previous device's tail)
- SPLIT: the reply written in two parts with a pause (USB adapters deliver frames in pieces)
- BAD_CRC: the reply's last byte flipped (all three protocols end frames with their checksum)
- SILENCE: no reply (unpowered or absent device, collision)

Device-level faults (status error bits, gripper faults) are knobs on the device models.
"""

from __future__ import annotations

import enum
import os
import random
import select
import socket
import threading
import time
import tty
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class EmulatedDevice(Protocol):
    """What a server needs from a device model."""

    def receive(self, data: bytes, now_s: float) -> list[bytes]:
        """Feed request bytes (any split); return the reply frames they trigger, in wire order."""
        ...


class Transport(enum.Enum):
    PTY = "pty"
    TCP = "tcp"


class Fault(enum.Enum):
    GARBAGE = "garbage"
    SPLIT = "split"
    BAD_CRC = "bad_crc"
    SILENCE = "silence"


@dataclass
class FaultConfig:
    """Background behaviour of the line; `EmulatorServer.inject` adds deterministic one-off faults.

    Args:
        latency_s: delay before each reply frame (a servo's return delay plus adapter latency).
        rates: probability per reply frame of each fault, e.g. {Fault.GARBAGE: 0.05}.
        seed: seeds the fault and garbage generator, so a failing run can be replayed.
        garbage_max_bytes: GARBAGE writes 1..this many random bytes.
        split_pause_s: pause between the two parts of a SPLIT reply.
    """

    latency_s: float = 0.0
    rates: dict[Fault, float] = field(default_factory=dict)
    seed: int = 0
    garbage_max_bytes: int = 8
    split_pause_s: float = 0.002

    def __post_init__(self) -> None:
        for fault, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"fault rate for {fault.name} must be in [0, 1], got {rate}")
        if self.latency_s < 0:
            raise ValueError(f"latency_s must be >= 0, got {self.latency_s}")


class EmulatorServer:
    """Runs `device` behind a pty or TCP port on a background thread until `close()`."""

    def __init__(
        self,
        device: EmulatedDevice,
        transport: Transport = Transport.PTY,
        faults: FaultConfig | None = None,
    ) -> None:
        self.device = device
        self.transport = transport
        self.faults = faults or FaultConfig()
        self.fault_counts: Counter[Fault] = Counter()
        self.requests = 0  # chunks of request bytes received
        self.replies = 0  # reply frames produced by the device (sent or not)
        self._received = bytearray()  # request bytes since the last `take_received()`
        self._rng = random.Random(self.faults.seed)
        self._queued: deque[Fault] = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._client: socket.socket | None = None
        self.device_errors: list[Exception] = []  # exceptions the device raised (a bug); see close()
        if transport is Transport.PTY:
            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)  # no echo, no line editing: binary frames must pass untouched
            tty.setraw(self._master)
            self.url = os.ttyname(self._slave)
            target: Callable[[], None] = self._serve_pty
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self._listener.setblocking(False)
            self.url = f"socket://127.0.0.1:{self._listener.getsockname()[1]}"
            target = self._serve_tcp
        self._thread = threading.Thread(target=target, name=f"emulator-{transport.value}", daemon=True)
        self._thread.start()

    # ---- fault control -------------------------------------------------------------------------
    def inject(self, fault: Fault, count: int = 1) -> None:
        """Apply `fault` to each of the next `count` reply frames."""
        with self._lock:
            self._queued.extend([fault] * count)

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self._queued:
                return self._queued.popleft()
        for fault, rate in self.faults.rates.items():
            if rate and self._rng.random() < rate:
                return fault
        return None

    # ---- serving -------------------------------------------------------------------------------
    def take_received(self) -> bytes:
        """Request bytes the device received since the last call (for exact-traffic tests)."""
        with self._lock:
            data, self._received = bytes(self._received), bytearray()
        return data

    def _handle(self, data: bytes, send: Callable[[bytes], None]) -> None:
        self.requests += 1
        with self._lock:
            self._received += data
            if len(self._received) > 1 << 20:  # bounded: long benchmark runs never read it
                del self._received[: len(self._received) - (1 << 16)]
        try:
            frames = self.device.receive(data, time.monotonic())
        except Exception as exc:  # keep serving (the driver sees silence), re-raised by close()
            self.device_errors.append(exc)
            return
        for frame in frames:
            self.replies += 1
            fault = self._next_fault()
            if fault is not None:
                self.fault_counts[fault] += 1
            if self.faults.latency_s:
                time.sleep(self.faults.latency_s)
            if fault is Fault.SILENCE:
                continue
            if fault is Fault.BAD_CRC:
                frame = frame[:-1] + bytes((frame[-1] ^ 0xFF,))
            if fault is Fault.GARBAGE:
                n = self._rng.randint(1, self.faults.garbage_max_bytes)
                send(bytes(self._rng.getrandbits(8) for _ in range(n)))
            if fault is Fault.SPLIT and len(frame) > 1:
                cut = self._rng.randint(1, len(frame) - 1)
                send(frame[:cut])
                time.sleep(self.faults.split_pause_s)
                frame = frame[cut:]
            send(frame)

    def _write_master(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                select.select([], [self._master], [], 0.1)
                continue
            view = view[n:]

    def _serve_pty(self) -> None:
        while True:
            ready, _, _ = select.select([self._master, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                data = os.read(self._master, 4096)
            except OSError:  # EIO while no slave is open on some kernels
                time.sleep(0.001)
                continue
            if data:
                self._handle(data, self._write_master)

    def _serve_tcp(self) -> None:
        while True:
            watch = [self._listener, self._wake_r] + ([self._client] if self._client else [])
            ready, _, _ = select.select(watch, [], [])
            if self._wake_r in ready:
                return
            if self._listener in ready:
                client, _ = self._listener.accept()
                client.setblocking(True)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self._client is not None:  # a serial port has one user; the newest wins
                    self._client.close()
                self._client = client
                continue
            if self._client is not None and self._client in ready:
                try:
                    data = self._client.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._client.close()
                    self._client = None
                    continue
                client = self._client
                try:
                    self._handle(data, client.sendall)
                except OSError:  # the driver hung up while we replied
                    client.close()
                    self._client = None

    # ---- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread and release every fd and socket (idempotent).

        Raises if the device model raised while serving: an emulator bug must fail the test that
        met it, not hide behind a driver timeout.
        """
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5.0)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        if self.transport is Transport.PTY:
            os.close(self._master)
            os.close(self._slave)
        else:
            if self._client is not None:
                self._client.close()
            self._listener.close()
        if self.device_errors:
            raise RuntimeError(
                f"{type(self.device).__name__} raised {len(self.device_errors)} time(s) while serving; first: "
                f"{self.device_errors[0]!r}"
            ) from self.device_errors[0]

    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EmulatorServer({type(self.device).__name__}, {self.url!r})"
