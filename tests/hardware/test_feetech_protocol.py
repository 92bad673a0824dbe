"""Feetech codec: checksum vector, sign-magnitude per register, byte order per series."""

import pytest

from hardware.errors import ChecksumError
from hardware.feetech import protocol
from hardware.feetech.protocol import PacketParser
from hardware.feetech.tables import STS_TABLE, Model, Reg

PING_1 = bytes.fromhex("FF FF 01 02 01 FB")


def test_ping_reference_vector():
    assert protocol.ping(1) == PING_1
    assert protocol.checksum(PING_1[2:-1]) == 0xFB


def test_read_and_sync_frames_have_valid_checksums():
    for frame in (protocol.read(1, 56, 2), protocol.sync_read(56, 2, [1, 2, 3]),
                  protocol.sync_write(42, 2, {1: b"\x00\x08", 2: b"\x00\x04"})):
        parser = PacketParser()
        parser.feed(frame)
        assert parser.next_packet().raw == frame


@pytest.mark.parametrize(
    "reg, value, raw_le",
    [
        (Reg.GOAL_POSITION, -1, "01 80"),
        (Reg.GOAL_POSITION, -32767, "FF FF"),
        (Reg.GOAL_POSITION, 32767, "FF 7F"),
        (Reg.PRESENT_LOAD, -1023, "FF 07"),
        (Reg.HOMING_OFFSET, -2047, "FF 0F"),
        (Reg.HOMING_OFFSET, 2047, "FF 07"),
    ],
    ids=["position-minus-1", "position-min", "position-max", "load-min-bit10", "offset-min-bit11",
         "offset-max-bit11"],
)
def test_sign_magnitude_at_limits(reg, value, raw_le):
    spec = STS_TABLE[reg]
    raw = bytes.fromhex(raw_le)
    assert protocol.encode(value, spec.size, spec.sign_bit, big_endian=False) == raw
    assert protocol.decode(raw, spec.sign_bit, big_endian=False) == value


@pytest.mark.parametrize("reg, value", [(Reg.HOMING_OFFSET, 2048), (Reg.PRESENT_LOAD, -1024)],
                         ids=["offset-overflow", "load-overflow"])
def test_sign_magnitude_overflow_raises(reg, value):
    spec = STS_TABLE[reg]
    with pytest.raises(ValueError, match=f"sign bit {spec.sign_bit}"):
        protocol.encode(value, spec.size, spec.sign_bit, big_endian=False)


@pytest.mark.parametrize("model, raw", [(Model.STS3215, "00 02"), (Model.SCS0009, "02 00")],
                         ids=["sts-little-endian", "scs-big-endian"])
def test_byte_order_per_series(model, raw):
    spec = model.info.table[Reg.GOAL_POSITION]
    big = model.info.series.big_endian
    assert protocol.encode(512, spec.size, spec.sign_bit, big) == bytes.fromhex(raw)
    assert protocol.decode(bytes.fromhex(raw), spec.sign_bit, big) == 512


def test_parser_resyncs_on_garbage_and_triple_ff():
    status = protocol.build_packet(1, 0, b"\x00\x08")
    parser = PacketParser()
    parser.feed(b"\x12\xff" + b"\xff\xff" + status)  # FF FF FF FF header run
    assert parser.next_packet().params == b"\x00\x08"


def test_bad_checksum_is_reported_then_parsing_continues():
    bad = PING_1[:-1] + b"\x00"
    parser = PacketParser()
    parser.feed(bad + PING_1)
    with pytest.raises(ChecksumError, match="Feetech frame from id 1"):
        parser.next_packet()
    assert parser.next_packet().raw == PING_1
