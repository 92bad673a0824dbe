"""Dynamixel Protocol 2.0 codec: CRC-16, byte stuffing, packet building and an incremental parser.

Pure functions over bytes, no I/O; the bus driver and the emulator both use them, in opposite roles.

Packet: `FF FF FD 00 | ID | LEN_L LEN_H | INST | params... | CRC_L CRC_H`, LEN = bytes after the
length field (instruction + stuffed params + CRC). Status packets have INST 0x55 and an error byte
as first parameter. Multi-byte fields are little-endian.
Spec: https://emanual.robotis.com/docs/en/dxl/protocol2/
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from hardware.errors import ChecksumError, FrameError
from hardware.stream_buffer import StreamBuffer

HEADER = b"\xff\xff\xfd\x00"
STUFF_PATTERN = b"\xff\xff\xfd"
BROADCAST_ID = 0xFE
MAX_ID = 0xFC
MIN_STATUS_LEN = 4  # INST + ERR + CRC(2)
MIN_INSTRUCTION_LEN = 3  # INST + CRC(2)
# Largest LEN accepted by the parser. A sync write to all 253 ids of 4-byte data is ~1.3 kB; a corrupt
# length beyond this is rejected at once instead of stalling the parser until that many bytes arrive.
MAX_PACKET_LEN = 4096


class Instruction(enum.IntEnum):
    PING = 0x01
    READ = 0x02
    WRITE = 0x03
    REG_WRITE = 0x04
    ACTION = 0x05
    FACTORY_RESET = 0x06
    REBOOT = 0x08
    CLEAR = 0x10
    STATUS = 0x55
    SYNC_READ = 0x82
    SYNC_WRITE = 0x83
    FAST_SYNC_READ = 0x8A
    BULK_READ = 0x92
    BULK_WRITE = 0x93
    FAST_BULK_READ = 0x9A


class StatusError(enum.IntEnum):
    """Low 7 bits of a status packet's error byte (a number, not flags)."""

    NONE = 0
    RESULT_FAIL = 1
    INSTRUCTION = 2
    CRC = 3
    DATA_RANGE = 4
    DATA_LENGTH = 5
    DATA_LIMIT = 6
    ACCESS = 7


ALERT_BIT = 0x80  # set when Hardware_Error_Status (70) is non-zero


def _make_crc_table() -> tuple[int, ...]:
    # CRC-16/BUYPASS: polynomial 0x8005, init 0, not reflected, no final xor.
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    """CRC-16 of Protocol 2.0, computed over header..last (stuffed) parameter."""
    table = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) ^ table[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert 0xFD after every `FF FF FD` in instruction+params so no header appears inside a packet.

    `bytes.replace` is exact here: the pattern cannot overlap itself (it would need FD == FF).
    """
    return body.replace(STUFF_PATTERN, STUFF_PATTERN + b"\xfd")


def unstuff(body: bytes) -> bytes:
    """Inverse of `stuff`: `FF FF FD FD` -> `FF FF FD` (also non-self-overlapping)."""
    return body.replace(STUFF_PATTERN + b"\xfd", STUFF_PATTERN)


def build_packet(device_id: int, instruction: int, params: bytes = b"") -> bytes:
    """A complete packet (instruction or status) with stuffing, length and CRC."""
    if not 0 <= device_id <= BROADCAST_ID:
        raise ValueError(f"device_id must be in 0..{MAX_ID} or broadcast {BROADCAST_ID}, got {device_id}")
    body = stuff(bytes((instruction,)) + bytes(params))
    length = len(body) + 2
    if length > MAX_PACKET_LEN:
        raise ValueError(f"packet of {length} bytes exceeds MAX_PACKET_LEN {MAX_PACKET_LEN}")
    head = HEADER + bytes((device_id, length & 0xFF, length >> 8))
    crc = crc16(head + body)
    return head + body + bytes((crc & 0xFF, crc >> 8))


def build_status(device_id: int, error: int, params: bytes = b"") -> bytes:
    return build_packet(device_id, Instruction.STATUS, bytes((error & 0xFF,)) + bytes(params))


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def ping(device_id: int) -> bytes:
    return build_packet(device_id, Instruction.PING)


def read(device_id: int, address: int, size: int) -> bytes:
    return build_packet(device_id, Instruction.READ, _u16(address) + _u16(size))


def write(device_id: int, address: int, data: bytes) -> bytes:
    return build_packet(device_id, Instruction.WRITE, _u16(address) + bytes(data))


def reboot(device_id: int) -> bytes:
    return build_packet(device_id, Instruction.REBOOT)


def sync_read(address: int, size: int, ids: Sequence[int]) -> bytes:
    """One status packet comes back per id, in the order listed."""
    return build_packet(BROADCAST_ID, Instruction.SYNC_READ, _u16(address) + _u16(size) + bytes(ids))


def sync_write(address: int, size: int, data_by_id: Mapping[int, bytes]) -> bytes:
    params = bytearray(_u16(address) + _u16(size))
    for device_id, data in data_by_id.items():
        if len(data) != size:
            raise ValueError(f"sync_write data for id {device_id} has {len(data)} bytes, expected {size}")
        params.append(device_id)
        params += data
    return build_packet(BROADCAST_ID, Instruction.SYNC_WRITE, bytes(params))


def bulk_read(items: Iterable[tuple[int, int, int]]) -> bytes:
    """`items` = (id, address, size); each id at most once (the protocol's rule)."""
    params = bytearray()
    for device_id, address, size in items:
        params.append(device_id)
        params += _u16(address) + _u16(size)
    return build_packet(BROADCAST_ID, Instruction.BULK_READ, bytes(params))


def bulk_write(items: Iterable[tuple[int, int, bytes]]) -> bytes:
    params = bytearray()
    for device_id, address, data in items:
        params.append(device_id)
        params += _u16(address) + _u16(len(data)) + bytes(data)
    return build_packet(BROADCAST_ID, Instruction.BULK_WRITE, bytes(params))


@dataclass(frozen=True)
class Packet:
    """One decoded packet; `params` are unstuffed. For status packets `error` is split off."""

    device_id: int
    instruction: int
    params: bytes

    @property
    def is_status(self) -> bool:
        return self.instruction == Instruction.STATUS

    @property
    def error(self) -> int:
        """The status error byte (only meaningful for status packets)."""
        return self.params[0] if self.is_status else 0

    @property
    def data(self) -> bytes:
        """Status payload after the error byte; instruction params otherwise."""
        return self.params[1:] if self.is_status else self.params


class PacketParser(StreamBuffer):
    """Incremental parser over a byte stream that may hold garbage, split frames and corrupt frames.

    `feed()` bytes as they arrive, then call `next_packet()` until it returns None (needs more bytes).
    A corrupt frame raises `ChecksumError`/`FrameError` once and is skipped, so calling again continues
    with whatever follows; bytes that cannot start a packet are dropped and counted in
    `discarded_bytes`. After a bad frame only its header is dropped, so a good packet hidden behind
    a corrupt header (e.g. after a truncated frame) is still found.
    """

    def next_packet(self) -> Packet | None:
        buf = self._buf
        start = buf.find(HEADER)
        if start < 0:
            # Keep a possible partial header at the end (up to 3 bytes of FF FF FD).
            keep = 0
            for k in (3, 2, 1):
                if len(buf) >= k and buf[-k:] == HEADER[:k]:
                    keep = k
                    break
            if len(buf) > keep:
                self._drop(len(buf) - keep)
            return None
        if start:
            self._drop(start)
        if len(buf) < 7:
            return None
        device_id = buf[4]
        length = buf[5] | (buf[6] << 8)
        if length < MIN_INSTRUCTION_LEN or length > MAX_PACKET_LEN or device_id > BROADCAST_ID:
            self._drop(len(HEADER))
            raise FrameError(
                f"Protocol 2.0 header with impossible id {device_id} or length {length} "
                f"(expected id <= {BROADCAST_ID}, length {MIN_INSTRUCTION_LEN}..{MAX_PACKET_LEN}); skipped"
            )
        total = 7 + length
        if len(buf) < total:
            return None
        frame = bytes(buf[:total])
        expected = crc16(frame[:-2])
        received = frame[-2] | (frame[-1] << 8)
        if expected != received:
            self._drop(len(HEADER))
            raise ChecksumError("Protocol 2.0", device_id, expected, received)
        del buf[:total]
        body = unstuff(frame[7:-2])
        instruction = body[0]
        if instruction == Instruction.STATUS and len(body) < 2:
            raise FrameError(f"status packet from id {device_id} has no error byte")
        return Packet(device_id, instruction, body[1:])

    def needed(self, min_frame: int) -> int:
        """Bytes still missing for the frame in progress (call after `next_packet` returned None).

        Once the length field is in, this is exact; before that, `min_frame` bounds it from below.
        Readers ask for exactly this much, so they never wait for bytes a short reply (an error
        status) will not send.
        """
        buf = self._buf
        if len(buf) >= 7 and buf.startswith(HEADER):
            return max(7 + (buf[5] | buf[6] << 8) - len(buf), 1)
        return max(min_frame - len(buf), 1)

    def packets(self) -> list[Packet]:
        """All complete packets buffered so far; raises on the first corrupt frame (see class doc)."""
        out = []
        while (packet := self.next_packet()) is not None:
            out.append(packet)
        return out


def status_size(n_data: int) -> int:
    """Bytes of a status packet carrying `n_data` bytes, before any stuffing (stuffing only adds)."""
    return 11 + n_data


def encode(value: int, size: int, signed: bool) -> bytes:
    """Little-endian, two's complement for signed registers; out-of-range values raise."""
    try:
        return int(value).to_bytes(size, "little", signed=signed)
    except OverflowError as exc:
        kind = "a signed" if signed else "an unsigned"
        raise ValueError(f"value {value} does not fit {kind} register of {size} bytes") from exc


def decode(data: bytes, signed: bool) -> int:
    return int.from_bytes(data, "little", signed=signed)
