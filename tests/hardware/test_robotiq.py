"""Robotiq2F driver against the emulated gripper: activation, motion, objects, faults, watchdog."""

import contextlib
import time

import pytest

from hardware.emulators import EmulatorServer, Fault, Transport
from hardware.emulators.robotiq import GripperDynamics, Robotiq2FEmulator
from hardware.errors import CommunicationError, DeviceNotConnectedError, DeviceStatusError, GripperFaultError
from hardware.robotiq import (
    ActivationStatus,
    GripperCommand,
    GripperFault,
    ObjectStatus,
    Robotiq2F,
    Robotiq2FConfig,
    modbus_rtu,
)
from hardware.robotiq.registers import GripperStatus
from tests.hardware.conftest import SILENCE_TIMEOUT_S, TIMEOUT_S
from tests.hardware.test_modbus_rtu import ACTIVATE, CLOSE_FULL, OPEN_FULL, READ_3, RESET


@contextlib.contextmanager
def gripper_rig(transport=Transport.PTY, activate=True, dynamics=None, **config):
    device = Robotiq2FEmulator(dynamics=dynamics)
    with EmulatorServer(device, transport) as server:
        config.setdefault("timeout_s", TIMEOUT_S)
        gripper = Robotiq2F(Robotiq2FConfig(server.url, **config))
        gripper.connect(activate=activate)
        try:
            yield gripper, device, server
        finally:
            gripper.disconnect()


def test_activation_sends_reset_then_activate_and_waits_for_gsta(transport):
    with gripper_rig(transport) as (gripper, _, server):
        traffic = server.take_received()
        assert traffic.startswith(READ_3 + RESET + ACTIVATE + READ_3)
        assert gripper.last_status.activation is ActivationStatus.ACTIVATED


def test_close_and_open_send_the_reference_frames():
    with gripper_rig() as (gripper, _, server):
        server.take_received()
        gripper.close()
        assert server.take_received() == CLOSE_FULL
        gripper.open()
        assert server.take_received() == OPEN_FULL


def test_closing_on_an_object_reports_contact_and_current():
    with gripper_rig() as (gripper, device, _):
        with device.lock:
            device.object_position = 140
        sent = gripper.move(255, speed=255, force=128)
        assert sent == GripperCommand(position=255, speed=255, force=128)
        status = gripper.wait_until_stopped(timeout_s=2.0)
        assert status.object is ObjectStatus.CONTACT_CLOSING and status.object_detected
        assert status.position == 140 and status.position_request == 255
        assert status.current_a > 0.2
        gripper.open()
        status = gripper.wait_until_stopped(timeout_s=2.0)
        assert status.object is ObjectStatus.AT_POSITION and status.position == 0


def test_opening_against_an_obstacle_reports_contact_while_opening():
    with gripper_rig() as (gripper, device, _):
        gripper.move(200)
        gripper.wait_until_stopped()
        with device.lock:
            device.opening_obstacle_position = 120
        gripper.open()
        status = gripper.wait_until_stopped()
        assert status.object is ObjectStatus.CONTACT_OPENING and status.position == 120


def test_without_keepalive_the_device_watchdog_faults_and_a_command_clears_it():
    dynamics = GripperDynamics(comm_watchdog_s=0.15)
    with gripper_rig(dynamics=dynamics, keepalive_period_s=None) as (gripper, _, _):
        gripper.move(100)
        time.sleep(0.25)
        status = gripper.status()
        assert status.fault is GripperFault.NO_COMMUNICATION
        with pytest.raises(GripperFaultError, match="NO_COMMUNICATION"):
            gripper.wait_until_stopped()
        gripper.move(100)
        assert gripper.wait_until_stopped().fault is GripperFault.NONE


def test_keepalive_prevents_the_watchdog_fault():
    dynamics = GripperDynamics(comm_watchdog_s=0.15)
    with gripper_rig(dynamics=dynamics, keepalive_period_s=0.03) as (gripper, _, _):
        time.sleep(0.4)
        assert gripper.keepalive_reads >= 3
        assert gripper.status().fault is GripperFault.NONE


def test_major_fault_blocks_moves_until_reactivation():
    with gripper_rig() as (gripper, device, _):
        with device.lock:
            device.inject_fault(GripperFault.OVERCURRENT)
        assert gripper.status().fault.is_major
        with pytest.raises(GripperFaultError, match=r"OVERCURRENT. Call `.activate\(\)`"):
            gripper.close()
        gripper.activate()
        gripper.close()
        assert gripper.wait_until_stopped().position == 255


def test_move_before_activation_is_refused_by_the_driver():
    refused = pytest.raises(GripperFaultError, match=r"not activated. Call `.activate\(\)` first")
    with gripper_rig(activate=False) as (gripper, _, _), refused:
        gripper.close()


def test_device_faults_on_go_to_without_activation():
    device = Robotiq2FEmulator()
    request = modbus_rtu.write_registers_request(9, 0x03E8, GripperCommand(activate=False, go_to=True).to_bytes())
    assert device.receive(request, now_s=0.0) == [modbus_rtu.write_registers_response(9, 0x03E8, 3)]
    (reply,) = device.receive(READ_3, now_s=0.01)
    status = GripperStatus.from_bytes(reply[3:9])
    assert status.fault is GripperFault.ACTIVATION_BIT_NOT_SET


@pytest.mark.parametrize(
    "request_frame, reply",
    [
        (modbus_rtu.read_registers_request(9, 0x0100, 3), "09 83 02"),
        (modbus_rtu.read_registers_request(9, 0x07D0, 4), "09 83 03"),
        (modbus_rtu.with_crc(bytes.fromhex("09 06 03 E8 00 01")), "09 86 01"),
    ],
    ids=["illegal-address", "illegal-count", "illegal-function"],
)
def test_device_answers_modbus_exceptions(request_frame, reply):
    device = Robotiq2FEmulator()
    assert device.receive(request_frame, now_s=0.0) == [modbus_rtu.with_crc(bytes.fromhex(reply))]


def test_device_ignores_corrupt_and_foreign_frames():
    device = Robotiq2FEmulator()
    assert device.receive(READ_3[:-1] + b"\x00", now_s=0.0) == []
    assert device.receive(modbus_rtu.read_registers_request(8, 0x07D0, 3), now_s=0.0) == []
    assert device.bad_requests >= 1  # every CRC-failing candidate start is counted


@pytest.mark.parametrize("fault", [Fault.GARBAGE, Fault.SPLIT, Fault.BAD_CRC, Fault.SILENCE],
                         ids=["garbage", "split", "bad-crc", "silence"])
def test_faults_on_the_line_are_absorbed(fault):
    with gripper_rig(keepalive_period_s=None, timeout_s=SILENCE_TIMEOUT_S) as (gripper, _, server):
        server.inject(fault)
        assert gripper.status().activation is ActivationStatus.ACTIVATED


def test_clear_error_after_retries():
    with gripper_rig(keepalive_period_s=None, retries=1, timeout_s=SILENCE_TIMEOUT_S) as (gripper, _, server):
        server.inject(Fault.SILENCE, count=2)
        with pytest.raises(CommunicationError, match=r"READ robot input after 2 attempt\(s\).*ReplyTimeoutError"):
            gripper.status()


def test_modbus_exception_from_the_device_is_typed():
    with gripper_rig(keepalive_period_s=None) as (gripper, _, _):
        request = modbus_rtu.read_registers_request(9, 0x0100, 1)
        with pytest.raises(DeviceStatusError, match="ILLEGAL_DATA_ADDRESS"):
            gripper._transact(request, 5, "READ 0x0100")


def test_keepalive_failure_surfaces_on_the_next_call():
    device = Robotiq2FEmulator()
    server = EmulatorServer(device, Transport.TCP)
    config = Robotiq2FConfig(server.url, timeout_s=SILENCE_TIMEOUT_S, retries=0, keepalive_period_s=0.02)
    gripper = Robotiq2F(config)
    gripper.connect()
    try:
        server.close()  # the line goes dead under the keep-alive
        deadline = time.monotonic() + 2.0
        while gripper._keepalive_error is None and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(CommunicationError, match="keep-alive status read"):
            gripper.status()
    finally:
        gripper.disconnect()
        server.close()


def test_send_action_clips_closure_and_rejects_nan():
    with gripper_rig() as (gripper, _, _):
        assert gripper.send_action(1.7) == 1.0
        assert gripper.send_action(-0.2) == 0.0
        with pytest.raises(ValueError, match="NaN"):
            gripper.send_action(float("nan"))


def test_calls_before_connect_say_how_to_fix_it():
    gripper = Robotiq2F(Robotiq2FConfig("loop://"))
    with pytest.raises(DeviceNotConnectedError, match=r"Run `.connect\(\)` first"):
        gripper.status()


def test_keepalive_period_must_beat_the_device_watchdog():
    with pytest.raises(ValueError, match="keepalive_period_s must be in"):
        Robotiq2FConfig("loop://", keepalive_period_s=0.9)
