"""Wire format of the robot server API: length-prefixed JSON header + raw bytes over TCP. No pickle.

Every message, both ways:

    | header length (uint32, big-endian) | payload length (uint32, big-endian) | header (UTF-8 JSON object) | payload |

- The header carries the API version (``"version"``) in every message; a server answers a message of
  another version with an error and closes the connection, so client and server never misread each other.
- The payload is raw bytes described by the header (camera frames: ``uint8`` arrays, one after another,
  with their name, shape, offset and timestamp in ``header["frames"]``); it is never executed or unpickled,
  and dtypes come from a short whitelist.
- The first message of a connection is the handshake ``{"op": "hello", "api": API_NAME, "version": V,
  "token": T}``. The server compares the token in constant time (``hmac.compare_digest``) and answers
  ``{"ok": true, ...}`` or ``{"ok": false, "code": "auth" | "version" | ..., "error": "..."}`` and closes.
- Replies: ``{"ok": true, ...}`` or ``{"ok": false, "code": ..., "error": "one line"}``.

Sizes are bounded (``MAX_HEADER_BYTES``, ``MAX_PAYLOAD_BYTES``) so a broken or hostile peer cannot make the
other side allocate without limit.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

import numpy as np

API_NAME = "robot-server"
API_VERSION = 1
MAX_HEADER_BYTES = 1 << 16
MAX_PAYLOAD_BYTES = 1 << 26
ARRAY_DTYPES = ("uint8", "float32")
"""dtypes a payload array may have (anything else is refused)."""
_PREFIX = struct.Struct("!II")


class ProtocolError(Exception):
    """A message that does not follow the wire format (size, JSON, fields)."""


class ApiError(Exception):
    """The server refused a request; ``code`` says why ("auth", "version", "bad_request", "stopped", ...)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AuthError(ApiError):
    """Missing or wrong token."""


class VersionMismatchError(ApiError):
    """Client and server speak different API versions."""


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    """Send one message; ``header`` gets the API version if it has none."""
    header.setdefault("version", API_VERSION)
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_HEADER_BYTES or len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"message too large: header {len(raw)} B (max {MAX_HEADER_BYTES}), "
                            f"payload {len(payload)} B (max {MAX_PAYLOAD_BYTES})")
    sock.sendall(_PREFIX.pack(len(raw), len(payload)) + raw)
    if len(payload):
        sock.sendall(payload)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    """Receive one message: (header dict, payload bytes). Raises ConnectionError on a closed socket."""
    header_len, payload_len = _PREFIX.unpack(_recv_exact(sock, _PREFIX.size))
    if header_len > MAX_HEADER_BYTES or payload_len > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"message too large: header {header_len} B (max {MAX_HEADER_BYTES}), "
                            f"payload {payload_len} B (max {MAX_PAYLOAD_BYTES})")
    raw = _recv_exact(sock, header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProtocolError("message header is not UTF-8 JSON (this API never accepts pickle or other "
                            "binary headers)") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"message header must be a JSON object, got {type(header).__name__}")
    payload = _recv_exact(sock, payload_len) if payload_len else b""
    return header, payload


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("connection closed by peer")
        got += k
    return bytes(buf)


def pack_arrays(arrays: list[tuple[str, np.ndarray, float]]) -> tuple[list[dict[str, Any]], bytes]:
    """(name, array, timestamp) -> header entries and one payload (arrays back to back, C order)."""
    entries, chunks, offset = [], [], 0
    for name, array, timestamp in arrays:
        array = np.ascontiguousarray(array)
        if array.dtype.name not in ARRAY_DTYPES:
            raise ProtocolError(f"array {name!r} has dtype {array.dtype}; the API sends only {ARRAY_DTYPES}")
        entries.append({"name": name, "shape": list(array.shape), "dtype": array.dtype.name, "offset": offset,
                        "nbytes": array.nbytes, "timestamp_s": timestamp})
        chunks.append(array.tobytes())
        offset += array.nbytes
    return entries, b"".join(chunks)


def unpack_arrays(entries: list[dict[str, Any]], payload: bytes) -> dict[str, tuple[np.ndarray, float]]:
    """Inverse of ``pack_arrays``: name -> (array (read-only view of the payload), timestamp)."""
    out = {}
    for entry in entries:
        try:
            name, shape, dtype = str(entry["name"]), tuple(int(s) for s in entry["shape"]), entry["dtype"]
            offset, nbytes = int(entry["offset"]), int(entry["nbytes"])
        except (KeyError, TypeError, ValueError):
            raise ProtocolError(f"bad array entry {entry!r}") from None
        if dtype not in ARRAY_DTYPES:
            raise ProtocolError(f"array {name!r} has dtype {dtype!r}; accepted: {ARRAY_DTYPES}")
        count = int(np.prod(shape)) if shape else 1
        if count * np.dtype(dtype).itemsize != nbytes or offset < 0 or offset + nbytes > len(payload):
            raise ProtocolError(f"array {name!r}: shape {shape} {dtype} does not fit {nbytes} B at {offset} "
                                f"in a {len(payload)} B payload")
        array = np.frombuffer(payload, dtype=dtype, count=count, offset=offset).reshape(shape)
        out[name] = (array, float(entry.get("timestamp_s", 0.0)))
    return out
