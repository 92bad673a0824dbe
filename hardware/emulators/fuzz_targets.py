"""Fuzz targets for every byte parser and every emulated device, shared by tests and the benchmark.

Contract checked: any bytes, split anywhere, either decode or raise a `ProtocolError` subclass
(reported and skipped); nothing else escapes, and a parser always makes progress. Device targets
also receive structurally valid frames with random content, which reach the instruction handlers
that random bytes almost never reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from hardware.dynamixel import protocol as dxl
from hardware.dynamixel.tables import Model as DxlModel
from hardware.emulators.dynamixel import DynamixelBusEmulator
from hardware.emulators.feetech import FeetechBusEmulator
from hardware.emulators.robotiq import Robotiq2FEmulator
from hardware.errors import ProtocolError
from hardware.feetech import protocol as fts
from hardware.feetech.tables import Model as FtsModel
from hardware.robotiq import modbus_rtu
from hardware.robotiq.registers import GripperStatus


class FuzzFailure(AssertionError):
    """A target broke the contract in a way that is not an exception (no progress, bad output)."""


@dataclass
class Outcome:
    packets: int = 0  # frames decoded (or device replies produced)
    reported: int = 0  # ProtocolErrors raised and skipped


def split(data: bytes, cuts: Sequence[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def drain(parser: Any, data: bytes, cuts: Sequence[int]) -> Outcome:
    """Feed `data` in pieces and pull packets until the parser needs more bytes."""
    out = Outcome()
    for chunk in split(data, cuts):
        parser.feed(chunk)
        for _ in range(parser.buffered + 2):  # every call consumes bytes or returns None
            try:
                packet = parser.next_packet()
            except ProtocolError:
                out.reported += 1
                continue
            if packet is None:
                break
            out.packets += 1
        else:
            raise FuzzFailure(f"{type(parser).__name__} made no progress on {parser.buffered} buffered bytes")
    return out


def _device(make: Callable[[], Any]) -> Callable[[bytes, Sequence[int]], Outcome]:
    def target(data: bytes, cuts: Sequence[int]) -> Outcome:
        device = make()
        out = Outcome()
        for i, chunk in enumerate(split(data, cuts)):
            replies = device.receive(chunk, now_s=float(i) * 0.01)
            if not all(isinstance(r, bytes) for r in replies):
                raise FuzzFailure(f"{type(device).__name__} produced a non-bytes reply")
            out.packets += len(replies)
        return out

    return target


def _dxl_bus() -> DynamixelBusEmulator:
    return DynamixelBusEmulator.with_models({1: DxlModel.XM430_W350, 2: DxlModel.XL430_W250,
                                             3: DxlModel.XL330_M288})


def _fts_bus() -> FeetechBusEmulator:
    return FeetechBusEmulator.with_models({1: FtsModel.STS3215, 2: FtsModel.SCS0009})


# Framed targets pick a known instruction, so the content (not the opcode) is what is random;
# unknown opcodes are covered by the raw targets.
_DXL_INSTRUCTIONS = list(dxl.Instruction)
_FTS_INSTRUCTIONS = list(fts.Instruction)
_MODBUS_FUNCTIONS = [3, 4, 16, 1, 6, 0x2B]


def _framed_dxl(data: bytes) -> bytes:
    """Bytes -> a valid Protocol 2.0 frame: [id, instruction, params...]; ids folded onto the bus."""
    if len(data) < 2:
        return data
    device_id = dxl.BROADCAST_ID if data[0] & 0x80 else data[0] % 4
    return dxl.build_packet(device_id, _DXL_INSTRUCTIONS[data[1] % len(_DXL_INSTRUCTIONS)], data[2:])


def _framed_fts(data: bytes) -> bytes:
    if len(data) < 2:
        return data
    device_id = fts.BROADCAST_ID if data[0] & 0x80 else data[0] % 3
    return fts.build_packet(device_id, _FTS_INSTRUCTIONS[data[1] % len(_FTS_INSTRUCTIONS)], data[2:253])


def _framed_modbus(data: bytes) -> bytes:
    if len(data) < 1:
        return data
    function = _MODBUS_FUNCTIONS[data[0] % len(_MODBUS_FUNCTIONS)]
    return modbus_rtu.with_crc(bytes((9, function)) + data[1:250])


def _status_bytes(data: bytes, cuts: Sequence[int]) -> Outcome:
    GripperStatus.from_bytes(data[:6].ljust(6, b"\x00"))
    return Outcome(packets=1)


def _framed(encode: Callable[[bytes], bytes], target: Callable[[bytes, Sequence[int]], Outcome]
            ) -> Callable[[bytes, Sequence[int]], Outcome]:
    return lambda data, cuts: target(encode(data), cuts)


_dxl_device = _device(_dxl_bus)
_fts_device = _device(_fts_bus)
_robotiq_device = _device(Robotiq2FEmulator)

TARGETS: dict[str, Callable[[bytes, Sequence[int]], Outcome]] = {
    "dynamixel.PacketParser": lambda d, c: drain(dxl.PacketParser(), d, c),
    "feetech.PacketParser": lambda d, c: drain(fts.PacketParser(), d, c),
    "modbus.FrameParser(request)": lambda d, c: drain(modbus_rtu.FrameParser(modbus_rtu.Role.REQUEST), d, c),
    "modbus.FrameParser(response)": lambda d, c: drain(
        modbus_rtu.FrameParser(modbus_rtu.Role.RESPONSE, slave=9), d, c
    ),
    "robotiq.GripperStatus.from_bytes": _status_bytes,
    "emulator.dynamixel(raw)": _dxl_device,
    "emulator.dynamixel(framed)": _framed(_framed_dxl, _dxl_device),
    "emulator.feetech(raw)": _fts_device,
    "emulator.feetech(framed)": _framed(_framed_fts, _fts_device),
    "emulator.robotiq(raw)": _robotiq_device,
    "emulator.robotiq(framed)": _framed(_framed_modbus, _robotiq_device),
}
