"""Opening serial ports through pyserial urls, and the byte-time arithmetic every bus needs.

Every driver goes through `open_port`, so a real adapter (`/dev/ttyUSB0`), an emulator on a
pseudo-terminal (its slave path), an emulator on TCP (`socket://127.0.0.1:PORT`), a loopback
(`loop://`) or a remote port (`rfc2217://host:port`) are the same configuration field.
"""

from __future__ import annotations

import logging
import socket

import serial

from hardware.errors import PortOpenError

logger = logging.getLogger(__name__)

BITS_PER_BYTE = 10  # 8N1: start + 8 data + stop


def wire_time_s(n_bytes: int, baudrate: int) -> float:
    """Time that `n_bytes` occupy the wire at `baudrate` (zero-cost on pty/TCP, real on RS-485)."""
    return n_bytes * BITS_PER_BYTE / baudrate


def open_port(url: str, baudrate: int, timeout_s: float) -> serial.SerialBase:
    """Open `url` with `serial.serial_for_url`; a failure names the url and the usual fixes.

    `timeout_s` is pyserial's per-`read` timeout: a read returns early once it has the bytes it
    asked for, so it only costs time when the device is silent.
    """
    try:
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=timeout_s, write_timeout=1.0)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise PortOpenError(
            f"could not open serial port {url!r} at {baudrate} baud: {exc}. Check that the device is "
            "plugged in, the path or url is right, and the user may open it (dialout group on Linux)."
        ) from exc
    sock = getattr(port, "_socket", None)
    if isinstance(sock, socket.socket):
        # pyserial's socket:// handler leaves Nagle on; a request written right after a write that
        # gets no reply (sync write) would then wait for a delayed ACK (~40 ms on Linux).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return port


def read_some(port: serial.SerialBase, at_least: int) -> bytes:
    """Read `at_least` bytes (or what arrived before the port timeout), plus whatever is waiting."""
    waiting = port.in_waiting
    return port.read(max(at_least, waiting, 1))


def close_quietly(port: serial.SerialBase | None) -> None:
    """Close a port during teardown; a port already gone (unplugged, emulator closed) is not an error."""
    if port is None:
        return
    try:
        port.close()
    except (serial.SerialException, OSError) as exc:
        logger.debug("ignored error while closing %s: %s", port.port, exc)
