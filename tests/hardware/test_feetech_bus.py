"""FeetechBus end to end against emulated STS/SCS servos (byte order, sign-magnitude, retries)."""

import pytest

from hardware.emulators import Fault
from hardware.errors import CommunicationError, DeviceAlertError
from hardware.feetech import Model, Reg, StatusBit, protocol
from hardware.motor_bus import Motor, MotorCalibration, NormMode
from tests.hardware.conftest import SILENCE_TIMEOUT_S, feetech_rig, wait_for
from tests.hardware.test_feetech_protocol import PING_1

MIXED = {"arm": Motor(1, Model.STS3215), "jaw": Motor(2, Model.SCS0009, NormMode.RANGE_0_100)}


def test_connect_pings_and_reads_model_numbers_with_exact_bytes(transport):
    with feetech_rig(transport) as (bus, _, server):
        expected = b"".join(protocol.ping(i) + protocol.read(i, 3, 2) for i in (1, 2))
        assert server.take_received() == expected
        assert expected.startswith(PING_1)
        assert bus.ping("b") == 777


def test_sync_write_moves_and_sync_read_reports(transport):
    with feetech_rig(transport) as (bus, _, _):
        bus.enable_torque()
        bus.sync_write(Reg.GOAL_POSITION, {"a": 1000, "b": 3000})
        assert wait_for(lambda: bus.sync_read(Reg.PRESENT_POSITION) == {"a": 1000, "b": 3000})


def test_negative_values_cross_the_wire_as_sign_magnitude():
    with feetech_rig() as (bus, device, server):
        bus.write_calibration({"a": MotorCalibration(homing_offset_ticks=-1000, range_min_ticks=0,
                                                     range_max_ticks=4095)})
        # Present = actual - offset: 2048 + 1000
        assert bus.read(Reg.PRESENT_POSITION, "a") == 3048
        with device.lock:
            raw = bytes(device.servo(1).memory[31:33])
        assert raw == bytes.fromhex("E8 0B")  # 1000 | sign bit 11, little-endian
        bus.write(Reg.HOMING_OFFSET, "a", 0)
        server.take_received()
        bus.write(Reg.GOAL_VELOCITY, "a", -300)
        assert server.take_received() == protocol.write(1, 46, bytes.fromhex("2C 81"))
        assert bus.read(Reg.GOAL_VELOCITY, "a") == -300


def test_calibration_unlocks_eeprom_and_relocks():
    with feetech_rig() as (bus, device, server):
        server.take_received()
        bus.write_calibration({"a": MotorCalibration(0, 500, 3500)})
        traffic = bytearray()
        relock = protocol.sync_write(55, 1, {1: b"\x01"})  # a broadcast: nothing to wait for but the bytes
        assert wait_for(lambda: traffic.extend(server.take_received()) or traffic.endswith(relock))
        assert traffic.startswith(protocol.sync_write(55, 1, {1: b"\x00"}))
        assert bus.read_calibration(["a"]) == {"a": MotorCalibration(0, 500, 3500)}


def test_home_here_uses_feetech_sign_convention():
    with feetech_rig() as (bus, device, _):
        with device.lock:
            device.servo(2).set_position(1000)
        assert bus.home_here(["b"]) == {"b": 1000 - 2048}
        assert bus.read(Reg.PRESENT_POSITION, "b") == 2048


def test_scs_is_big_endian_and_read_one_by_one():
    with feetech_rig(motors=MIXED) as (bus, device, server):
        server.take_received()
        bus.write(Reg.GOAL_POSITION, "jaw", 0x0102)
        assert server.take_received() == protocol.write(2, 42, b"\x01\x02")  # big-endian on the wire
        server.take_received()
        positions = bus.sync_read(Reg.PRESENT_POSITION)
        traffic = server.take_received()
        assert positions == {"arm": 2048, "jaw": 1023}  # the 10-bit servo clamps at its range end
        assert bytes((protocol.Instruction.SYNC_READ,)) not in traffic[4:5]
        assert traffic == protocol.read(1, 56, 2) + protocol.read(2, 56, 2)


def test_scs_without_homing_register_refuses_an_offset():
    with feetech_rig(motors=MIXED) as (bus, _, _), pytest.raises(ValueError, match="no Homing_Offset"):
        bus.write_calibration({"jaw": MotorCalibration(homing_offset_ticks=10, range_min_ticks=0,
                                                       range_max_ticks=1023)})


def test_range_mode_normalises_a_gripper():
    with feetech_rig(motors=MIXED) as (bus, _, _):
        bus.calibration["jaw"] = MotorCalibration(0, 100, 900)
        bus.enable_torque()
        sent = bus.send_action({"jaw": 150.0})
        assert sent == {"jaw": 100.0}
        assert bus.read(Reg.GOAL_POSITION, "jaw") == 900


@pytest.mark.parametrize("fault", [Fault.GARBAGE, Fault.SPLIT, Fault.BAD_CRC, Fault.SILENCE],
                         ids=["garbage", "split", "bad-checksum", "silence"])
def test_faults_are_retried_or_resynced(fault):
    with feetech_rig(timeout_s=SILENCE_TIMEOUT_S) as (bus, _, server):
        server.inject(fault, count=2)
        assert bus.sync_read(Reg.PRESENT_POSITION) == {"a": 2048, "b": 2048}


def test_clear_error_after_retries():
    with feetech_rig(retries=1) as (bus, _, server):
        server.inject(Fault.BAD_CRC, count=2)
        with pytest.raises(CommunicationError, match=r"feetech motor 'b' \(id 2, STS3215\).*2 attempt.*ChecksumError"):
            bus.read(Reg.PRESENT_POSITION, "b")


def test_status_bits_raise_an_alert_naming_them():
    with feetech_rig() as (bus, device, _):
        with device.lock:
            device.servo(1).status_bits = StatusBit.OVERLOAD | StatusBit.OVERHEAT
        with pytest.raises(DeviceAlertError, match=r"\['OVERHEAT', 'OVERLOAD'\]"):
            bus.read(Reg.PRESENT_POSITION, "a")
