"""DynamixelBus end to end against the emulated X-series bus, over a pty and over TCP."""

import math
import time

import pytest

from hardware.dynamixel import DynamixelBus, HardwareErrorBit, Model, OperatingMode, Reg, StatusError, protocol
from hardware.emulators import Fault, FaultConfig, Transport
from hardware.errors import (
    CommunicationError,
    DeviceAlertError,
    DeviceNotConnectedError,
    DeviceStatusError,
    ModelMismatchError,
    PortOpenError,
)
from hardware.motor_bus import Motor, MotorBusConfig, MotorCalibration
from tests.hardware.conftest import ARM, SILENCE_TIMEOUT_S, TIMEOUT_S, dynamixel_rig, wait_for
from tests.hardware.test_dynamixel_protocol import PING_1, READ_1_PRESENT_POSITION, WRITE_1_GOAL_512


def test_connect_pings_every_motor_with_exact_bytes(transport):
    with dynamixel_rig(transport) as (bus, _, server):
        assert server.take_received() == b"".join(protocol.ping(m.id) for m in ARM.values())
        assert bus.ping("shoulder") == Model.XM430_W350.info.model_number
        assert server.take_received() == PING_1


def test_read_and_write_send_the_reference_bytes():
    with dynamixel_rig() as (bus, device, server):
        server.take_received()
        assert bus.read(Reg.PRESENT_POSITION, "shoulder") == 2048
        assert server.take_received() == READ_1_PRESENT_POSITION
        bus.write(Reg.GOAL_POSITION, "shoulder", 512)
        assert server.take_received() == WRITE_1_GOAL_512
        with device.lock:
            assert device.servo(1).peek(Reg.GOAL_POSITION) == 512


def test_sync_write_moves_servos_and_sync_read_follows(transport):
    with dynamixel_rig(transport) as (bus, _, _):
        bus.enable_torque()
        goals = {"shoulder": 1000, "elbow": 3000, "wrist": 2500, "base": 1500}
        bus.sync_write(Reg.GOAL_POSITION, goals)
        assert wait_for(lambda: all(abs(v - goals[n]) <= 1 for n, v in bus.sync_read(Reg.PRESENT_POSITION).items()))
        assert bus.sync_read(Reg.GOAL_POSITION) == goals


def test_bulk_read_reads_a_different_register_per_motor():
    with dynamixel_rig() as (bus, _, _):
        values = bus.bulk_read({"shoulder": Reg.PRESENT_POSITION, "base": Reg.PRESENT_LOAD,
                                "wrist": Reg.PRESENT_INPUT_VOLTAGE})
        assert values == {"shoulder": 2048, "base": 0, "wrist": 120}


def test_register_missing_on_a_model_names_model_and_register():
    with dynamixel_rig() as (bus, _, _), pytest.raises(ValueError, match="XL430-W250 has no register PRESENT_CURRENT"):
        bus.sync_read(Reg.PRESENT_CURRENT)


def test_scan_lists_every_id_and_model():
    with dynamixel_rig() as (bus, _, _):
        assert bus.scan(wait_s=0.05) == {1: 1020, 2: 1020, 3: 1200, 4: 1060}


def test_wrong_model_is_reported_at_connect():
    motors = {"shoulder": Motor(1, Model.XM430_W350)}
    rig = dynamixel_rig(motors=motors, emulated={1: Model.XL330_M288})
    with pytest.raises(ModelMismatchError, match=r"model number 1200, but the config says XM430-W350"), rig:
        pass


@pytest.mark.parametrize(
    "fault, retries_used",
    [(Fault.GARBAGE, 0), (Fault.SPLIT, 0), (Fault.BAD_CRC, 1), (Fault.SILENCE, 1)],
    ids=["garbage-resynced", "split-reassembled", "bad-crc-retried", "silence-retried"],
)
def test_faults_are_absorbed(transport, fault, retries_used):
    with dynamixel_rig(transport, timeout_s=SILENCE_TIMEOUT_S) as (bus, _, server):
        server.inject(fault)
        assert bus.read(Reg.PRESENT_POSITION, "elbow") == 2048
        assert bus.stats.faults >= retries_used  # a loaded machine may add a spurious timeout
        if not retries_used:
            assert server.fault_counts[fault] == 1
        server.inject(fault, count=2)  # a sync read of 4: two of its replies hit
        assert bus.sync_read(Reg.PRESENT_POSITION) == dict.fromkeys(ARM, 2048)


def test_clear_error_after_retries_names_motor_instruction_attempts_and_fault():
    with dynamixel_rig(retries=2, timeout_s=SILENCE_TIMEOUT_S) as (bus, _, server):
        server.inject(Fault.SILENCE, count=3)
        with pytest.raises(CommunicationError) as info:
            bus.read(Reg.PRESENT_POSITION, "elbow")
    message = str(info.value)
    for part in ("motor 'elbow' (id 2, XM430-W350)", "READ PRESENT_POSITION", "after 3 attempt(s)",
                 "ReplyTimeoutError"):
        assert part in message
    assert info.value.attempts == 3


def test_sync_read_names_the_motor_that_stays_silent():
    emulated = {m.id: m.model for n, m in ARM.items() if n != "wrist"}
    silent = pytest.raises(CommunicationError, match=r"motor 'wrist' \(id 3, XL330-M288\).*SYNC_READ")
    rig = dynamixel_rig(emulated=emulated, verify_models=False, retries=1, timeout_s=SILENCE_TIMEOUT_S)
    with rig as (bus, _, _), silent:
        bus.sync_read(Reg.PRESENT_POSITION)


def test_random_faults_never_surface_with_retries():
    rates = {Fault.GARBAGE: 0.05, Fault.SPLIT: 0.05, Fault.BAD_CRC: 0.05, Fault.SILENCE: 0.03}
    rig = dynamixel_rig(faults=FaultConfig(rates=rates, seed=1), retries=4, timeout_s=SILENCE_TIMEOUT_S)
    with rig as (bus, _, server):
        for _ in range(60):
            bus.sync_write(Reg.GOAL_POSITION, bus.sync_read(Reg.PRESENT_POSITION))
        assert bus.stats.failures == 0 and bus.stats.faults > 0
        assert sum(server.fault_counts.values()) > 0


@pytest.mark.parametrize(
    "setup, action, error, fix",
    [
        ("torque", lambda b: b.write(Reg.OPERATING_MODE, "shoulder", 1), "ACCESS", "torque_disabled"),
        (None, lambda b: b.write(Reg.PRESENT_POSITION, "shoulder", 1), "ACCESS", "Read-only"),
        ("torque", lambda b: b.write(Reg.GOAL_CURRENT, "shoulder", 5000), "DATA_LIMIT", "Current_Limit"),
        (None, lambda b: b.write(Reg.OPERATING_MODE, "shoulder", 2), "DATA_RANGE", "range"),
    ],
    ids=["eeprom-with-torque-on", "read-only-register", "goal-current-over-limit", "undefined-operating-mode"],
)
def test_status_errors_are_typed_with_their_fix(setup, action, error, fix):
    with dynamixel_rig() as (bus, _, _):
        if setup == "torque":
            bus.enable_torque(["shoulder"])
        with pytest.raises(DeviceStatusError, match=fix) as info:
            action(bus)
        assert info.value.error == error


def test_injected_status_errors_raise_or_retry():
    with dynamixel_rig() as (bus, device, _):
        with device.lock:
            device.servo(2).inject_status_error(StatusError.RESULT_FAIL)
        with pytest.raises(DeviceStatusError, match="RESULT_FAIL"):
            bus.read(Reg.PRESENT_POSITION, "elbow")
        with device.lock:
            device.servo(2).inject_status_error(StatusError.CRC)  # the servo saw a corrupt request
        assert bus.read(Reg.PRESENT_POSITION, "elbow") == 2048
        assert bus.stats.faults == 1


def test_hardware_alert_names_the_fault_and_reboot_clears_it():
    with dynamixel_rig() as (bus, device, _):
        bus.enable_torque(["elbow"])
        with device.lock:
            device.servo(2).raise_hardware_error(HardwareErrorBit.OVERLOAD)
        with pytest.raises(DeviceAlertError, match=r"\['OVERLOAD'\].*bus.reboot\('elbow'\)"):
            bus.read(Reg.PRESENT_POSITION, "elbow")
        assert bus.hardware_errors(["elbow"]) == {"elbow": HardwareErrorBit.OVERLOAD}
        bus.reboot("elbow")
        assert bus.read(Reg.PRESENT_POSITION, "elbow") == 2048
        assert bus.read(Reg.TORQUE_ENABLE, "elbow") == 0


def test_current_mode_moves_the_servo_and_clips_to_current_limit():
    with dynamixel_rig() as (bus, _, _):
        bus.set_operating_mode(OperatingMode.CURRENT, ["shoulder", "wrist"])
        assert bus.sync_read(Reg.OPERATING_MODE, ["shoulder", "wrist"]) == {"shoulder": 0, "wrist": 0}
        bus.enable_torque(["shoulder", "wrist"])
        sent = bus.send_currents_a({"shoulder": 0.5, "wrist": 10.0})
        assert sent["shoulder"] == pytest.approx(0.5, abs=0.003)
        assert sent["wrist"] == pytest.approx(1.193)  # Current_Limit 1193 x 1 mA
        assert bus.read_currents_a(["shoulder"])["shoulder"] == pytest.approx(0.5, abs=0.003)
        assert wait_for(lambda: bus.read(Reg.PRESENT_POSITION, "shoulder") > 2100)


def test_modes_a_model_lacks_are_refused_before_any_traffic():
    with dynamixel_rig() as (bus, _, server):
        server.take_received()
        with pytest.raises(ValueError, match=r"XL430-W250\) has no CURRENT mode; it supports"):
            bus.set_operating_mode(OperatingMode.CURRENT, ["base"])
        with pytest.raises(ValueError, match="no current sensing"):
            bus.send_currents_a({"base": 0.1})
        assert server.take_received() == b""


def test_torque_disabled_context_restores_torque():
    with dynamixel_rig() as (bus, _, _):
        bus.enable_torque(["shoulder"])
        with bus.torque_disabled(["shoulder", "elbow"]):
            bus.write(Reg.OPERATING_MODE, "shoulder", int(OperatingMode.EXTENDED_POSITION))
        assert bus.sync_read(Reg.TORQUE_ENABLE, ["shoulder", "elbow"]) == {"shoulder": 1, "elbow": 0}


def test_calibration_is_written_to_the_servo_and_read_back():
    cal = MotorCalibration(homing_offset_ticks=-300, range_min_ticks=1000, range_max_ticks=3000)
    with dynamixel_rig() as (bus, _, _):
        bus.write_calibration({"shoulder": cal})
        assert bus.read_calibration(["shoulder"]) == {"shoulder": cal}
        assert bus.read(Reg.PRESENT_POSITION, "shoulder") == 2048 - 300  # the servo applies the offset
        offsets = bus.home_here(["elbow"])
        assert bus.read(Reg.PRESENT_POSITION, "elbow") == 2048 and offsets == {"elbow": 0}
        assert bus.read_positions(["shoulder"])["shoulder"] == pytest.approx(-300 * 2 * math.pi / 4096)


def test_send_action_caps_each_step_clamps_to_range_and_returns_what_was_sent():
    cal = {"shoulder": MotorCalibration(0, 1000, 3000)}
    with dynamixel_rig(max_goal_step_ticks=100, calibration=cal) as (bus, _, _):
        bus.enable_torque()
        first = bus.send_action({"shoulder": 3.0, "elbow": -0.01})
        assert bus.from_normalized("shoulder", first["shoulder"]) == 2148
        assert bus.from_normalized("elbow", first["elbow"]) == 2041  # small steps pass unchanged
        second = bus.send_action({"shoulder": 3.0})
        assert bus.from_normalized("shoulder", second["shoulder"]) == 2248
        assert bus.read(Reg.GOAL_POSITION, "shoulder") == 2248
        with pytest.raises(ValueError, match="goal for motor 'elbow' is nan"):
            bus.send_action({"elbow": float("nan")})


def test_send_action_without_cap_clamps_into_the_calibrated_range():
    cal = {"shoulder": MotorCalibration(0, 1000, 3000)}
    with dynamixel_rig(calibration=cal) as (bus, _, _):
        bus.enable_torque(["shoulder"])
        sent = bus.send_action({"shoulder": 10.0})
        assert bus.from_normalized("shoulder", sent["shoulder"]) == 3000


def test_bus_watchdog_stops_the_servo_and_blocks_goals_until_cleared():
    with dynamixel_rig() as (bus, device, _):
        bus.set_bus_watchdog(0.1)
        bus.enable_torque()
        for _ in range(8):  # regular traffic keeps it fed
            bus.sync_write(Reg.GOAL_POSITION, dict.fromkeys(ARM, 2048))
            time.sleep(0.01)
        assert not any(bus.watchdog_tripped().values())
        bus.write(Reg.GOAL_POSITION, "shoulder", 4000)
        time.sleep(0.25)  # silence: the watchdog trips 100 ms after the last instruction
        assert all(bus.watchdog_tripped().values())
        stopped_at = bus.read(Reg.PRESENT_POSITION, "shoulder")
        assert 2048 < stopped_at < 4000
        with pytest.raises(DeviceStatusError, match="clear_watchdog"):
            bus.write(Reg.GOAL_POSITION, "shoulder", 3000)
        bus.clear_watchdog()
        assert bus.sync_read(Reg.BUS_WATCHDOG, ["shoulder"]) == {"shoulder": 5}  # re-armed at 100 ms
        bus.write(Reg.GOAL_POSITION, "shoulder", 3000)
        with device.lock:
            assert device.servo(1).peek(Reg.GOAL_POSITION) == 3000


def test_bus_watchdog_period_out_of_range_is_refused():
    with dynamixel_rig() as (bus, _, _), pytest.raises(ValueError, match=r"0.02..2.54 s, got 3.0"):
        bus.set_bus_watchdog(3.0)


def test_using_a_bus_before_connect_says_how_to_fix_it():
    bus = DynamixelBus(MotorBusConfig("loop://", ARM))
    with pytest.raises(DeviceNotConnectedError, match=r"Run `.connect\(\)` first"):
        bus.read(Reg.PRESENT_POSITION, "shoulder")


def test_unopenable_port_names_the_port():
    bus = DynamixelBus(MotorBusConfig("/dev/does-not-exist-tty", ARM))
    with pytest.raises(PortOpenError, match="does-not-exist-tty"):
        bus.connect()
    assert not bus.is_connected


def test_context_manager_turns_torque_off_and_closes(transport):
    with dynamixel_rig(transport) as (bus, device, server):
        bus.enable_torque()
        bus.disconnect()

        def all_torque_off():
            with device.lock:
                return all(device.servo(m.id).peek(Reg.TORQUE_ENABLE) == 0 for m in ARM.values())

        assert wait_for(all_torque_off)  # the emulator thread handles the last broadcast asynchronously
        with DynamixelBus(MotorBusConfig(server.url, ARM, timeout_s=TIMEOUT_S)) as again:
            assert again.is_connected
        assert not again.is_connected


@pytest.mark.parametrize(
    "config, match",
    [
        (dict(motors={}), "motors is empty"),
        (dict(motors={"a": Motor(1, Model.XL330_M288), "b": Motor(1, Model.XL330_M288)}), "unique"),
        (dict(motors=ARM, max_goal_step_ticks=0), "max_goal_step_ticks must be > 0"),
        (dict(motors=ARM, calibration={"nope": MotorCalibration()}), r"\['nope'\] are not motors"),
    ],
    ids=["no-motors", "duplicate-ids", "zero-step-cap", "calibration-for-unknown-motor"],
)
def test_bad_config_names_the_field(config, match):
    with pytest.raises(ValueError, match=match):
        MotorBusConfig("loop://", **config)


def test_dynamixel_bus_refuses_other_families_models():
    from hardware.feetech import Model as FeetechModel

    with pytest.raises(ValueError, match="hardware.dynamixel.Model"):
        DynamixelBus(MotorBusConfig("loop://", {"x": Motor(1, FeetechModel.STS3215)}))


@pytest.mark.parametrize("transport_", [Transport.PTY], ids=["pty"])
def test_echoed_requests_are_ignored(transport_):
    """RS-485 adapters that echo our own request: the bus must skip instruction packets."""
    with dynamixel_rig(transport_) as (bus, device, _):
        original = device.receive

        def echo_then_reply(data, now_s):
            return [data, *original(data, now_s)]

        device.receive = echo_then_reply
        assert bus.read(Reg.PRESENT_POSITION, "shoulder") == 2048
        assert bus.stats.faults == 0
