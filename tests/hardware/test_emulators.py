"""Emulator servers and device models: clean shutdown, latency, motion, register semantics."""

import os
import threading
import time

import pytest
import serial

from hardware.dynamixel import Model, OperatingMode, Reg, StatusError
from hardware.dynamixel import protocol as dxl
from hardware.emulators import EmulatorServer, Fault, FaultConfig, Transport
from hardware.emulators.dynamixel import DynamixelBusEmulator, EmulatedDynamixel
from hardware.emulators.servo_physics import ServoDynamics, track_position
from tests.hardware.conftest import dynamixel_rig, wait_for


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("transport", [Transport.PTY, Transport.TCP], ids=["pty", "tcp"])
def test_servers_release_threads_and_fds(transport):
    threads, fds = threading.active_count(), _open_fds()
    for _ in range(3):
        device = DynamixelBusEmulator.with_models({1: Model.XL330_M288})
        with EmulatorServer(device, transport) as server:
            port = serial.serial_for_url(server.url, timeout=0.05)
            port.write(dxl.ping(1))
            assert len(port.read(14)) == 14
            port.close()
        server.close()  # idempotent
    assert threading.active_count() == threads
    assert _open_fds() == fds


def test_a_device_bug_fails_loudly_at_close():
    class Broken:
        def receive(self, data, now_s):
            raise KeyError("emulator bug")

    server = EmulatorServer(Broken(), Transport.PTY)
    port = serial.serial_for_url(server.url, timeout=0.05)
    port.write(b"\x01")
    assert port.read(1) == b""  # the driver only sees silence...
    port.close()
    assert wait_for(lambda: server.device_errors)
    with pytest.raises(RuntimeError, match="Broken raised 1 time"):
        server.close()  # ...but the test that met the bug fails


def test_latency_is_added_before_each_reply():
    with dynamixel_rig(faults=FaultConfig(latency_s=0.01)) as (bus, _, _):
        start = time.perf_counter()
        bus.read(Reg.PRESENT_POSITION, "shoulder")
        assert time.perf_counter() - start >= 0.01


def test_fault_rates_are_validated():
    with pytest.raises(ValueError, match="SILENCE must be in"):
        FaultConfig(rates={Fault.SILENCE: 1.5})


def test_tracking_is_speed_limited_then_first_order_and_never_overshoots():
    dyn = ServoDynamics(max_speed_ticks_s=1000.0, time_constant_s=0.01)
    position, velocity = track_position(0.0, 500.0, 0.1, dyn, 1000.0)
    assert (position, velocity) == (100.0, 1000.0)  # saturated: 1000 ticks/s for 0.1 s
    position, velocity = track_position(0.0, 500.0, 10.0, dyn, 1000.0)
    assert position == pytest.approx(500.0) and velocity == pytest.approx(0.0, abs=1e-6)
    # Stepping in many small increments lands where one big step does (lazy evaluation is exact).
    p = 0.0
    for _ in range(100):
        p, _ = track_position(p, 500.0, 0.005, dyn, 1000.0)
    assert p == pytest.approx(track_position(0.0, 500.0, 0.5, dyn, 1000.0)[0])


def _frames(device, request, now_s=0.0):
    parser = dxl.PacketParser()
    for reply in device.receive(request, now_s):
        parser.feed(reply)
    return parser.packets()


def test_sync_read_answers_in_listed_order_and_skips_absent_ids():
    device = DynamixelBusEmulator.with_models({1: Model.XM430_W350, 2: Model.XM430_W350, 5: Model.XL330_M288})
    packets = _frames(device, dxl.sync_read(132, 4, [5, 3, 1]))
    assert [p.device_id for p in packets] == [5, 1]


def test_writes_are_all_or_nothing_and_partial_registers_are_rejected():
    servo = EmulatedDynamixel(1, Model.XM430_W350, now_s=0.0)
    # LED (65, ok) + Status_Return_Level... spanning into read-only Hardware_Error_Status (70) fails whole.
    assert servo.write(65, bytes((1, 0, 0, 2, 0, 0))) == StatusError.ACCESS
    assert servo.peek(Reg.LED) == 0  # nothing of the rejected write was applied
    assert servo.write(116, b"\x00\x02") == StatusError.DATA_LENGTH  # half of Goal_Position
    assert servo.write(117, b"\x00\x02\x00") == StatusError.DATA_LENGTH  # starts inside it
    assert servo.write(116, (1000).to_bytes(4, "little")) == StatusError.NONE
    assert servo.peek(Reg.GOAL_POSITION) == 1000


def test_xl430_refuses_current_mode_on_the_wire():
    device = DynamixelBusEmulator.with_models({1: Model.XL430_W250})
    (status,) = _frames(device, dxl.write(1, 11, bytes((int(OperatingMode.CURRENT),))))
    assert status.error == StatusError.DATA_RANGE


def test_reg_write_waits_for_action():
    device = DynamixelBusEmulator.with_models({1: Model.XM430_W350})
    _frames(device, dxl.build_packet(1, dxl.Instruction.REG_WRITE, bytes((65, 0, 1))))
    assert device.servo(1).peek(Reg.LED) == 0
    _frames(device, dxl.build_packet(dxl.BROADCAST_ID, dxl.Instruction.ACTION))
    assert device.servo(1).peek(Reg.LED) == 1


def test_status_return_level_zero_answers_ping_only():
    device = DynamixelBusEmulator.with_models({1: Model.XM430_W350})
    device.servo(1).write(68, b"\x00")
    assert _frames(device, dxl.read(1, 132, 4)) == []
    assert len(_frames(device, dxl.ping(1))) == 1


def test_corrupt_request_gets_a_crc_error_status():
    device = DynamixelBusEmulator.with_models({1: Model.XM430_W350})
    request = bytearray(dxl.read(1, 132, 4))
    request[-1] ^= 0xFF
    (status,) = _frames(device, bytes(request))
    assert status.error == StatusError.CRC and device.bad_requests == 1
