"""The receive buffer every serial protocol parser shares: bytes in, resynchronisation by dropping."""

from __future__ import annotations


class StreamBuffer:
    """Bytes received but not yet parsed, and how many were thrown away while looking for a frame.

    Protocol parsers subclass it and implement their own `next_packet`/`next_frame`; garbage on the line
    (noise, a half frame after a reconnect) is dropped with `_drop`, counted in `discarded_bytes`, so a
    driver can report line quality.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.discarded_bytes = 0

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self.discarded_bytes += n
