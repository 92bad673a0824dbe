"""Dynamixel X-series control tables as data: register -> (address, size), per model.

Sources (ROBOTIS e-manual, firmware 2.0 tables):
- XL330-M077 / XL330-M288: https://emanual.robotis.com/docs/en/dxl/x/xl330-m288/
- XL430-W250: https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/
- XM430-W350: https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/
- XM540-W270: https://emanual.robotis.com/docs/en/dxl/x/xm540-w270/
Addresses below 64 are EEPROM: writable only while Torque_Enable is 0.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

EEPROM_END = 64  # first RAM address
TICKS_PER_REV = 4096
VELOCITY_UNIT_RPM = 0.229  # Present/Goal_Velocity, Velocity_Limit, Profile_Velocity
BUS_WATCHDOG_UNIT_S = 0.020
BUS_WATCHDOG_MAX = 127
BUS_WATCHDOG_TRIPPED = -1  # Bus_Watchdog reads -1 after a trip, until 0 is written


class Reg(enum.Enum):
    MODEL_NUMBER = enum.auto()
    FIRMWARE_VERSION = enum.auto()
    ID = enum.auto()
    BAUD_RATE = enum.auto()
    RETURN_DELAY_TIME = enum.auto()
    DRIVE_MODE = enum.auto()
    OPERATING_MODE = enum.auto()
    HOMING_OFFSET = enum.auto()
    MOVING_THRESHOLD = enum.auto()
    TEMPERATURE_LIMIT = enum.auto()
    PWM_LIMIT = enum.auto()
    CURRENT_LIMIT = enum.auto()
    VELOCITY_LIMIT = enum.auto()
    MAX_POSITION_LIMIT = enum.auto()
    MIN_POSITION_LIMIT = enum.auto()
    SHUTDOWN = enum.auto()
    TORQUE_ENABLE = enum.auto()
    LED = enum.auto()
    STATUS_RETURN_LEVEL = enum.auto()
    HARDWARE_ERROR_STATUS = enum.auto()
    VELOCITY_I_GAIN = enum.auto()
    VELOCITY_P_GAIN = enum.auto()
    POSITION_D_GAIN = enum.auto()
    POSITION_I_GAIN = enum.auto()
    POSITION_P_GAIN = enum.auto()
    BUS_WATCHDOG = enum.auto()
    GOAL_PWM = enum.auto()
    GOAL_CURRENT = enum.auto()
    GOAL_VELOCITY = enum.auto()
    PROFILE_ACCELERATION = enum.auto()
    PROFILE_VELOCITY = enum.auto()
    GOAL_POSITION = enum.auto()
    REALTIME_TICK = enum.auto()
    MOVING = enum.auto()
    MOVING_STATUS = enum.auto()
    PRESENT_PWM = enum.auto()
    PRESENT_CURRENT = enum.auto()
    PRESENT_LOAD = enum.auto()  # XL430: load in 0.1 % instead of a current
    PRESENT_VELOCITY = enum.auto()
    PRESENT_POSITION = enum.auto()
    PRESENT_INPUT_VOLTAGE = enum.auto()
    PRESENT_TEMPERATURE = enum.auto()


class RegisterSpec(NamedTuple):
    address: int
    size: int
    signed: bool = False
    read_only: bool = False

    @property
    def eeprom(self) -> bool:
        return self.address < EEPROM_END


_RO = {"read_only": True}

# Shared by XL330, XM430 and XM540 (current-sensing models).
X_CURRENT_TABLE: dict[Reg, RegisterSpec] = {
    Reg.MODEL_NUMBER: RegisterSpec(0, 2, **_RO),
    Reg.FIRMWARE_VERSION: RegisterSpec(6, 1, **_RO),
    Reg.ID: RegisterSpec(7, 1),
    Reg.BAUD_RATE: RegisterSpec(8, 1),
    Reg.RETURN_DELAY_TIME: RegisterSpec(9, 1),
    Reg.DRIVE_MODE: RegisterSpec(10, 1),
    Reg.OPERATING_MODE: RegisterSpec(11, 1),
    Reg.HOMING_OFFSET: RegisterSpec(20, 4, signed=True),
    Reg.MOVING_THRESHOLD: RegisterSpec(24, 4),
    Reg.TEMPERATURE_LIMIT: RegisterSpec(31, 1),
    Reg.PWM_LIMIT: RegisterSpec(36, 2),
    Reg.CURRENT_LIMIT: RegisterSpec(38, 2),
    Reg.VELOCITY_LIMIT: RegisterSpec(44, 4),
    Reg.MAX_POSITION_LIMIT: RegisterSpec(48, 4),
    Reg.MIN_POSITION_LIMIT: RegisterSpec(52, 4),
    Reg.SHUTDOWN: RegisterSpec(63, 1),
    Reg.TORQUE_ENABLE: RegisterSpec(64, 1),
    Reg.LED: RegisterSpec(65, 1),
    Reg.STATUS_RETURN_LEVEL: RegisterSpec(68, 1),
    Reg.HARDWARE_ERROR_STATUS: RegisterSpec(70, 1, **_RO),
    Reg.VELOCITY_I_GAIN: RegisterSpec(76, 2),
    Reg.VELOCITY_P_GAIN: RegisterSpec(78, 2),
    Reg.POSITION_D_GAIN: RegisterSpec(80, 2),
    Reg.POSITION_I_GAIN: RegisterSpec(82, 2),
    Reg.POSITION_P_GAIN: RegisterSpec(84, 2),
    Reg.BUS_WATCHDOG: RegisterSpec(98, 1, signed=True),
    Reg.GOAL_PWM: RegisterSpec(100, 2, signed=True),
    Reg.GOAL_CURRENT: RegisterSpec(102, 2, signed=True),
    Reg.GOAL_VELOCITY: RegisterSpec(104, 4, signed=True),
    Reg.PROFILE_ACCELERATION: RegisterSpec(108, 4),
    Reg.PROFILE_VELOCITY: RegisterSpec(112, 4),
    Reg.GOAL_POSITION: RegisterSpec(116, 4, signed=True),
    Reg.REALTIME_TICK: RegisterSpec(120, 2, **_RO),
    Reg.MOVING: RegisterSpec(122, 1, **_RO),
    Reg.MOVING_STATUS: RegisterSpec(123, 1, **_RO),
    Reg.PRESENT_PWM: RegisterSpec(124, 2, signed=True, read_only=True),
    Reg.PRESENT_CURRENT: RegisterSpec(126, 2, signed=True, read_only=True),
    Reg.PRESENT_VELOCITY: RegisterSpec(128, 4, signed=True, read_only=True),
    Reg.PRESENT_POSITION: RegisterSpec(132, 4, signed=True, read_only=True),
    Reg.PRESENT_INPUT_VOLTAGE: RegisterSpec(144, 2, **_RO),
    Reg.PRESENT_TEMPERATURE: RegisterSpec(146, 1, **_RO),
}

# XL430 has no current sensor: no Current_Limit / Goal_Current; 126 is Present_Load.
XL430_TABLE: dict[Reg, RegisterSpec] = {
    reg: spec
    for reg, spec in X_CURRENT_TABLE.items()
    if reg not in (Reg.CURRENT_LIMIT, Reg.GOAL_CURRENT, Reg.PRESENT_CURRENT)
}
XL430_TABLE[Reg.PRESENT_LOAD] = RegisterSpec(126, 2, signed=True, read_only=True)


class OperatingMode(enum.IntEnum):
    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16


_ALL_MODES = frozenset(OperatingMode)
_NO_CURRENT_MODES = _ALL_MODES - {OperatingMode.CURRENT, OperatingMode.CURRENT_BASED_POSITION}


@dataclass(frozen=True)
class ModelInfo:
    """What the driver needs to know about one model besides its table."""

    name: str
    model_number: int
    table: dict[Reg, RegisterSpec]
    operating_modes: frozenset[OperatingMode]
    current_unit_a: float | None  # A per Goal/Present_Current unit; None: no current sensing
    datasheet: str
    resolution_ticks: int = TICKS_PER_REV


class Model(enum.Enum):
    XL330_M077 = ModelInfo(
        "XL330-M077", 1190, X_CURRENT_TABLE, _ALL_MODES, 0.001,
        "https://emanual.robotis.com/docs/en/dxl/x/xl330-m077/",
    )
    XL330_M288 = ModelInfo(
        "XL330-M288", 1200, X_CURRENT_TABLE, _ALL_MODES, 0.001,
        "https://emanual.robotis.com/docs/en/dxl/x/xl330-m288/",
    )
    XL430_W250 = ModelInfo(
        "XL430-W250", 1060, XL430_TABLE, _NO_CURRENT_MODES, None,
        "https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/",
    )
    XM430_W350 = ModelInfo(
        "XM430-W350", 1020, X_CURRENT_TABLE, _ALL_MODES, 0.00269,
        "https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/",
    )
    XM540_W270 = ModelInfo(
        "XM540-W270", 1120, X_CURRENT_TABLE, _ALL_MODES, 0.00269,
        "https://emanual.robotis.com/docs/en/dxl/x/xm540-w270/",
    )

    @property
    def info(self) -> ModelInfo:
        return self.value

    @classmethod
    def from_number(cls, model_number: int) -> Model | None:
        for model in cls:
            if model.info.model_number == model_number:
                return model
        return None


BAUD_RATES: dict[int, int] = {0: 9600, 1: 57_600, 2: 115_200, 3: 1_000_000, 4: 2_000_000, 5: 3_000_000,
                              6: 4_000_000}


class HardwareErrorBit(enum.IntFlag):
    """Hardware_Error_Status (70) bits; any set bit raises the alert bit of every status packet."""

    INPUT_VOLTAGE = 0x01
    OVERHEATING = 0x04
    MOTOR_ENCODER = 0x08
    ELECTRICAL_SHOCK = 0x10
    OVERLOAD = 0x20


def spec_of(model: Model, reg: Reg) -> RegisterSpec:
    """The register's spec for `model`; a register the model lacks raises a ValueError naming both."""
    try:
        return model.info.table[reg]
    except KeyError:
        raise ValueError(
            f"{model.info.name} has no register {reg.name} (see {model.info.datasheet})"
        ) from None
