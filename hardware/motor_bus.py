"""What every serial servo bus shares: motor config, calibration, normalisation, retries, goal capping.

A family (Dynamixel, Feetech) subclasses `SerialMotorBus` and supplies only its codec: packet
builders, a parser, value encoding and the meaning of its status byte. Everything a caller relies on
(names instead of ids, retries with a clear error, calibrated units, per-step goal caps, torque
context) is written once here.
"""

from __future__ import annotations

import enum
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import serial

from hardware.errors import (
    CommunicationError,
    DeviceAlreadyConnectedError,
    DeviceNotConnectedError,
    FrameError,
    ModelMismatchError,
    ProtocolError,
    ReplyTimeoutError,
)
from hardware.serial_port import close_quietly, open_port, read_some, wire_time_s


class NormMode(enum.Enum):
    """How raw ticks map to the values `read_positions`/`send_action` use."""

    RADIANS = "radians"  # 0 rad at half a turn (ticks = resolution / 2), 2*pi per revolution
    RANGE_M100_100 = "range_m100_100"  # calibrated [min, max] -> [-100, 100]
    RANGE_0_100 = "range_0_100"  # calibrated [min, max] -> [0, 100] (grippers)


@dataclass(frozen=True)
class MotorCalibration:
    """Per-motor calibration, stored on the servo (offset, limits) plus the software direction.

    Args:
        homing_offset_ticks: written to the servo's Homing_Offset so the chosen zero pose reads
            half a turn; the servo applies it to Present_Position itself.
        range_min_ticks / range_max_ticks: the joint's mechanical range after the offset; written
            to the position limits, and every goal is clamped into it before it is sent.
        inverted: flip the sign of the normalised value (mirror-mounted joints).
    """

    homing_offset_ticks: int = 0
    range_min_ticks: int = 0
    range_max_ticks: int = 4095
    inverted: bool = False

    def __post_init__(self) -> None:
        if self.range_min_ticks >= self.range_max_ticks:
            raise ValueError(
                f"range_min_ticks ({self.range_min_ticks}) must be below range_max_ticks "
                f"({self.range_max_ticks})"
            )


def to_normalized(ticks: int, mode: NormMode, cal: MotorCalibration, resolution_ticks: int) -> float:
    """Raw ticks -> normalised value. Readings are not clamped, so an out-of-range joint shows."""
    sign = -1.0 if cal.inverted else 1.0
    if mode is NormMode.RADIANS:
        return sign * (ticks - resolution_ticks / 2) * (2 * math.pi / resolution_ticks)
    span = cal.range_max_ticks - cal.range_min_ticks
    fraction = (ticks - cal.range_min_ticks) / span
    if mode is NormMode.RANGE_M100_100:
        return sign * (fraction * 200.0 - 100.0)
    return 100.0 - fraction * 100.0 if cal.inverted else fraction * 100.0


def from_normalized(value: float, mode: NormMode, cal: MotorCalibration, resolution_ticks: int) -> int:
    """Normalised goal -> raw ticks, clamped into the calibrated range (a goal never leaves it)."""
    if mode is NormMode.RADIANS:
        signed = -value if cal.inverted else value
        ticks = resolution_ticks / 2 + signed * resolution_ticks / (2 * math.pi)
    else:
        span = cal.range_max_ticks - cal.range_min_ticks
        if mode is NormMode.RANGE_M100_100:
            fraction = ((-value if cal.inverted else value) + 100.0) / 200.0
        else:
            fraction = (100.0 - value if cal.inverted else value) / 100.0
        ticks = cal.range_min_ticks + fraction * span
    return min(max(round(ticks), cal.range_min_ticks), cal.range_max_ticks)


@dataclass(frozen=True)
class Motor:
    id: int
    model: Any  # the family's Model enum member (its `.info` has name, model_number, resolution_ticks)
    norm_mode: NormMode = NormMode.RADIANS


@dataclass
class MotorBusConfig:
    """Everything needed to talk to one bus of servos.

    Args:
        port: a pyserial url or device path: `/dev/ttyUSB0`, an emulator's pty path,
            `socket://127.0.0.1:PORT`, `rfc2217://host:port`.
        motors: name -> Motor. Names are what callers use everywhere; ids stay in the config.
        baudrate: must match the servos' Baud_Rate register (ignored by pty/socket emulators).
        timeout_s: how long the bus waits for a reply before counting a fault; cover the USB
            latency timer (16 ms default on Linux FTDI, 1 ms when tuned) plus the servo's return delay.
        retries: extra attempts after a fault (timeout, checksum, framing). 0 disables retrying.
        max_goal_step_ticks: largest change of Goal_Position per `send_action` call, in ticks
            (4096 ticks = one turn). None disables the cap.
        calibration: name -> MotorCalibration; motors without one use the full range, no offset.
        verify_models: ping every motor at connect and check its model number.
    """

    port: str
    motors: dict[str, Motor]
    baudrate: int = 1_000_000
    timeout_s: float = 0.05
    retries: int = 2
    max_goal_step_ticks: int | None = None
    calibration: dict[str, MotorCalibration] = field(default_factory=dict)
    verify_models: bool = True

    def __post_init__(self) -> None:
        if not self.motors:
            raise ValueError("motors is empty; a bus needs at least one Motor(id, model)")
        ids = [m.id for m in self.motors.values()]
        if len(set(ids)) != len(ids):
            raise ValueError(f"motor ids must be unique, got {ids}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.max_goal_step_ticks is not None and self.max_goal_step_ticks <= 0:
            raise ValueError(f"max_goal_step_ticks must be > 0 or None, got {self.max_goal_step_ticks}")
        unknown = set(self.calibration) - set(self.motors)
        if unknown:
            raise ValueError(f"calibration names {sorted(unknown)} are not motors {sorted(self.motors)}")


@dataclass
class BusStats:
    """Counters for diagnosis (`robot doctor`) and benchmarks."""

    transactions: int = 0
    faults: int = 0  # attempts that failed with a ProtocolError and were retried
    failures: int = 0  # transactions that raised CommunicationError


class SerialMotorBus(ABC):
    """A named set of servos on one serial line. Subclasses supply the family's codec.

    One caller at a time: a bus has no lock, since a control loop owns its bus; share one across
    threads only behind your own lock.
    """

    family: str = "serial"
    # The family's registers for the shared behaviour (set by subclasses to their Reg members).
    REG_TORQUE_ENABLE: Any
    REG_GOAL_POSITION: Any
    REG_PRESENT_POSITION: Any
    REG_HOMING_OFFSET: Any
    REG_MIN_POSITION_LIMIT: Any
    REG_MAX_POSITION_LIMIT: Any

    def __init__(self, config: MotorBusConfig) -> None:
        self.config = config
        self.motors = config.motors
        self.calibration: dict[str, MotorCalibration] = dict(config.calibration)
        self.stats = BusStats()
        self._port: serial.SerialBase | None = None
        self._names_by_id = {m.id: name for name, m in self.motors.items()}
        self._last_goal_ticks: dict[str, int] = {}
        for name, motor in self.motors.items():
            self._validate_motor(name, motor)

    # ---- family codec hooks --------------------------------------------------------------------
    family: ClassVar[str]
    """Package of the servo family, named in errors (e.g. "hardware.dynamixel")."""
    model_type: ClassVar[type[enum.Enum]]
    """The family's model enum; every configured motor must use it."""
    max_id: ClassVar[int]
    """Highest addressable servo id of the family's protocol."""

    def _validate_motor(self, name: str, motor: Motor) -> None:
        """Raise ValueError if the id or model does not belong to this family."""
        if not isinstance(motor.model, self.model_type):
            raise ValueError(
                f"motor {name!r}: model must be a {self.family}.{self.model_type.__name__}, got {motor.model!r}"
            )
        if not 0 <= motor.id <= self.max_id:
            raise ValueError(f"motor {name!r}: id must be in 0..{self.max_id}, got {motor.id}")

    def _spec(self, motor: Motor, reg: Any) -> tuple[int, int]:
        """(address, size) of `reg` on the motor's model."""
        spec = self._register(motor.model, reg)
        return spec.address, spec.size

    @abstractmethod
    def _register(self, model: Any, reg: Any) -> Any:
        """The control-table entry (address, size, signedness) of `reg` on `model`."""

    @abstractmethod
    def _encode(self, motor: Motor, reg: Any, value: int) -> bytes: ...

    @abstractmethod
    def _decode(self, motor: Motor, reg: Any, data: bytes) -> int: ...

    @abstractmethod
    def _new_parser(self) -> Any:
        """A fresh incremental parser with `feed(bytes)` and `next_packet()`."""

    @abstractmethod
    def _status_size(self, n_data: int) -> int:
        """Minimum bytes of one status packet carrying `n_data` bytes."""

    @abstractmethod
    def _check_status(self, packet: Any, instruction: str) -> bool:
        """Raise for an error the device reports; return True if it flags a hardware alert.

        Raise a `ProtocolError` for errors worth a retry (the device saw a corrupt request).
        """

    @abstractmethod
    def _alert_error(self, name: str, instruction: str) -> Exception:
        """The error to raise for a motor whose status flagged a hardware alert."""

    @abstractmethod
    def _is_status(self, packet: Any) -> bool:
        """False for packets that are not replies (an RS-485 adapter echoing our own request)."""

    @abstractmethod
    def _build_read(self, device_id: int, address: int, size: int) -> bytes: ...

    @abstractmethod
    def _build_write(self, device_id: int, address: int, data: bytes) -> bytes: ...

    @abstractmethod
    def _build_sync_read(self, address: int, size: int, ids: Sequence[int]) -> bytes | None:
        """None when the family/model cannot sync read (the bus then reads motor by motor)."""

    @abstractmethod
    def _build_sync_write(self, address: int, size: int, data_by_id: Mapping[int, bytes]) -> bytes: ...

    @abstractmethod
    def ping(self, name: str) -> int:
        """Model number reported by the motor."""

    @abstractmethod
    def _homing_offset_to_center(self, present_ticks: int, offset_ticks: int, resolution: int) -> int:
        """Homing offset that makes the current pose read half a turn (sign convention per family)."""

    # ---- connection ----------------------------------------------------------------------------
    @property
    def is_connected(self) -> bool:
        return self._port is not None and self._port.is_open

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config.port!r}, motors={list(self.motors)})"

    def connect(self) -> None:
        """Open the port and, with `verify_models`, check every motor answers as its configured model."""
        if self.is_connected:
            raise DeviceAlreadyConnectedError(repr(self))
        self._port = open_port(self.config.port, self.config.baudrate, self.config.timeout_s)
        self._last_goal_ticks.clear()
        if not self.config.verify_models:
            return
        try:
            for name, motor in self.motors.items():
                number = self.ping(name)
                if number != motor.model.info.model_number:
                    raise ModelMismatchError(
                        f"{self._label(motor.id)} answers with model number {number}, but the config "
                        f"says {motor.model.info.name} ({motor.model.info.model_number}). Fix the model "
                        "or the id in the bus config."
                    )
        except Exception:
            self.disconnect(disable_torque=False)
            raise

    def disconnect(self, disable_torque: bool = True) -> None:
        """Close the port; by default first turn torque off so the arm does not hold a stale goal."""
        if self._port is None:
            return
        try:
            if disable_torque and self.is_connected:
                self.disable_torque()
                self._port.flush()  # the torque-off broadcast must leave before the port closes
        finally:
            close_quietly(self._port)
            self._port = None

    def __enter__(self) -> SerialMotorBus:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    # ---- transactions --------------------------------------------------------------------------
    def _label(self, device_id: int) -> str:
        name = self._names_by_id.get(device_id)
        if name is None:
            return f"{self.family} id {device_id}"
        return f"{self.family} motor {name!r} (id {device_id}, {self.motors[name].model.info.name})"

    def _require_port(self) -> serial.SerialBase:
        if self._port is None:
            raise DeviceNotConnectedError(repr(self))
        return self._port

    def _transact(
        self, request: bytes, expected: Mapping[int, int], instruction: str, check_alert: bool = True
    ) -> dict[int, Any]:
        """Send `request`, collect one status per id in `expected` (id -> data bytes), retrying faults."""
        port = self._require_port()
        self.stats.transactions += 1
        attempts = self.config.retries + 1
        last_fault: Exception | None = None
        for _ in range(attempts):
            try:
                port.reset_input_buffer()  # a late reply to an earlier attempt must not be taken for this one
                port.write(request)
                if not expected:
                    return {}
                replies, alerts = self._collect(port, expected, instruction)
            except ProtocolError as exc:
                last_fault = exc
                self.stats.faults += 1
                continue
            except (serial.SerialException, OSError) as exc:
                self.stats.failures += 1
                raise CommunicationError(self._describe(expected), instruction, 1, exc) from exc
            if alerts and check_alert:
                raise self._alert_error(self._names_by_id.get(alerts[0], str(alerts[0])), instruction)
            return replies
        self.stats.failures += 1
        silent = last_fault.device_ids if isinstance(last_fault, ReplyTimeoutError) else list(expected)
        raise CommunicationError(self._describe(silent), instruction, attempts, last_fault)

    def _describe(self, ids: Sequence[int] | Mapping[int, int]) -> str:
        ids = list(ids)
        if not ids:  # a broadcast write
            return f"{self.family} bus on {self.config.port}"
        if len(ids) == 1:
            return self._label(ids[0])
        return f"{self.family} motors {[self._names_by_id.get(i, i) for i in ids]}"

    def _collect(
        self, port: serial.SerialBase, expected: Mapping[int, int], instruction: str
    ) -> tuple[dict[int, Any], list[int]]:
        parser = self._new_parser()
        pending = dict(expected)
        replies: dict[int, Any] = {}
        alerts: list[int] = []
        shortest = self._status_size(0)  # an error status carries no data
        total = sum(self._status_size(n) for n in expected.values())
        # Overall bound so a stream of garbage cannot keep the bus waiting forever.
        deadline = time.perf_counter() + self.config.timeout_s + wire_time_s(total, self.config.baudrate)
        while pending:
            # Ask for what is surely coming: the rest of the frame in progress, and the shortest
            # possible reply from each other motor. Asking for more would wait out the timeout
            # whenever a reply is short (an error status).
            chunk = read_some(port, parser.needed(shortest) + (len(pending) - 1) * shortest)
            if not chunk:
                raise ReplyTimeoutError(sorted(pending), self.config.timeout_s)
            parser.feed(chunk)
            while (packet := parser.next_packet()) is not None:
                if not self._is_status(packet) or packet.device_id not in pending:
                    continue
                if self._check_status(packet, instruction):
                    alerts.append(packet.device_id)
                n_data = pending.pop(packet.device_id)
                if len(packet.data) != n_data:
                    raise FrameError(
                        f"{self._label(packet.device_id)} returned {len(packet.data)} data bytes to "
                        f"{instruction}, expected {n_data}"
                    )
                replies[packet.device_id] = packet
            if pending and time.perf_counter() > deadline:
                raise ReplyTimeoutError(sorted(pending), self.config.timeout_s)
        return replies, alerts

    # ---- register access by name ---------------------------------------------------------------
    def _motor(self, name: str) -> Motor:
        try:
            return self.motors[name]
        except KeyError:
            raise KeyError(f"no motor named {name!r}; motors on this bus: {sorted(self.motors)}") from None

    def _has(self, name: str, reg: Any) -> bool:
        return reg in self.motors[name].model.info.table

    def _names(self, names: Sequence[str] | None) -> list[str]:
        if names is None:
            return list(self.motors)
        for name in names:
            self._motor(name)
        return list(names)

    def read(self, reg: Any, name: str) -> int:
        motor = self._motor(name)
        address, size = self._spec(motor, reg)
        replies = self._transact(
            self._build_read(motor.id, address, size), {motor.id: size}, f"READ {reg.name}"
        )
        return self._decode(motor, reg, replies[motor.id].data)

    def write(self, reg: Any, name: str, value: int) -> None:
        """Write and wait for the status, so a rejected write raises here."""
        motor = self._motor(name)
        address, _ = self._spec(motor, reg)
        data = self._encode(motor, reg, value)
        self._transact(self._build_write(motor.id, address, data), {motor.id: 0}, f"WRITE {reg.name}")

    def _common_spec(self, reg: Any, names: Sequence[str]) -> tuple[int, int]:
        specs = {self._spec(self.motors[n], reg) for n in names}
        if len(specs) != 1:
            raise ValueError(
                f"{reg.name} sits at different (address, size) {sorted(specs)} on motors {list(names)}; "
                "sync access needs one layout: split the call by model or use bulk_read"
            )
        return specs.pop()

    def sync_read(self, reg: Any, names: Sequence[str] | None = None) -> dict[str, int]:
        """One request, one reply per motor (in id order on the wire)."""
        names = self._names(names)
        address, size = self._common_spec(reg, names)
        by_id = sorted(names, key=lambda n: self.motors[n].id)
        ids = [self.motors[n].id for n in by_id]
        request = self._build_sync_read(address, size, ids)
        if request is None:
            return {n: self.read(reg, n) for n in names}
        replies = self._transact(request, dict.fromkeys(ids, size), f"SYNC_READ {reg.name}")
        return {n: self._decode(self.motors[n], reg, replies[self.motors[n].id].data) for n in names}

    def sync_write(self, reg: Any, values: Mapping[str, int]) -> None:
        """One broadcast request, no reply (so no retry either: the servos do not acknowledge it)."""
        names = self._names(list(values))
        address, size = self._common_spec(reg, names)
        data = {self.motors[n].id: self._encode(self.motors[n], reg, values[n]) for n in names}
        self._transact(self._build_sync_write(address, size, data), {}, f"SYNC_WRITE {reg.name}")

    # ---- torque --------------------------------------------------------------------------------
    def enable_torque(self, names: Sequence[str] | None = None) -> None:
        names = self._names(names)
        for name in names:
            self._last_goal_ticks.pop(name, None)  # the servo holds its own goal now; re-seed the cap
        self.sync_write(self.REG_TORQUE_ENABLE, dict.fromkeys(names, 1))

    def disable_torque(self, names: Sequence[str] | None = None) -> None:
        self.sync_write(self.REG_TORQUE_ENABLE, dict.fromkeys(self._names(names), 0))

    @contextmanager
    def torque_disabled(self, names: Sequence[str] | None = None) -> Iterator[None]:
        """Torque off for EEPROM writes; restores torque on the motors that had it."""
        names = self._names(names)
        enabled = [n for n, on in self.sync_read(self.REG_TORQUE_ENABLE, names).items() if on]
        self.disable_torque(names)
        try:
            yield
        finally:
            if enabled:
                self.enable_torque(enabled)

    # ---- calibrated positions ------------------------------------------------------------------
    def _calibration(self, name: str) -> MotorCalibration:
        cal = self.calibration.get(name)
        if cal is None:
            resolution = self.motors[name].model.info.resolution_ticks
            cal = MotorCalibration(0, 0, resolution - 1)
        return cal

    def to_normalized(self, name: str, ticks: int) -> float:
        motor = self.motors[name]
        resolution = motor.model.info.resolution_ticks
        return to_normalized(ticks, motor.norm_mode, self._calibration(name), resolution)

    def from_normalized(self, name: str, value: float) -> int:
        motor = self.motors[name]
        if not math.isfinite(value):
            raise ValueError(f"goal for motor {name!r} is {value}; expected a finite number")
        resolution = motor.model.info.resolution_ticks
        return from_normalized(value, motor.norm_mode, self._calibration(name), resolution)

    def read_positions(self, names: Sequence[str] | None = None) -> dict[str, float]:
        ticks = self.sync_read(self.REG_PRESENT_POSITION, names)
        return {n: self.to_normalized(n, t) for n, t in ticks.items()}

    def send_action(self, goals: Mapping[str, float]) -> dict[str, float]:
        """Send normalised goal positions; returns what was actually sent after clamping and capping.

        Goals are clamped into the calibrated range, then each moves at most `max_goal_step_ticks`
        from the goal sent before (seeded from Present_Position on first use and after torque is
        enabled). Capping against the previous goal, not a fresh reading, keeps this one bus write.
        """
        ticks = {name: self.from_normalized(name, value) for name, value in goals.items()}
        cap = self.config.max_goal_step_ticks
        if cap is not None:
            unseeded = [n for n in ticks if n not in self._last_goal_ticks]
            if unseeded:
                self._last_goal_ticks.update(self.sync_read(self.REG_PRESENT_POSITION, unseeded))
            for name, goal in ticks.items():
                last = self._last_goal_ticks[name]
                ticks[name] = min(max(goal, last - cap), last + cap)
        self.sync_write(self.REG_GOAL_POSITION, ticks)
        self._last_goal_ticks.update(ticks)
        return {n: self.to_normalized(n, t) for n, t in ticks.items()}

    # ---- calibration on the servo --------------------------------------------------------------
    def write_calibration(self, calibration: Mapping[str, MotorCalibration]) -> None:
        """Write offsets and limits (EEPROM, so with torque off) and use them for normalisation."""
        names = self._names(list(calibration))
        with self.torque_disabled(names):
            for name in names:
                cal = calibration[name]
                if self._has(name, self.REG_HOMING_OFFSET):
                    self.write(self.REG_HOMING_OFFSET, name, cal.homing_offset_ticks)
                self.write(self.REG_MIN_POSITION_LIMIT, name, cal.range_min_ticks)
                self.write(self.REG_MAX_POSITION_LIMIT, name, cal.range_max_ticks)
        self.calibration.update(calibration)
        self._last_goal_ticks.clear()

    def read_calibration(self, names: Sequence[str] | None = None) -> dict[str, MotorCalibration]:
        """Calibration as stored on the servos; `inverted` is software-only and comes from the config."""
        names = self._names(names)
        out = {}
        for name in names:
            has_offset = self._has(name, self.REG_HOMING_OFFSET)
            out[name] = MotorCalibration(
                homing_offset_ticks=self.read(self.REG_HOMING_OFFSET, name) if has_offset else 0,
                range_min_ticks=self.read(self.REG_MIN_POSITION_LIMIT, name),
                range_max_ticks=self.read(self.REG_MAX_POSITION_LIMIT, name),
                inverted=self._calibration(name).inverted,
            )
        return out

    def home_here(self, names: Sequence[str] | None = None) -> dict[str, int]:
        """Set homing offsets so the current pose reads half a turn (0 rad); returns the offsets."""
        names = self._names(names)
        offsets = {}
        with self.torque_disabled(names):
            present = self.sync_read(self.REG_PRESENT_POSITION, names)
            for name in names:
                old = self.read(self.REG_HOMING_OFFSET, name)
                resolution = self.motors[name].model.info.resolution_ticks
                offsets[name] = self._homing_offset_to_center(present[name], old, resolution)
                self.write(self.REG_HOMING_OFFSET, name, offsets[name])
        for name, offset in offsets.items():
            cal = self._calibration(name)
            self.calibration[name] = MotorCalibration(offset, cal.range_min_ticks, cal.range_max_ticks,
                                                      cal.inverted)
        self._last_goal_ticks.clear()
        return offsets
