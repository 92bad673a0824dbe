"""Protocol 2.0 codec against the verified reference vectors (controllers-hardware.md, 2.1)."""

import pytest

from hardware.dynamixel import protocol
from hardware.dynamixel.protocol import Instruction, PacketParser
from hardware.errors import ChecksumError, FrameError

PING_1 = bytes.fromhex("FF FF FD 00 01 03 00 01 19 4E")
WRITE_1_GOAL_512 = bytes.fromhex("FF FF FD 00 01 09 00 03 74 00 00 02 00 00 CA 89")
READ_1_PRESENT_POSITION = bytes.fromhex("FF FF FD 00 01 07 00 02 84 00 04 00 1D 15")


def test_crc16_check_value():
    assert protocol.crc16(b"123456789") == 0xFEE8


@pytest.mark.parametrize(
    "built, expected",
    [
        (protocol.ping(1), PING_1),
        (protocol.write(1, 116, (512).to_bytes(4, "little")), WRITE_1_GOAL_512),
        (protocol.read(1, 132, 4), READ_1_PRESENT_POSITION),
    ],
    ids=["ping-id1", "write-id1-goal-position-512", "read-id1-present-position"],
)
def test_builders_match_reference_bytes(built, expected):
    assert built == expected


@pytest.mark.parametrize(
    "frame, instruction, params",
    [
        (PING_1, Instruction.PING, b""),
        (WRITE_1_GOAL_512, Instruction.WRITE, bytes.fromhex("74 00 00 02 00 00")),
        (READ_1_PRESENT_POSITION, Instruction.READ, bytes.fromhex("84 00 04 00")),
    ],
    ids=["ping", "write", "read"],
)
def test_parser_decodes_reference_frames(frame, instruction, params):
    parser = PacketParser()
    parser.feed(frame)
    packet = parser.next_packet()
    assert (packet.device_id, packet.instruction, packet.params) == (1, instruction, params)
    assert parser.next_packet() is None


@pytest.mark.parametrize(
    "body, stuffed",
    [
        (bytes.fromhex("FF FF FD"), bytes.fromhex("FF FF FD FD")),
        (bytes.fromhex("FF FF FD FD"), bytes.fromhex("FF FF FD FD FD")),
        (bytes.fromhex("FF FF FF FD"), bytes.fromhex("FF FF FF FD FD")),
        (bytes.fromhex("00 FF FD FF"), bytes.fromhex("00 FF FD FF")),
    ],
    ids=["pattern", "pattern-then-FD", "pattern-after-FF", "no-pattern"],
)
def test_stuffing_vectors_round_trip(body, stuffed):
    assert protocol.stuff(body) == stuffed
    assert protocol.unstuff(stuffed) == body


def test_stuffed_param_survives_the_wire_and_counts_in_length():
    # Goal position 0x00FDFFFF puts FF FF FD into the params.
    packet = protocol.write(3, 116, bytes.fromhex("FF FF FD 00"))
    length = packet[5] | packet[6] << 8
    assert length == len(packet) - 7
    assert b"\xff\xff\xfd\xfd" in packet[7:]
    parser = PacketParser()
    parser.feed(packet)
    assert parser.next_packet().params == bytes.fromhex("74 00 FF FF FD 00")


def test_status_packet_error_and_data():
    status = protocol.build_status(1, 0x80 | 0x07, b"\x01\x02")
    parser = PacketParser()
    parser.feed(status)
    packet = parser.next_packet()
    assert packet.is_status and packet.error == 0x87 and packet.data == b"\x01\x02"
    assert len(protocol.build_status(1, 0, b"\x00" * 4)) == protocol.status_size(4)


def test_parser_resyncs_after_garbage_and_split_frames():
    parser = PacketParser()
    stream = b"\x00\xff\x13\xfd" + PING_1 + READ_1_PRESENT_POSITION
    for i in range(len(stream)):  # one byte at a time: every split point
        parser.feed(stream[i : i + 1])
    assert [p.instruction for p in parser.packets()] == [Instruction.PING, Instruction.READ]
    assert parser.discarded_bytes == 4


def test_bad_crc_is_reported_then_parsing_continues():
    corrupt = PING_1[:-1] + bytes((PING_1[-1] ^ 0xFF,))
    parser = PacketParser()
    parser.feed(corrupt + READ_1_PRESENT_POSITION)
    with pytest.raises(ChecksumError, match="id 1"):
        parser.next_packet()
    assert parser.next_packet().instruction == Instruction.READ


def test_truncated_frame_does_not_hide_the_next_one():
    parser = PacketParser()
    parser.feed(WRITE_1_GOAL_512[:9] + PING_1 + PING_1)
    packets = []
    while True:
        try:
            packet = parser.next_packet()
        except ChecksumError:
            continue
        if packet is None:
            break
        packets.append(packet)
    # Only the truncated frame's header is dropped after its CRC fails, so both pings it swallowed
    # while waiting for its claimed length are found on the rescan.
    assert [p.instruction for p in packets] == [Instruction.PING, Instruction.PING]


def test_impossible_length_is_a_frame_error():
    parser = PacketParser()
    parser.feed(bytes.fromhex("FF FF FD 00 01 01 00") + PING_1)
    with pytest.raises(FrameError, match="length 1"):
        parser.next_packet()
    assert parser.next_packet().instruction == Instruction.PING


@pytest.mark.parametrize(
    "value, size, signed, raw",
    [
        (-1, 4, True, "FF FF FF FF"),
        (-(2**31), 4, True, "00 00 00 80"),
        (2**31 - 1, 4, True, "FF FF FF 7F"),
        (65535, 2, False, "FF FF"),
    ],
    ids=["minus-one", "int32-min", "int32-max", "uint16-max"],
)
def test_value_encoding_at_limits(value, size, signed, raw):
    assert protocol.encode(value, size, signed) == bytes.fromhex(raw)
    assert protocol.decode(bytes.fromhex(raw), signed) == value


def test_value_out_of_range_names_the_value():
    with pytest.raises(ValueError, match="70000 does not fit an unsigned register of 2 bytes"):
        protocol.encode(70000, 2, False)
