"""Emulated Dynamixel X-series servos on one Protocol 2.0 bus.

Each servo keeps a byte-addressed register memory initialised from its model's control table and
enforces what real servos enforce: read-only registers, EEPROM only with torque off, operating
modes per model, position/current/velocity limits, the bus watchdog, hardware alerts. Requests are
parsed with the same codec the driver uses, but in the device's role.

Emulator assumptions (not datasheet facts): motion follows `ServoDynamics`; enabling torque sets
Goal_Position to Present_Position; while the bus watchdog is tripped only 0 may be written to it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable

from hardware.dynamixel import protocol
from hardware.dynamixel.protocol import ALERT_BIT, Instruction, Packet, PacketParser, StatusError
from hardware.dynamixel.tables import (
    BUS_WATCHDOG_TRIPPED,
    BUS_WATCHDOG_UNIT_S,
    VELOCITY_UNIT_RPM,
    HardwareErrorBit,
    Model,
    OperatingMode,
    Reg,
    RegisterSpec,
)
from hardware.emulators.servo_bus import ServoBusEmulator
from hardware.emulators.servo_physics import ServoDynamics, move_at, track_position
from hardware.errors import ChecksumError, FrameError

MEMORY_SIZE = 256  # covers the X-series table up to Present_Temperature and beyond
HOMING_OFFSET_LIMIT = 1_044_479  # e-manual range of Homing_Offset (+-255 turns)
FIRMWARE_VERSION = 48

_DEFAULTS: dict[Reg, int] = {
    Reg.FIRMWARE_VERSION: FIRMWARE_VERSION,
    Reg.BAUD_RATE: 1,  # 57600, the factory setting
    Reg.RETURN_DELAY_TIME: 250,
    Reg.OPERATING_MODE: OperatingMode.POSITION,
    Reg.MOVING_THRESHOLD: 10,
    Reg.TEMPERATURE_LIMIT: 70,
    Reg.PWM_LIMIT: 885,
    Reg.CURRENT_LIMIT: 1193,
    Reg.VELOCITY_LIMIT: 265,
    Reg.MAX_POSITION_LIMIT: 4095,
    Reg.MIN_POSITION_LIMIT: 0,
    Reg.SHUTDOWN: 52,
    Reg.STATUS_RETURN_LEVEL: 2,
    Reg.VELOCITY_I_GAIN: 1920,
    Reg.VELOCITY_P_GAIN: 100,
    Reg.POSITION_P_GAIN: 800,
    Reg.PRESENT_INPUT_VOLTAGE: 120,
    Reg.PRESENT_TEMPERATURE: 35,
}
_GOALS = (Reg.GOAL_PWM, Reg.GOAL_CURRENT, Reg.GOAL_VELOCITY, Reg.GOAL_POSITION)
_POSITION_MODES = (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION,
                   OperatingMode.CURRENT_BASED_POSITION)


class EmulatedDynamixel:
    """One servo: register memory, motion, limits, watchdog and fault knobs.

    Not thread-safe by itself; `DynamixelBusEmulator` serialises access with its lock.
    """

    def __init__(
        self,
        device_id: int,
        model: Model,
        position_ticks: float = 2048.0,
        dynamics: ServoDynamics | None = None,
        now_s: float | None = None,
    ) -> None:
        self.model = model
        self.table: dict[Reg, RegisterSpec] = model.info.table
        self.dynamics = dynamics or ServoDynamics()
        self.memory = bytearray(MEMORY_SIZE)
        self._by_address = {spec.address: (reg, spec) for reg, spec in self.table.items()}
        for reg, value in _DEFAULTS.items():
            if reg in self.table:
                self._poke(reg, int(value))
        self._poke(Reg.MODEL_NUMBER, model.info.model_number)
        self._poke(Reg.ID, device_id)
        self.shaft_ticks = float(position_ticks)  # motor frame; Present_Position adds Homing_Offset
        self.velocity_ticks_s = 0.0
        self.watchdog_tripped = False
        self.injected_errors: deque[StatusError] = deque()
        self.external_load_current = 0.0  # extra current units, as if something pushed the horn
        now = time.monotonic() if now_s is None else now_s
        self._last_update_s = now
        self.last_instruction_s = now
        self._update_present()

    # ---- register memory -----------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self.memory[self.table[Reg.ID].address]

    def _poke(self, reg: Reg, value: int) -> None:
        spec = self.table[reg]
        self.memory[spec.address : spec.address + spec.size] = protocol.encode(value, spec.size, spec.signed)

    def _poke_clamped(self, reg: Reg, value: int) -> None:
        """Derived registers saturate at what their size can hold instead of overflowing."""
        spec = self.table[reg]
        bits = 8 * spec.size - (1 if spec.signed else 0)
        low = -(1 << bits) if spec.signed else 0
        self._poke(reg, min(max(value, low), (1 << bits) - 1))

    def peek(self, reg: Reg) -> int:
        spec = self.table[reg]
        return protocol.decode(bytes(self.memory[spec.address : spec.address + spec.size]), spec.signed)

    def has(self, reg: Reg) -> bool:
        return reg in self.table

    # ---- fault knobs ---------------------------------------------------------------------------
    def inject_status_error(self, error: StatusError, count: int = 1) -> None:
        """The next `count` status packets carry `error` (and the instruction is not executed)."""
        self.injected_errors.extend([error] * count)

    def raise_hardware_error(self, bits: HardwareErrorBit) -> None:
        """As the servo does on overload or overheating: set the bits and switch torque off."""
        self._poke(Reg.HARDWARE_ERROR_STATUS, self.peek(Reg.HARDWARE_ERROR_STATUS) | int(bits))
        self._poke(Reg.TORQUE_ENABLE, 0)

    def set_position(self, ticks: float) -> None:
        """Move the horn as a hand would (torque off), in the motor's own frame."""
        self.shaft_ticks = float(ticks)
        self._update_present()

    def reboot(self) -> None:
        self._poke(Reg.HARDWARE_ERROR_STATUS, 0)
        self._poke(Reg.TORQUE_ENABLE, 0)
        self._poke(Reg.BUS_WATCHDOG, 0)
        self.watchdog_tripped = False

    # ---- motion --------------------------------------------------------------------------------
    def _ticks_s(self, velocity_units: int) -> float:
        return velocity_units * VELOCITY_UNIT_RPM / 60.0 * self.model.info.resolution_ticks

    def _max_speed_ticks_s(self) -> float:
        limit = self._ticks_s(self.peek(Reg.VELOCITY_LIMIT))
        profile = self._ticks_s(self.peek(Reg.PROFILE_VELOCITY))
        speed = min(self.dynamics.max_speed_ticks_s, limit or self.dynamics.max_speed_ticks_s)
        return min(speed, profile) if profile else speed

    def _integrate(self, dt_s: float) -> None:
        if dt_s <= 0:
            return
        if not self.peek(Reg.TORQUE_ENABLE):
            self.velocity_ticks_s = 0.0
            return
        mode = self.peek(Reg.OPERATING_MODE)
        vmax = self._max_speed_ticks_s()
        if mode in _POSITION_MODES:
            target = self.peek(Reg.GOAL_POSITION) - self.peek(Reg.HOMING_OFFSET)
            self.shaft_ticks, self.velocity_ticks_s = track_position(
                self.shaft_ticks, target, dt_s, self.dynamics, vmax
            )
            return
        if mode == OperatingMode.VELOCITY:
            velocity = self._ticks_s(self.peek(Reg.GOAL_VELOCITY))
        elif mode == OperatingMode.CURRENT:
            velocity = self.peek(Reg.GOAL_CURRENT) * self.dynamics.speed_per_current
        else:  # PWM
            velocity = self.peek(Reg.GOAL_PWM) / 885.0 * vmax
        self.shaft_ticks, self.velocity_ticks_s = move_at(self.shaft_ticks, velocity, dt_s, vmax)

    def advance(self, now_s: float) -> None:
        """Bring motion and the bus watchdog up to `now_s` (called before every access)."""
        if now_s <= self._last_update_s:
            return
        window = self.peek(Reg.BUS_WATCHDOG)
        if window > 0 and self.peek(Reg.TORQUE_ENABLE) and not self.watchdog_tripped:
            trip_s = self.last_instruction_s + window * BUS_WATCHDOG_UNIT_S
            if trip_s < now_s:
                self._integrate(trip_s - self._last_update_s)
                self._last_update_s = max(self._last_update_s, trip_s)
                self._trip_watchdog()
        self._integrate(now_s - self._last_update_s)
        self._last_update_s = now_s
        self._update_present()

    def _trip_watchdog(self) -> None:
        # The servo stops where it is and refuses new goals until Bus_Watchdog is cleared.
        self.watchdog_tripped = True
        self._poke(Reg.BUS_WATCHDOG, BUS_WATCHDOG_TRIPPED)
        self._update_present()
        self._poke(Reg.GOAL_POSITION, self.peek(Reg.PRESENT_POSITION))
        for reg in (Reg.GOAL_VELOCITY, Reg.GOAL_PWM, Reg.GOAL_CURRENT):
            if self.has(reg):
                self._poke(reg, 0)
        self.velocity_ticks_s = 0.0

    def _update_present(self) -> None:
        present = round(self.shaft_ticks) + self.peek(Reg.HOMING_OFFSET)
        self._poke_clamped(Reg.PRESENT_POSITION, present)
        rpm = self.velocity_ticks_s / self.model.info.resolution_ticks * 60.0
        self._poke_clamped(Reg.PRESENT_VELOCITY, round(rpm / VELOCITY_UNIT_RPM))
        self._poke(Reg.MOVING, int(abs(self.velocity_ticks_s) > 1.0))
        self._poke(Reg.REALTIME_TICK, int(self._last_update_s * 1000) % 32768)
        current_reg = Reg.PRESENT_CURRENT if self.has(Reg.PRESENT_CURRENT) else Reg.PRESENT_LOAD
        current = self.external_load_current
        if self.peek(Reg.TORQUE_ENABLE):
            mode = self.peek(Reg.OPERATING_MODE)
            if mode in _POSITION_MODES:
                current += self.dynamics.current_per_tick * (self.peek(Reg.GOAL_POSITION) - present)
            elif mode == OperatingMode.CURRENT:
                current += self.peek(Reg.GOAL_CURRENT)
        limit = self.peek(Reg.CURRENT_LIMIT) if self.has(Reg.CURRENT_LIMIT) else 1000
        self._poke(current_reg, round(max(-limit, min(limit, current))))

    # ---- instruction semantics -----------------------------------------------------------------
    def read(self, address: int, size: int) -> tuple[StatusError, bytes]:
        if size == 0 or address + size > MEMORY_SIZE:
            return StatusError.DATA_RANGE, b""
        return StatusError.NONE, bytes(self.memory[address : address + size])

    def write(self, address: int, data: bytes) -> StatusError:
        """Validate the whole write first, then apply it, as the firmware does (all or nothing)."""
        end = address + len(data)
        if not data or end > MEMORY_SIZE:
            return StatusError.DATA_RANGE
        touched: list[tuple[Reg, RegisterSpec, int]] = []
        for reg_address in range(address, end):
            entry = self._by_address.get(reg_address)
            if entry is None:
                continue
            reg, spec = entry
            if reg_address + spec.size > end:
                return StatusError.DATA_LENGTH
            raw = bytes(data[reg_address - address : reg_address - address + spec.size])
            touched.append((reg, spec, protocol.decode(raw, spec.signed)))
        # A write starting inside a multi-byte register is also a length error.
        for reg_address, (_, spec) in self._by_address.items():
            if reg_address < address < reg_address + spec.size:
                return StatusError.DATA_LENGTH
        for reg, spec, value in touched:
            error = self._check_write(reg, spec, value)
            if error:
                return error
        for reg, spec, value in touched:
            self._apply_write(reg, spec, value)
        self._update_present()  # a read in the same instant must already see the new goal's effect
        return StatusError.NONE

    def _check_write(self, reg: Reg, spec: RegisterSpec, value: int) -> StatusError:
        torque_on = bool(self.peek(Reg.TORQUE_ENABLE))
        if spec.read_only or (spec.eeprom and torque_on):
            return StatusError.ACCESS
        if self.watchdog_tripped and (reg in _GOALS or (reg == Reg.BUS_WATCHDOG and value != 0)):
            return StatusError.ACCESS
        if reg == Reg.OPERATING_MODE and value not in {int(m) for m in self.model.info.operating_modes}:
            return StatusError.DATA_RANGE
        if reg == Reg.TORQUE_ENABLE and value not in (0, 1):
            return StatusError.DATA_RANGE
        if reg == Reg.BUS_WATCHDOG and not 0 <= value <= 127:
            return StatusError.DATA_RANGE
        if reg == Reg.ID and value > protocol.MAX_ID:
            return StatusError.DATA_RANGE
        if reg == Reg.HOMING_OFFSET and abs(value) > HOMING_OFFSET_LIMIT:
            return StatusError.DATA_RANGE
        if (
            reg == Reg.GOAL_POSITION
            and self.peek(Reg.OPERATING_MODE) == OperatingMode.POSITION
            and not self.peek(Reg.MIN_POSITION_LIMIT) <= value <= self.peek(Reg.MAX_POSITION_LIMIT)
        ):
            return StatusError.DATA_LIMIT
        if reg == Reg.GOAL_CURRENT and abs(value) > self.peek(Reg.CURRENT_LIMIT):
            return StatusError.DATA_LIMIT
        if reg == Reg.GOAL_VELOCITY and abs(value) > self.peek(Reg.VELOCITY_LIMIT):
            return StatusError.DATA_LIMIT
        return StatusError.NONE

    def _apply_write(self, reg: Reg, spec: RegisterSpec, value: int) -> None:
        if reg == Reg.TORQUE_ENABLE and value and not self.peek(Reg.TORQUE_ENABLE):
            self._poke(Reg.GOAL_POSITION, self.peek(Reg.PRESENT_POSITION))
        if reg == Reg.BUS_WATCHDOG and value == 0:
            self.watchdog_tripped = False
        self._poke(reg, value)

    def status(self, error: StatusError, data: bytes = b"") -> bytes:
        code = int(error)
        if self.peek(Reg.HARDWARE_ERROR_STATUS):
            code |= ALERT_BIT
        return protocol.build_status(self.id, code, data if error == StatusError.NONE else b"")


class DynamixelBusEmulator(ServoBusEmulator):
    """Several `EmulatedDynamixel` on one line, answering Protocol 2.0 instructions.

    Use with `EmulatorServer(DynamixelBusEmulator([...]))`; `bad_requests` counts corrupt frames (the bus
    answers CRC errors when it can tell the id).
    """

    servo_cls = EmulatedDynamixel
    parser_cls = PacketParser

    def __init__(self, servos: Iterable[EmulatedDynamixel]) -> None:
        super().__init__(servos)
        self.deferred: dict[int, tuple[int, bytes]] = {}  # REG_WRITE: id -> (address, data)

    def receive(self, data: bytes, now_s: float) -> list[bytes]:
        with self.lock:
            self.parser.feed(data)
            replies: list[bytes] = []
            while True:
                try:
                    packet = self.parser.next_packet()
                except ChecksumError as exc:
                    self.bad_requests += 1
                    servo = self.servos.get(-1 if exc.device_id is None else exc.device_id)
                    if servo is not None:
                        replies.append(servo.status(StatusError.CRC))
                    continue
                except FrameError:
                    self.bad_requests += 1
                    continue
                if packet is None:
                    return replies
                replies.extend(self._execute(packet, now_s))
                self._rekey()

    def _rekey(self) -> None:
        """Follow ID writes. A servo renumbered onto another's id shadows it, as a collision would."""
        if any(device_id != servo.id for device_id, servo in self.servos.items()):
            self.servos = {s.id: s for s in self._all_servos}

    # ---- dispatch ------------------------------------------------------------------------------
    def _touch(self, device_id: int, now_s: float) -> EmulatedDynamixel | None:
        servo = self.servos.get(device_id)
        if servo is not None:
            servo.advance(now_s)
            servo.last_instruction_s = now_s
        return servo

    def _reply(
        self, servo: EmulatedDynamixel, instruction: int, error: StatusError, data: bytes = b""
    ) -> list[bytes]:
        # Status_Return_Level: 0 answers PING only, 1 also READ, 2 everything.
        level = servo.peek(Reg.STATUS_RETURN_LEVEL)
        answered = {0: (Instruction.PING,), 1: (Instruction.PING, Instruction.READ)}.get(level)
        if answered is not None and instruction not in answered:
            return []
        return [servo.status(error, data)]

    def _execute(self, packet: Packet, now_s: float) -> list[bytes]:
        inst, params, target = packet.instruction, packet.params, packet.device_id
        if inst == Instruction.STATUS:
            return []  # another device's reply (or our own echo)
        if target == protocol.BROADCAST_ID:
            return self._execute_broadcast(inst, params, now_s)
        servo = self._touch(target, now_s)
        if servo is None:
            return []
        if servo.injected_errors:
            return self._reply(servo, inst, servo.injected_errors.popleft())
        if inst == Instruction.PING:
            info = servo.model.info
            return self._reply(servo, inst, StatusError.NONE,
                               info.model_number.to_bytes(2, "little") + bytes((FIRMWARE_VERSION,)))
        if inst == Instruction.READ:
            if len(params) != 4:
                return self._reply(servo, inst, StatusError.DATA_LENGTH)
            address, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:], "little")
            error, data = servo.read(address, size)
            return self._reply(servo, inst, error, data)
        if inst in (Instruction.WRITE, Instruction.REG_WRITE):
            if len(params) < 3:
                return self._reply(servo, inst, StatusError.DATA_LENGTH)
            address = int.from_bytes(params[:2], "little")
            if inst == Instruction.REG_WRITE:
                self.deferred[target] = (address, bytes(params[2:]))
                return self._reply(servo, inst, StatusError.NONE)
            return self._reply(servo, inst, servo.write(address, bytes(params[2:])))
        if inst == Instruction.ACTION:
            return self._reply(servo, inst, self._action(target))
        if inst == Instruction.REBOOT:
            servo.reboot()
            return self._reply(servo, inst, StatusError.NONE)
        return self._reply(servo, inst, StatusError.INSTRUCTION)

    def _action(self, device_id: int) -> StatusError:
        if device_id not in self.deferred:
            return StatusError.INSTRUCTION
        address, data = self.deferred.pop(device_id)
        return self.servos[device_id].write(address, data)

    def _execute_broadcast(self, inst: int, params: bytes, now_s: float) -> list[bytes]:
        if inst == Instruction.PING:
            return [r for i in sorted(self.servos) for r in self._execute(Packet(i, inst, b""), now_s)]
        if inst == Instruction.ACTION:
            for device_id in list(self.deferred):
                self._action(device_id)
            return []
        if inst == Instruction.SYNC_READ and len(params) >= 4:
            address, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            return [r for i in params[4:] for r in self._read_as_listed(i, address, size, now_s)]
        if inst == Instruction.SYNC_WRITE and len(params) >= 4:
            address, size = int.from_bytes(params[:2], "little"), int.from_bytes(params[2:4], "little")
            body = params[4:]
            if size == 0 or len(body) % (size + 1):
                return []
            for k in range(0, len(body), size + 1):
                servo = self._touch(body[k], now_s)
                if servo is not None:
                    servo.write(address, bytes(body[k + 1 : k + 1 + size]))
            return []
        if inst == Instruction.BULK_READ and len(params) % 5 == 0:
            replies = []
            for k in range(0, len(params), 5):
                address = int.from_bytes(params[k + 1 : k + 3], "little")
                size = int.from_bytes(params[k + 3 : k + 5], "little")
                replies += self._read_as_listed(params[k], address, size, now_s)
            return replies
        if inst == Instruction.BULK_WRITE:
            k = 0
            while k + 5 <= len(params):
                size = int.from_bytes(params[k + 3 : k + 5], "little")
                address = int.from_bytes(params[k + 1 : k + 3], "little")
                servo = self._touch(params[k], now_s)
                if servo is not None:
                    servo.write(address, bytes(params[k + 5 : k + 5 + size]))
                k += 5 + size
            return []
        return []  # broadcast instructions that get no status

    def _read_as_listed(self, device_id: int, address: int, size: int, now_s: float) -> list[bytes]:
        servo = self._touch(device_id, now_s)
        if servo is None:
            return []  # an absent id stays silent; the driver times out on it
        if servo.injected_errors:
            return self._reply(servo, Instruction.READ, servo.injected_errors.popleft())
        error, data = servo.read(address, size)
        return self._reply(servo, Instruction.READ, error, data)
