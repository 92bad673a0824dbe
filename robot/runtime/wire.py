"""The explicit message format between actor and learner processes: a JSON header plus raw arrays.

Nothing received from a socket is unpickled: a frame is

    b"RSW1" | uint32 header length (little endian) | header (UTF-8 JSON) | array bytes ... | blob

The header names the message kind, carries small JSON metadata, and lists each array's name, dtype (a
short allow-list of plain numeric types, never object), shape and byte count; the decoder checks every
length against the frame before it builds an array, so a malformed or hostile frame is one `WireError`,
never code execution or a huge allocation. Weights travel as a safetensors blob (also a plain format:
a JSON header and tensor bytes).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAGIC = b"RSW1"
MAX_HEADER_BYTES = 1 << 16
MAX_FRAME_BYTES = 1 << 30
ALLOWED_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "|u1", "|b1"})


class WireError(ValueError):
    """A frame that does not follow the format (named: what was wrong, what was expected)."""


@dataclass
class Message:
    kind: str
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    blob: bytes = b""


def encode(kind: str, meta: dict[str, Any] | None = None, arrays: dict[str, np.ndarray] | None = None,
           blob: bytes = b"") -> bytes:
    parts, table = [], []
    for name, value in (arrays or {}).items():
        arr = np.ascontiguousarray(value)
        dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dtype.str not in ALLOWED_DTYPES:
            raise WireError(f"array {name!r}: dtype {arr.dtype} cannot be sent; allowed {sorted(ALLOWED_DTYPES)}")
        data = arr.astype(dtype, copy=False).tobytes()
        table.append([name, dtype.str, list(arr.shape), len(data)])
        parts.append(data)
    header = json.dumps({"kind": kind, "meta": meta or {}, "arrays": table, "blob": len(blob)}).encode()
    if len(header) > MAX_HEADER_BYTES:
        raise WireError(f"header of {len(header)} bytes exceeds {MAX_HEADER_BYTES}; send data as arrays")
    return b"".join([MAGIC, struct.pack("<I", len(header)), header, *parts, blob])


def decode(frame: bytes) -> Message:
    view = memoryview(frame)
    if len(view) < 8 or bytes(view[:4]) != MAGIC:
        raise WireError(f"frame does not start with {MAGIC!r} (got {bytes(view[:4])!r}); not a robot-stack peer")
    (header_len,) = struct.unpack("<I", view[4:8])
    if header_len > MAX_HEADER_BYTES or 8 + header_len > len(view):
        raise WireError(f"header length {header_len} does not fit the {len(view)}-byte frame")
    try:
        header = json.loads(bytes(view[8 : 8 + header_len]).decode())
        kind, meta, table, blob_len = header["kind"], header["meta"], header["arrays"], header["blob"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise WireError(f"header is not the expected JSON object ({err})") from None
    if not isinstance(kind, str) or not isinstance(meta, dict) or not isinstance(table, list):
        raise WireError("header: expected kind (str), meta (object), arrays (list)")
    offset, arrays = 8 + header_len, {}
    for entry in table:
        try:
            name, dtype, shape, nbytes = entry
            shape = tuple(int(s) for s in shape)
        except (TypeError, ValueError):
            raise WireError(f"array entry {entry!r}: expected [name, dtype, shape, nbytes]") from None
        if dtype not in ALLOWED_DTYPES or any(s < 0 for s in shape):
            raise WireError(f"array {name!r}: dtype {dtype!r} / shape {shape} not allowed")
        if int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize != nbytes or offset + nbytes > len(view):
            raise WireError(f"array {name!r}: {nbytes} bytes do not match shape {shape} {dtype} or the frame size")
        arrays[name] = np.frombuffer(view[offset : offset + nbytes], dtype=dtype).reshape(shape).copy()
        offset += nbytes
    if not isinstance(blob_len, int) or offset + blob_len != len(view):
        raise WireError(f"frame has {len(view) - offset} bytes after the arrays, header says {blob_len}")
    return Message(kind, meta, arrays, bytes(view[offset:]))


def weights_to_bytes(state_dict: dict) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in state_dict.items()})


def weights_from_bytes(blob: bytes) -> dict:
    from safetensors.torch import load

    try:
        return load(blob)
    except Exception as err:  # safetensors raises its own error types for malformed input
        raise WireError(f"weights blob is not a safetensors file ({err})") from None
