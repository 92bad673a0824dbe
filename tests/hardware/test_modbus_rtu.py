"""Modbus RTU codec and Robotiq register packing against the reference frames (2.3)."""

import pytest

from hardware.errors import ChecksumError
from hardware.robotiq import modbus_rtu
from hardware.robotiq.modbus_rtu import FrameParser, FunctionCode, Role
from hardware.robotiq.registers import (
    ActivationStatus,
    GripperCommand,
    GripperFault,
    GripperStatus,
    ObjectStatus,
)

RESET = bytes.fromhex("09 10 03 E8 00 03 06 00 00 00 00 00 00 73 30")
ACTIVATE = bytes.fromhex("09 10 03 E8 00 03 06 01 00 00 00 00 00 72 E1")
READ_1 = bytes.fromhex("09 03 07 D0 00 01 85 CF")
READ_1_REPLY_ACTIVATED = bytes.fromhex("09 03 02 31 00 4C 15")
CLOSE_FULL = bytes.fromhex("09 10 03 E8 00 03 06 09 00 00 FF FF FF 42 29")
OPEN_FULL = bytes.fromhex("09 10 03 E8 00 03 06 09 00 00 00 FF FF 72 19")
READ_3 = bytes.fromhex("09 03 07 D0 00 03 04 0E")


def test_crc_check_value():
    assert modbus_rtu.crc16(b"123456789") == 0x4B37


@pytest.mark.parametrize(
    "command, frame",
    [
        (GripperCommand(activate=False, go_to=False, position=0, speed=0, force=0), RESET),
        (GripperCommand(activate=True, go_to=False, position=0, speed=0, force=0), ACTIVATE),
        (GripperCommand(position=255, speed=255, force=255), CLOSE_FULL),
        (GripperCommand(position=0, speed=255, force=255), OPEN_FULL),
    ],
    ids=["reset", "activate", "close-full", "open-full"],
)
def test_write_frames_match_reference(command, frame):
    assert modbus_rtu.write_registers_request(9, 0x03E8, command.to_bytes()) == frame


@pytest.mark.parametrize("count, frame", [(1, READ_1), (3, READ_3)], ids=["one-register", "three-registers"])
def test_read_frames_match_reference(count, frame):
    assert modbus_rtu.read_registers_request(9, 0x07D0, count) == frame


def test_status_reply_decodes_as_activated():
    parser = FrameParser(Role.RESPONSE, slave=9)
    parser.feed(READ_1_REPLY_ACTIVATED)
    frame = parser.next_packet()
    assert frame.function == FunctionCode.READ_HOLDING_REGISTERS
    status = GripperStatus.from_bytes(frame.read_payload() + bytes(4))
    assert status.activated and status.activation is ActivationStatus.ACTIVATED
    assert status.fault is GripperFault.NONE


def test_status_round_trip_with_object_and_fault():
    status = GripperStatus(True, True, ActivationStatus.ACTIVATED, ObjectStatus.CONTACT_CLOSING,
                           GripperFault.NO_COMMUNICATION, 0, 255, 180, 0.24)
    assert GripperStatus.from_bytes(status.to_bytes()) == status
    assert status.to_bytes()[0] == 0b1011_1001  # gOBJ 2, gSTA 3, gGTO, gACT


@pytest.mark.parametrize(
    "frame, role",
    [(RESET, Role.REQUEST), (READ_3, Role.REQUEST), (READ_1_REPLY_ACTIVATED, Role.RESPONSE),
     (modbus_rtu.write_registers_response(9, 0x03E8, 3), Role.RESPONSE),
     (modbus_rtu.exception_response(9, 3, modbus_rtu.ExceptionCode.ILLEGAL_DATA_ADDRESS), Role.RESPONSE)],
    ids=["fc16-request", "fc03-request", "fc03-response", "fc16-response", "exception-response"],
)
def test_parser_finds_frames_after_garbage_in_any_split(frame, role):
    stream = b"\x00\x09\x77" + frame
    parser = FrameParser(role, slave=9)
    found = []
    for b in stream:
        parser.feed(bytes((b,)))
        try:
            found += parser.packets()
        except ChecksumError:
            continue
    assert len(found) == 1 and modbus_rtu.with_crc(bytes((found[0].slave, found[0].function)) + found[0].data) == frame


def test_bad_crc_is_reported():
    parser = FrameParser(Role.REQUEST)
    parser.feed(READ_1[:-1] + b"\x00")
    with pytest.raises(ChecksumError, match="Modbus RTU"):
        parser.next_packet()


def test_command_field_out_of_range_names_the_field():
    with pytest.raises(ValueError, match="force must be in 0..255, got 300"):
        GripperCommand(force=300).to_bytes()
