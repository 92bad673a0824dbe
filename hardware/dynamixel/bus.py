"""Dynamixel Protocol 2.0 bus: the shared `SerialMotorBus` plus what X-series servos add.

Added here: bulk read, broadcast scan, reboot, operating modes (current control for torque or
impedance control), currents in amperes, the bus watchdog, and the meaning of status error bytes.

Example:
    config = MotorBusConfig(port="/dev/ttyUSB0", motors={"shoulder": Motor(1, Model.XM430_W350)})
    with DynamixelBus(config) as bus:
        bus.enable_torque()
        bus.send_action({"shoulder": 0.1})
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from hardware.dynamixel import protocol
from hardware.dynamixel.protocol import ALERT_BIT, Packet, PacketParser, StatusError
from hardware.dynamixel.tables import (
    BUS_WATCHDOG_MAX,
    BUS_WATCHDOG_TRIPPED,
    BUS_WATCHDOG_UNIT_S,
    HardwareErrorBit,
    Model,
    OperatingMode,
    Reg,
    spec_of,
)
from hardware.errors import DeviceAlertError, DeviceStatusError, ProtocolError
from hardware.motor_bus import Motor, MotorBusConfig, SerialMotorBus
from hardware.serial_port import read_some

_STATUS_FIXES = {
    StatusError.RESULT_FAIL: "The servo could not process the packet; retry, or reboot it.",
    StatusError.INSTRUCTION: (
        "Undefined instruction, or ACTION without REG_WRITE; check the firmware supports it."
    ),
    StatusError.DATA_RANGE: "The value or address is outside the register's range; check the control table.",
    StatusError.DATA_LENGTH: "The data is shorter than the register; check the register size in the table.",
    StatusError.DATA_LIMIT: (
        "The value exceeds a limit register (Goal_Position outside Min/Max_Position_Limit, "
        "Goal_Current beyond Current_Limit, ...); check the calibration and limits."
    ),
    StatusError.ACCESS: (
        "Read-only register, EEPROM register while torque is on (use `with bus.torque_disabled():`), "
        "or a Goal_* register after a bus-watchdog trip (call `bus.clear_watchdog()`)."
    ),
}


class DynamixelBus(SerialMotorBus):
    family = "dynamixel"
    REG_TORQUE_ENABLE = Reg.TORQUE_ENABLE
    REG_GOAL_POSITION = Reg.GOAL_POSITION
    REG_PRESENT_POSITION = Reg.PRESENT_POSITION
    REG_HOMING_OFFSET = Reg.HOMING_OFFSET
    REG_MIN_POSITION_LIMIT = Reg.MIN_POSITION_LIMIT
    REG_MAX_POSITION_LIMIT = Reg.MAX_POSITION_LIMIT

    def __init__(self, config: MotorBusConfig) -> None:
        super().__init__(config)
        self._current_limit_a: dict[str, float] = {}
        self._watchdog_period_s: dict[str, float] = {}  # armed periods, re-armed by clear_watchdog

    # ---- codec hooks ---------------------------------------------------------------------------
    family = "hardware.dynamixel"
    model_type = Model
    max_id = protocol.MAX_ID

    def _register(self, model: Model, reg: Reg):
        return spec_of(model, reg)

    def _encode(self, motor: Motor, reg: Reg, value: int) -> bytes:
        spec = spec_of(motor.model, reg)
        return protocol.encode(value, spec.size, spec.signed)

    def _decode(self, motor: Motor, reg: Reg, data: bytes) -> int:
        return protocol.decode(data, spec_of(motor.model, reg).signed)

    def _new_parser(self) -> PacketParser:
        return PacketParser()

    def _status_size(self, n_data: int) -> int:
        return protocol.status_size(n_data)

    def _is_status(self, packet: Packet) -> bool:
        return packet.is_status

    def _check_status(self, packet: Packet, instruction: str) -> bool:
        code = packet.error & ~ALERT_BIT
        if code == StatusError.CRC:
            raise ProtocolError(f"{self._label(packet.device_id)} received {instruction} with a bad CRC")
        if code:
            try:
                error = StatusError(code)
                name, fix = error.name, _STATUS_FIXES[error]
            except ValueError:
                name, fix = f"unknown error {code}", "Check the servo firmware version."
            raise DeviceStatusError(self._label(packet.device_id), instruction, name, fix)
        return bool(packet.error & ALERT_BIT)

    def _alert_error(self, name: str, instruction: str) -> Exception:
        bits = self.hardware_errors([name])[name] if name in self.motors else HardwareErrorBit(0)
        faults = [b.name for b in HardwareErrorBit if b & bits] or ["unreported"]
        return DeviceAlertError(
            self._label(self.motors[name].id) if name in self.motors else name,
            faults,
            "The servo switched torque off (Shutdown register). Remove the cause (load, heat, supply), "
            f"then call `bus.reboot({name!r})`.",
        )

    def _build_read(self, device_id: int, address: int, size: int) -> bytes:
        return protocol.read(device_id, address, size)

    def _build_write(self, device_id: int, address: int, data: bytes) -> bytes:
        return protocol.write(device_id, address, data)

    def _build_sync_read(self, address: int, size: int, ids: Sequence[int]) -> bytes:
        return protocol.sync_read(address, size, ids)

    def _build_sync_write(self, address: int, size: int, data_by_id: Mapping[int, bytes]) -> bytes:
        return protocol.sync_write(address, size, data_by_id)

    def _homing_offset_to_center(self, present_ticks: int, offset_ticks: int, resolution: int) -> int:
        # Dynamixel reports Present_Position = actual + Homing_Offset.
        return resolution // 2 - (present_ticks - offset_ticks)

    # ---- Dynamixel-only instructions -----------------------------------------------------------
    def ping(self, name: str) -> int:
        """Model number from the ping status (params: model number L/H, firmware version)."""
        motor = self._motor(name)
        replies = self._transact(protocol.ping(motor.id), {motor.id: 3}, "PING", check_alert=False)
        return int.from_bytes(replies[motor.id].data[:2], "little")

    def scan(self, wait_s: float = 0.1) -> dict[int, int]:
        """Broadcast ping: id -> model number of every servo that answers within `wait_s`.

        For commissioning (which ids are on this line?), so it does not need a configured motor.
        """
        port = self._require_port()
        port.reset_input_buffer()
        port.write(protocol.ping(protocol.BROADCAST_ID))
        parser = PacketParser()
        found: dict[int, int] = {}
        deadline = time.perf_counter() + wait_s
        while time.perf_counter() < deadline:
            chunk = read_some(port, 1)
            if not chunk:
                continue
            parser.feed(chunk)
            try:
                for packet in parser.packets():
                    if packet.is_status and len(packet.data) == 3:
                        found[packet.device_id] = int.from_bytes(packet.data[:2], "little")
            except ProtocolError:
                continue  # two servos colliding or noise: scan again to be sure
        return dict(sorted(found.items()))

    def bulk_read(self, regs: Mapping[str, Reg]) -> dict[str, int]:
        """Read a different register from each motor in one request (each motor at most once)."""
        names = self._names(list(regs))
        items = []
        for name in names:
            motor = self.motors[name]
            address, size = self._spec(motor, regs[name])
            items.append((motor.id, address, size))
        expected = {device_id: size for device_id, _, size in items}
        replies = self._transact(protocol.bulk_read(items), expected, "BULK_READ")
        return {n: self._decode(self.motors[n], regs[n], replies[self.motors[n].id].data) for n in names}

    def reboot(self, name: str) -> None:
        """Reboot one servo (clears Hardware_Error_Status; torque comes back off)."""
        motor = self._motor(name)
        self._transact(protocol.reboot(motor.id), {motor.id: 0}, "REBOOT", check_alert=False)
        self._last_goal_ticks.pop(name, None)

    def hardware_errors(self, names: Sequence[str] | None = None) -> dict[str, HardwareErrorBit]:
        names = self._names(names)
        out = {}
        for name in names:
            motor = self.motors[name]
            address, size = self._spec(motor, Reg.HARDWARE_ERROR_STATUS)
            replies = self._transact(
                protocol.read(motor.id, address, size), {motor.id: size}, "READ HARDWARE_ERROR_STATUS",
                check_alert=False,
            )
            out[name] = HardwareErrorBit(replies[motor.id].data[0] & sum(HardwareErrorBit))
        return out

    # ---- operating modes and current control ---------------------------------------------------
    def set_operating_mode(self, mode: OperatingMode, names: Sequence[str] | None = None) -> None:
        """Switch mode (an EEPROM register, so torque goes off and back on around the write)."""
        names = self._names(names)
        for name in names:
            model = self.motors[name].model
            if mode not in model.info.operating_modes:
                raise ValueError(
                    f"motor {name!r} ({model.info.name}) has no {mode.name} mode; it supports "
                    f"{sorted(m.name for m in model.info.operating_modes)}"
                )
        with self.torque_disabled(names):
            self.sync_write(Reg.OPERATING_MODE, dict.fromkeys(names, int(mode)))
        for name in names:
            self._last_goal_ticks.pop(name, None)

    def _current_unit_a(self, name: str) -> float:
        unit = self.motors[name].model.info.current_unit_a
        if unit is None:
            raise ValueError(
                f"motor {name!r} ({self.motors[name].model.info.name}) has no current sensing; "
                "current control needs XL330, XM430 or XM540"
            )
        return unit

    def read_currents_a(self, names: Sequence[str] | None = None) -> dict[str, float]:
        names = self._names(names)
        units = {n: self._current_unit_a(n) for n in names}
        raw = self.sync_read(Reg.PRESENT_CURRENT, names)
        return {n: self._direction(n) * raw[n] * units[n] for n in names}

    def send_currents_a(self, currents_a: Mapping[str, float]) -> dict[str, float]:
        """Goal currents in amperes (current mode), clipped to each servo's Current_Limit.

        Returns the currents actually sent. The limits are read once and cached.
        """
        names = self._names(list(currents_a))
        units = {n: self._current_unit_a(n) for n in names}
        missing = [n for n in names if n not in self._current_limit_a]
        if missing:
            limits = self.sync_read(Reg.CURRENT_LIMIT, missing)
            self._current_limit_a.update({n: limits[n] * units[n] for n in missing})
        raw = {}
        for name in names:
            value = float(currents_a[name])
            if value != value:  # NaN
                raise ValueError(f"current for motor {name!r} is NaN; expected a finite number of amperes")
            limit = self._current_limit_a[name]
            clipped = min(max(value, -limit), limit)
            raw[name] = round(self._direction(name) * clipped / units[name])
        self.sync_write(Reg.GOAL_CURRENT, raw)
        return {n: self._direction(n) * raw[n] * units[n] for n in names}

    def _direction(self, name: str) -> int:
        return -1 if self._calibration(name).inverted else 1

    # ---- bus watchdog --------------------------------------------------------------------------
    def set_bus_watchdog(self, period_s: float | None, names: Sequence[str] | None = None) -> None:
        """Arm the servo-side watchdog: with torque on and no instruction for `period_s`, it stops.

        `period_s` is rounded to 20 ms steps, 0.02..2.54 s; None disarms it.
        """
        names = self._names(names)
        if period_s is None:
            value = 0
        else:
            value = round(period_s / BUS_WATCHDOG_UNIT_S)
            if not 1 <= value <= BUS_WATCHDOG_MAX:
                longest_s = BUS_WATCHDOG_MAX * BUS_WATCHDOG_UNIT_S
                raise ValueError(
                    f"bus watchdog period_s must be in {BUS_WATCHDOG_UNIT_S}..{longest_s:.2f} s, "
                    f"got {period_s}"
                )
        self.sync_write(Reg.BUS_WATCHDOG, dict.fromkeys(names, value))
        for name in names:
            if period_s is None:
                self._watchdog_period_s.pop(name, None)
            else:
                self._watchdog_period_s[name] = period_s

    def watchdog_tripped(self, names: Sequence[str] | None = None) -> dict[str, bool]:
        return {n: v == BUS_WATCHDOG_TRIPPED for n, v in self.sync_read(Reg.BUS_WATCHDOG, names).items()}

    def clear_watchdog(self, names: Sequence[str] | None = None) -> None:
        """After a trip: write 0 (Goal_* become writable again) and re-arm the previous period.

        The servo stopped where it was; the goal cap is re-seeded from Present_Position.
        """
        names = self._names(names)
        self.sync_write(Reg.BUS_WATCHDOG, dict.fromkeys(names, 0))
        for name in names:
            self._last_goal_ticks.pop(name, None)
        by_period: dict[float, list[str]] = {}
        for name in names:
            if name in self._watchdog_period_s:
                by_period.setdefault(self._watchdog_period_s[name], []).append(name)
        for period_s, group in by_period.items():
            self.set_bus_watchdog(period_s, group)
