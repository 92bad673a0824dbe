"""Emulated Feetech STS/SCS servos on one bus (PING, READ, WRITE, SYNC_READ, SYNC_WRITE).

Register memory is initialised from the model's table and encoded in the series' byte order and
sign-magnitude, so a driver that gets either wrong reads wrong values here too.

Emulator assumptions (not datasheet facts): goals outside the position limits are clamped by the
servo, not rejected; the Lock register is stored but does not gate EEPROM writes (on the real servo
it only decides whether they survive a power cycle); unknown instructions get no reply.
"""

from __future__ import annotations

import time

from hardware.emulators.servo_bus import ServoBusEmulator
from hardware.emulators.servo_physics import ServoDynamics, track_position
from hardware.errors import ChecksumError, FrameError
from hardware.feetech import protocol
from hardware.feetech.protocol import Instruction, Packet, PacketParser, StatusBit
from hardware.feetech.tables import Model, Reg

MEMORY_SIZE = 128

_DEFAULTS: dict[Reg, int] = {
    Reg.FIRMWARE_MAJOR_VERSION: 3,
    Reg.FIRMWARE_MINOR_VERSION: 10,
    Reg.BAUD_RATE: 0,
    Reg.RETURN_DELAY_TIME: 0,
    Reg.MIN_POSITION_LIMIT: 0,
    Reg.P_COEFFICIENT: 32,
    Reg.TORQUE_LIMIT: 1000,
    Reg.LOCK: 1,
    Reg.PRESENT_VOLTAGE: 74,
    Reg.PRESENT_TEMPERATURE: 30,
}


class EmulatedFeetech:
    """One servo: encoded register memory, position tracking, hardware status bits."""

    def __init__(self, device_id: int, model: Model, position_ticks: float = 2048.0,
                 dynamics: ServoDynamics | None = None, now_s: float | None = None) -> None:
        self.model = model
        self.table = model.info.table
        self.big_endian = model.info.series.big_endian
        self.dynamics = dynamics or ServoDynamics(max_speed_ticks_s=model.info.resolution_ticks)
        self.memory = bytearray(MEMORY_SIZE)
        for reg, value in _DEFAULTS.items():
            if reg in self.table:
                self.poke(reg, value)
        self.poke(Reg.MODEL_NUMBER, model.info.model_number)
        self.poke(Reg.ID, device_id)
        self.poke(Reg.MAX_POSITION_LIMIT, model.info.resolution_ticks - 1)
        self.shaft_ticks = float(position_ticks)
        self.velocity_ticks_s = 0.0
        self.status_bits = StatusBit(0)  # reported in every status packet's error byte
        self._last_update_s = time.monotonic() if now_s is None else now_s
        self._update_present()
        self.poke(Reg.GOAL_POSITION, self.peek(Reg.PRESENT_POSITION))

    def set_position(self, ticks: float) -> None:
        """Move the horn as a hand would (torque off), in the motor's own frame."""
        self.shaft_ticks = float(ticks)
        self._update_present()

    @property
    def id(self) -> int:
        return self.memory[self.table[Reg.ID].address]

    def poke(self, reg: Reg, value: int) -> None:
        spec = self.table[reg]
        data = protocol.encode(value, spec.size, spec.sign_bit, self.big_endian)
        self.memory[spec.address : spec.address + spec.size] = data

    def _poke_clamped(self, reg: Reg, value: int) -> None:
        """Derived registers saturate at what the encoding can hold, as the firmware's do."""
        spec = self.table[reg]
        bits = spec.sign_bit if spec.sign_bit is not None else 8 * spec.size
        limit = (1 << bits) - 1
        low = -limit if spec.sign_bit is not None else 0
        value = min(max(value, low), limit)
        data = protocol.encode(value, spec.size, spec.sign_bit, self.big_endian)
        self.memory[spec.address : spec.address + spec.size] = data

    def peek(self, reg: Reg) -> int:
        spec = self.table[reg]
        return protocol.decode(bytes(self.memory[spec.address : spec.address + spec.size]), spec.sign_bit,
                               self.big_endian)

    def _offset(self) -> int:
        return self.peek(Reg.HOMING_OFFSET) if Reg.HOMING_OFFSET in self.table else 0

    def advance(self, now_s: float) -> None:
        dt = now_s - self._last_update_s
        if dt <= 0:
            return
        self._last_update_s = now_s
        self.velocity_ticks_s = 0.0
        if self.peek(Reg.TORQUE_ENABLE):
            goal = min(max(self.peek(Reg.GOAL_POSITION), self.peek(Reg.MIN_POSITION_LIMIT)),
                       self.peek(Reg.MAX_POSITION_LIMIT))
            target = goal + self._offset()  # Present = actual - Homing_Offset
            self.shaft_ticks, self.velocity_ticks_s = track_position(
                self.shaft_ticks, target, dt, self.dynamics, self.dynamics.max_speed_ticks_s
            )
        self._update_present()

    def _update_present(self) -> None:
        velocity_ticks_s = self.velocity_ticks_s
        resolution = self.model.info.resolution_ticks
        present = round(self.shaft_ticks) - self._offset()
        if Reg.HOMING_OFFSET not in self.table:
            present = min(max(present, 0), resolution - 1)
        self._poke_clamped(Reg.PRESENT_POSITION, present)
        self._poke_clamped(Reg.PRESENT_VELOCITY, round(velocity_ticks_s))
        self.poke(Reg.MOVING, int(abs(velocity_ticks_s) > 1.0))
        if self.peek(Reg.TORQUE_ENABLE):
            error = self.peek(Reg.GOAL_POSITION) - present
            self.poke(Reg.PRESENT_LOAD, max(-1000, min(1000, round(error * self.dynamics.current_per_tick))))
        else:
            self.poke(Reg.PRESENT_LOAD, 0)

    def read(self, address: int, size: int) -> bytes | None:
        if size == 0 or address + size > MEMORY_SIZE:
            return None
        return bytes(self.memory[address : address + size])

    def write(self, address: int, data: bytes) -> bool:
        """Apply a write; False (and nothing written) if it touches a read-only register or overflows."""
        if not data or address + len(data) > MEMORY_SIZE:
            return False
        for spec in self.table.values():
            if spec.read_only and address < spec.address + spec.size and spec.address < address + len(data):
                return False
        id_spec = self.table[Reg.ID]
        if address <= id_spec.address < address + len(data) and data[id_spec.address - address] > protocol.MAX_ID:
            return False
        enabling = self._touches(Reg.TORQUE_ENABLE, address, data) and not self.peek(Reg.TORQUE_ENABLE)
        self.memory[address : address + len(data)] = data
        if enabling:
            self.poke(Reg.GOAL_POSITION, self.peek(Reg.PRESENT_POSITION))
        self._update_present()  # e.g. a new homing offset shows in the very next read
        return True

    def _touches(self, reg: Reg, address: int, data: bytes) -> bool:
        spec = self.table[reg]
        return address <= spec.address < address + len(data) and data[spec.address - address] != 0

    def status(self, data: bytes = b"") -> bytes:
        return protocol.build_packet(self.id, int(self.status_bits), data)


class FeetechBusEmulator(ServoBusEmulator):
    """Several `EmulatedFeetech` on one line. SCS servos ignore SYNC_READ, as the series lacks it."""

    servo_cls = EmulatedFeetech
    parser_cls = PacketParser

    def receive(self, data: bytes, now_s: float) -> list[bytes]:
        with self.lock:
            self.parser.feed(data)
            replies: list[bytes] = []
            while True:
                try:
                    packet = self.parser.next_packet()
                except (ChecksumError, FrameError):
                    self.bad_requests += 1  # the real servo stays silent on a bad checksum
                    continue
                if packet is None:
                    return replies
                replies.extend(self._execute(packet, now_s))
                if any(device_id != servo.id for device_id, servo in self.servos.items()):
                    self.servos = {s.id: s for s in self._all_servos}  # follow ID writes

    def _execute(self, packet: Packet, now_s: float) -> list[bytes]:
        inst, params = packet.code, packet.params
        if packet.device_id == protocol.BROADCAST_ID:
            if inst == Instruction.SYNC_READ and len(params) >= 2:
                replies = []
                for device_id in params[2:]:
                    servo = self.servos.get(device_id)
                    if servo is not None and servo.model.info.series.has_sync_read:
                        replies += self._read(servo, params[0], params[1], now_s)
                return replies
            if inst == Instruction.SYNC_WRITE and len(params) >= 2 and params[1]:
                size = params[1]
                body = params[2:]
                if len(body) % (size + 1) == 0:
                    for k in range(0, len(body), size + 1):
                        servo = self.servos.get(body[k])
                        if servo is not None:
                            servo.advance(now_s)
                            servo.write(params[0], bytes(body[k + 1 : k + 1 + size]))
            return []
        servo = self.servos.get(packet.device_id)
        if servo is None:
            return []
        servo.advance(now_s)
        if inst == Instruction.PING:
            return [servo.status()]
        if inst == Instruction.READ and len(params) == 2:
            return self._read(servo, params[0], params[1], now_s)
        if inst == Instruction.WRITE and len(params) >= 2:
            servo.write(params[0], bytes(params[1:]))
            return [servo.status()]
        return []

    @staticmethod
    def _read(servo: EmulatedFeetech, address: int, size: int, now_s: float) -> list[bytes]:
        servo.advance(now_s)
        data = servo.read(address, size)
        return [] if data is None else [servo.status(data)]
