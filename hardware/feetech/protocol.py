"""Feetech SCS/STS codec: checksum, packet building, incremental parser, sign-magnitude values.

Packet (Dynamixel 1.0 style): `FF FF | ID | LEN | INST or ERR | params... | CHK`, LEN = params + 2,
CHK = ~(ID + LEN + INST + sum(params)) & 0xFF. STS/SMS servos (protocol 0) store multi-byte values
little-endian, SCS servos (protocol 1) big-endian. Signed registers use sign-magnitude with a
register-specific sign bit (15 for positions and speeds, 10 for load, 11 for the homing offset).
Reference: Feetech's scservo_sdk and the STS3215 memory table.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from hardware.errors import ChecksumError, FrameError
from hardware.stream_buffer import StreamBuffer

HEADER = b"\xff\xff"
BROADCAST_ID = 0xFE
MAX_ID = 0xFD
MIN_LEN = 2  # INST/ERR + CHK


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    RESET = 0x0A
    OFFSET_CALIBRATION = 0x0B
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83


class StatusBit(enum.IntFlag):
    """Error byte of a status packet: hardware conditions, not instruction errors."""

    VOLTAGE = 0x01
    ANGLE_SENSOR = 0x02
    OVERHEAT = 0x04
    OVERCURRENT = 0x08
    OVERLOAD = 0x20


def checksum(body: bytes | bytearray | memoryview) -> int:
    """`body` = ID, LEN, INST/ERR, params (everything between header and checksum)."""
    return ~sum(body) & 0xFF


def build_packet(device_id: int, code: int, params: bytes = b"") -> bytes:
    """Instruction packet (code = instruction) or status packet (code = error byte)."""
    if not 0 <= device_id <= BROADCAST_ID:
        raise ValueError(f"device_id must be in 0..{MAX_ID} or broadcast {BROADCAST_ID}, got {device_id}")
    length = len(params) + 2
    if length > 0xFF:
        raise ValueError(f"Feetech packets carry at most 253 parameter bytes, got {len(params)}")
    body = bytes((device_id, length, code)) + bytes(params)
    return HEADER + body + bytes((checksum(body),))


def ping(device_id: int) -> bytes:
    return build_packet(device_id, Instruction.PING)


def read(device_id: int, address: int, size: int) -> bytes:
    return build_packet(device_id, Instruction.READ, bytes((address, size)))


def write(device_id: int, address: int, data: bytes) -> bytes:
    return build_packet(device_id, Instruction.WRITE, bytes((address,)) + bytes(data))


def sync_read(address: int, size: int, ids: Sequence[int]) -> bytes:
    return build_packet(BROADCAST_ID, Instruction.SYNC_READ, bytes((address, size)) + bytes(ids))


def sync_write(address: int, size: int, data_by_id: Mapping[int, bytes]) -> bytes:
    params = bytearray((address, size))
    for device_id, data in data_by_id.items():
        if len(data) != size:
            raise ValueError(f"sync_write data for id {device_id} has {len(data)} bytes, expected {size}")
        params.append(device_id)
        params += data
    return build_packet(BROADCAST_ID, Instruction.SYNC_WRITE, bytes(params))


def status_size(n_data: int) -> int:
    return 6 + n_data


@dataclass(frozen=True)
class Packet:
    """A decoded frame; `code` is the instruction (requests) or the error byte (status)."""

    device_id: int
    code: int
    params: bytes
    raw: bytes

    @property
    def data(self) -> bytes:
        return self.params


class PacketParser(StreamBuffer):
    """Incremental parser with resync; same contract as the Dynamixel one.

    `next_packet()` returns a Packet, None when more bytes are needed, or raises ChecksumError /
    FrameError once per corrupt frame (after dropping its header, so parsing can continue).
    """

    def next_packet(self) -> Packet | None:
        buf = self._buf
        while True:
            start = buf.find(HEADER)
            if start < 0:
                self._drop(len(buf) - (1 if buf[-1:] == b"\xff" else 0))
                return None
            if start:
                self._drop(start)
            if len(buf) < 4:
                return None
            if buf[2] == 0xFF:  # FF FF FF: the header starts one byte later
                self._drop(1)
                continue
            break
        device_id, length = buf[2], buf[3]
        if length < MIN_LEN:
            self._drop(len(HEADER))
            raise FrameError(f"Feetech frame from id {device_id} has length {length}, minimum {MIN_LEN}; skipped")
        total = 4 + length
        if len(buf) < total:
            return None
        expected = checksum(buf[2 : total - 1])
        received = buf[total - 1]
        if expected != received:
            self._drop(len(HEADER))
            raise ChecksumError("Feetech", device_id, expected, received)
        raw = bytes(buf[:total])
        del buf[:total]
        return Packet(device_id, raw[4], raw[5:-1], raw)

    def needed(self, min_frame: int) -> int:
        """Bytes still missing for the frame in progress (see the Dynamixel parser)."""
        buf = self._buf
        if len(buf) >= 4 and buf.startswith(HEADER):
            return max(4 + buf[3] - len(buf), 1)
        return max(min_frame - len(buf), 1)

    def packets(self) -> list[Packet]:
        out = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out


def encode(value: int, size: int, sign_bit: int | None, big_endian: bool) -> bytes:
    """Sign-magnitude (when `sign_bit` is set) in the series' byte order; out-of-range raises."""
    value = int(value)
    if sign_bit is not None:
        magnitude = abs(value)
        if magnitude >= 1 << sign_bit:
            raise ValueError(f"|{value}| does not fit below sign bit {sign_bit} (max {(1 << sign_bit) - 1})")
        raw = magnitude | (1 << sign_bit) if value < 0 else magnitude
    else:
        raw = value
    if not 0 <= raw < 1 << (8 * size):
        raise ValueError(f"value {value} does not fit an unsigned {size}-byte register")
    return raw.to_bytes(size, "big" if big_endian else "little")


def decode(data: bytes, sign_bit: int | None, big_endian: bool) -> int:
    raw = int.from_bytes(data, "big" if big_endian else "little")
    if sign_bit is not None and raw & (1 << sign_bit):
        return -(raw & ((1 << sign_bit) - 1))
    return raw
