"""Feetech STS/SCS bus: the shared `SerialMotorBus` with Feetech's codec.

Byte order and sign-magnitude come from each motor's model (STS little-endian, SCS big-endian);
SCS servos have no sync read, so the bus reads them one by one. EEPROM writes are bracketed by
Lock = 0 / Lock = 1, as the servo only keeps unlocked EEPROM writes across power cycles.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from hardware.errors import DeviceAlertError
from hardware.feetech import protocol
from hardware.feetech.protocol import Packet, PacketParser, StatusBit
from hardware.feetech.tables import Model, Reg, spec_of
from hardware.motor_bus import Motor, MotorBusConfig, MotorCalibration, SerialMotorBus


class FeetechBus(SerialMotorBus):
    family = "feetech"
    REG_TORQUE_ENABLE = Reg.TORQUE_ENABLE
    REG_GOAL_POSITION = Reg.GOAL_POSITION
    REG_PRESENT_POSITION = Reg.PRESENT_POSITION
    REG_HOMING_OFFSET = Reg.HOMING_OFFSET
    REG_MIN_POSITION_LIMIT = Reg.MIN_POSITION_LIMIT
    REG_MAX_POSITION_LIMIT = Reg.MAX_POSITION_LIMIT

    def __init__(self, config: MotorBusConfig) -> None:
        super().__init__(config)
        self._last_request = b""
        self._alert_bits: dict[int, int] = {}

    # ---- codec hooks ---------------------------------------------------------------------------
    family = "hardware.feetech"
    model_type = Model
    max_id = protocol.MAX_ID

    def _register(self, model: Model, reg: Reg):
        return spec_of(model, reg)

    def _encode(self, motor: Motor, reg: Reg, value: int) -> bytes:
        spec = spec_of(motor.model, reg)
        return protocol.encode(value, spec.size, spec.sign_bit, motor.model.info.series.big_endian)

    def _decode(self, motor: Motor, reg: Reg, data: bytes) -> int:
        spec = spec_of(motor.model, reg)
        return protocol.decode(data, spec.sign_bit, motor.model.info.series.big_endian)

    def _new_parser(self) -> PacketParser:
        return PacketParser()

    def _status_size(self, n_data: int) -> int:
        return protocol.status_size(n_data)

    def _is_status(self, packet: Packet) -> bool:
        # Status and instruction frames look alike; an adapter echoing our request is not a reply.
        return packet.raw != self._last_request

    def _check_status(self, packet: Packet, instruction: str) -> bool:
        if packet.code:
            self._alert_bits[packet.device_id] = packet.code
            return True
        return False

    def _alert_error(self, name: str, instruction: str) -> Exception:
        motor = self.motors[name]
        bits = self._alert_bits.get(motor.id, 0)
        faults = [b.name for b in StatusBit if b & bits] or [f"status byte 0x{bits:02X}"]
        return DeviceAlertError(
            self._label(motor.id), faults,
            "Check supply voltage, load and temperature; the servo resumes once the condition clears.",
        )

    def _transact(self, request: bytes, expected: Mapping[int, int], instruction: str,
                  check_alert: bool = True) -> dict[int, Packet]:
        self._last_request = request
        return super()._transact(request, expected, instruction, check_alert)

    def _build_read(self, device_id: int, address: int, size: int) -> bytes:
        return protocol.read(device_id, address, size)

    def _build_write(self, device_id: int, address: int, data: bytes) -> bytes:
        return protocol.write(device_id, address, data)

    def _build_sync_read(self, address: int, size: int, ids: Sequence[int]) -> bytes | None:
        models = {m.model for m in self.motors.values() if m.id in ids}
        if not all(model.info.series.has_sync_read for model in models):
            return None
        return protocol.sync_read(address, size, ids)

    def _build_sync_write(self, address: int, size: int, data_by_id: Mapping[int, bytes]) -> bytes:
        return protocol.sync_write(address, size, data_by_id)

    def _homing_offset_to_center(self, present_ticks: int, offset_ticks: int, resolution: int) -> int:
        # Feetech reports Present_Position = actual - Homing_Offset (the opposite of Dynamixel).
        return (present_ticks + offset_ticks) - resolution // 2

    # ---- Feetech specifics ---------------------------------------------------------------------
    def ping(self, name: str) -> int:
        """Ping (an empty status), then read the model number register."""
        motor = self._motor(name)
        self._transact(protocol.ping(motor.id), {motor.id: 0}, "PING", check_alert=False)
        return self.read(Reg.MODEL_NUMBER, name)

    @contextmanager
    def unlocked(self, names: Sequence[str] | None = None) -> Iterator[None]:
        """Lock = 0 around EEPROM writes so they persist; Lock = 1 again afterwards."""
        names = [n for n in self._names(names) if Reg.LOCK in self.motors[n].model.info.table]
        self.sync_write(Reg.LOCK, dict.fromkeys(names, 0))
        try:
            yield
        finally:
            self.sync_write(Reg.LOCK, dict.fromkeys(names, 1))

    def write_calibration(self, calibration: Mapping[str, MotorCalibration]) -> None:
        for name, cal in calibration.items():
            has_offset = Reg.HOMING_OFFSET in self._motor(name).model.info.table
            if cal.homing_offset_ticks and not has_offset:
                raise ValueError(
                    f"motor {name!r} ({self.motors[name].model.info.name}) has no Homing_Offset register; "
                    "use homing_offset_ticks=0 and express the zero through the range"
                )
        with self.unlocked(list(calibration)):
            super().write_calibration(calibration)
