"""Feetech control tables as data: register -> (address, size, sign bit), per model.

Sources: Feetech STS3215 memory table (https://www.feetechrc.com/, product page "STS3215"),
the scservo_sdk, and LeRobot's `motors/feetech/tables.py` for the SCS subset.
STS/SMS (protocol 0): little-endian, 4096 steps/rev. SCS (protocol 1): big-endian, 1024 steps/rev,
no sync read. The SCS table lists only the registers common to both series; verify any other
SCS register against its manual before adding it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple


class Reg(enum.Enum):
    FIRMWARE_MAJOR_VERSION = enum.auto()
    FIRMWARE_MINOR_VERSION = enum.auto()
    MODEL_NUMBER = enum.auto()
    ID = enum.auto()
    BAUD_RATE = enum.auto()
    RETURN_DELAY_TIME = enum.auto()
    MIN_POSITION_LIMIT = enum.auto()
    MAX_POSITION_LIMIT = enum.auto()
    P_COEFFICIENT = enum.auto()
    D_COEFFICIENT = enum.auto()
    I_COEFFICIENT = enum.auto()
    HOMING_OFFSET = enum.auto()
    OPERATING_MODE = enum.auto()
    TORQUE_ENABLE = enum.auto()
    ACCELERATION = enum.auto()
    GOAL_POSITION = enum.auto()
    GOAL_TIME = enum.auto()
    GOAL_VELOCITY = enum.auto()
    TORQUE_LIMIT = enum.auto()
    LOCK = enum.auto()
    PRESENT_POSITION = enum.auto()
    PRESENT_VELOCITY = enum.auto()
    PRESENT_LOAD = enum.auto()
    PRESENT_VOLTAGE = enum.auto()
    PRESENT_TEMPERATURE = enum.auto()
    STATUS = enum.auto()
    MOVING = enum.auto()
    PRESENT_CURRENT = enum.auto()


class RegisterSpec(NamedTuple):
    address: int
    size: int
    sign_bit: int | None = None
    read_only: bool = False


STS_TABLE: dict[Reg, RegisterSpec] = {
    Reg.FIRMWARE_MAJOR_VERSION: RegisterSpec(0, 1, read_only=True),
    Reg.FIRMWARE_MINOR_VERSION: RegisterSpec(1, 1, read_only=True),
    Reg.MODEL_NUMBER: RegisterSpec(3, 2, read_only=True),
    Reg.ID: RegisterSpec(5, 1),
    Reg.BAUD_RATE: RegisterSpec(6, 1),
    Reg.RETURN_DELAY_TIME: RegisterSpec(7, 1),
    Reg.MIN_POSITION_LIMIT: RegisterSpec(9, 2),
    Reg.MAX_POSITION_LIMIT: RegisterSpec(11, 2),
    Reg.P_COEFFICIENT: RegisterSpec(21, 1),
    Reg.D_COEFFICIENT: RegisterSpec(22, 1),
    Reg.I_COEFFICIENT: RegisterSpec(23, 1),
    Reg.HOMING_OFFSET: RegisterSpec(31, 2, sign_bit=11),
    Reg.OPERATING_MODE: RegisterSpec(33, 1),
    Reg.TORQUE_ENABLE: RegisterSpec(40, 1),
    Reg.ACCELERATION: RegisterSpec(41, 1),
    Reg.GOAL_POSITION: RegisterSpec(42, 2, sign_bit=15),
    Reg.GOAL_TIME: RegisterSpec(44, 2),
    Reg.GOAL_VELOCITY: RegisterSpec(46, 2, sign_bit=15),
    Reg.TORQUE_LIMIT: RegisterSpec(48, 2),
    Reg.LOCK: RegisterSpec(55, 1),
    Reg.PRESENT_POSITION: RegisterSpec(56, 2, sign_bit=15, read_only=True),
    Reg.PRESENT_VELOCITY: RegisterSpec(58, 2, sign_bit=15, read_only=True),
    Reg.PRESENT_LOAD: RegisterSpec(60, 2, sign_bit=10, read_only=True),
    Reg.PRESENT_VOLTAGE: RegisterSpec(62, 1, read_only=True),
    Reg.PRESENT_TEMPERATURE: RegisterSpec(63, 1, read_only=True),
    Reg.STATUS: RegisterSpec(65, 1, read_only=True),
    Reg.MOVING: RegisterSpec(66, 1, read_only=True),
    Reg.PRESENT_CURRENT: RegisterSpec(69, 2, read_only=True),
}

SCS_TABLE: dict[Reg, RegisterSpec] = {
    reg: STS_TABLE[reg]
    for reg in (
        Reg.FIRMWARE_MAJOR_VERSION, Reg.FIRMWARE_MINOR_VERSION, Reg.MODEL_NUMBER, Reg.ID, Reg.BAUD_RATE,
        Reg.RETURN_DELAY_TIME, Reg.MIN_POSITION_LIMIT, Reg.MAX_POSITION_LIMIT, Reg.TORQUE_ENABLE,
        Reg.GOAL_TIME, Reg.PRESENT_VOLTAGE, Reg.PRESENT_TEMPERATURE, Reg.MOVING,
    )
}
SCS_TABLE |= {
    # 10-bit positions need no sign; speeds and load keep their sign bits.
    Reg.GOAL_POSITION: RegisterSpec(42, 2),
    Reg.GOAL_VELOCITY: RegisterSpec(46, 2, sign_bit=15),
    Reg.PRESENT_POSITION: RegisterSpec(56, 2, read_only=True),
    Reg.PRESENT_VELOCITY: RegisterSpec(58, 2, sign_bit=15, read_only=True),
    Reg.PRESENT_LOAD: RegisterSpec(60, 2, sign_bit=10, read_only=True),
}


class Series(enum.Enum):
    STS = "sts"  # protocol 0: little-endian, sync read
    SCS = "scs"  # protocol 1: big-endian, no sync read

    @property
    def big_endian(self) -> bool:
        return self is Series.SCS

    @property
    def has_sync_read(self) -> bool:
        return self is Series.STS


@dataclass(frozen=True)
class ModelInfo:
    name: str
    model_number: int
    series: Series
    table: dict[Reg, RegisterSpec]
    resolution_ticks: int
    datasheet: str


class Model(enum.Enum):
    STS3215 = ModelInfo("STS3215", 777, Series.STS, STS_TABLE, 4096, "https://www.feetechrc.com/")
    SCS0009 = ModelInfo("SCS0009", 1284, Series.SCS, SCS_TABLE, 1024, "https://www.feetechrc.com/")

    @property
    def info(self) -> ModelInfo:
        return self.value


BAUD_RATES: dict[int, int] = {0: 1_000_000, 1: 500_000, 2: 250_000, 3: 128_000, 4: 115_200, 5: 57_600,
                              6: 38_400, 7: 19_200}


def spec_of(model: Model, reg: Reg) -> RegisterSpec:
    try:
        return model.info.table[reg]
    except KeyError:
        raise ValueError(f"{model.info.name} has no register {reg.name} (see {model.info.datasheet})") from None
