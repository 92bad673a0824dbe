"""Robotiq 2F-85/2F-140 register map as data: robot-output and robot-input bytes, faults.

Source: Robotiq 2F-85 & 2F-140 instruction manual, section "Control" (Modbus RTU, slave 9,
115200 8N1): https://robotiq.com/support (2F-85/2F-140 manual PDF).
Each bank is three 16-bit registers = six bytes, byte 0 in the high half of the first register.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

DEFAULT_SLAVE_ID = 9
DEFAULT_BAUDRATE = 115_200
OUTPUT_ADDRESS = 0x03E8  # robot output = gripper commands (FC16 write)
INPUT_ADDRESS = 0x07D0  # robot input = gripper status (FC03/FC04 read)
BANK_REGISTERS = 3
BANK_BYTES = 6
COMM_WATCHDOG_S = 1.0  # the gripper faults (gFLT 9) after this long without Modbus traffic
CURRENT_UNIT_A = 0.010  # gCU is about 10 mA per unit

# ACTION REQUEST byte (output byte 0)
R_ACT = 0x01  # activate (rising edge starts activation; 0 resets)
R_GTO = 0x08  # go to requested position
R_ATR = 0x10  # automatic release (emergency)
R_ARD = 0x20  # auto-release direction (1 = open)


class ActivationStatus(enum.IntEnum):
    """gSTA, status bits 4-5."""

    RESET = 0
    ACTIVATING = 1
    ACTIVATED = 3


class ObjectStatus(enum.IntEnum):
    """gOBJ, status bits 6-7 (valid while gGTO = 1)."""

    MOVING = 0
    CONTACT_OPENING = 1
    CONTACT_CLOSING = 2
    AT_POSITION = 3  # reached the requested position, no object


class GripperFault(enum.IntEnum):
    """gFLT, low nibble of the fault byte."""

    NONE = 0x0
    ACTION_DELAYED = 0x5  # activation must finish before this action
    ACTIVATION_BIT_NOT_SET = 0x7
    OVER_TEMPERATURE = 0x8
    NO_COMMUNICATION = 0x9  # no Modbus traffic for at least 1 s
    UNDER_VOLTAGE = 0xA
    AUTO_RELEASE_IN_PROGRESS = 0xB
    INTERNAL = 0xC
    ACTIVATION_FAULT = 0xD
    OVERCURRENT = 0xE
    AUTO_RELEASE_COMPLETED = 0xF

    @property
    def is_major(self) -> bool:
        """Major faults need a reset and a new rACT rising edge (`activate()`)."""
        return self >= GripperFault.UNDER_VOLTAGE


@dataclass(frozen=True)
class GripperCommand:
    """Robot-output bank. position 0 = open, 255 = closed; speed and force 0..255."""

    activate: bool = True
    go_to: bool = True
    position: int = 0
    speed: int = 255
    force: int = 255
    auto_release: bool = False

    def to_bytes(self) -> bytes:
        for field_name in ("position", "speed", "force"):
            value = getattr(self, field_name)
            if not 0 <= value <= 255:
                raise ValueError(f"gripper {field_name} must be in 0..255, got {value}")
        action = (R_ACT if self.activate else 0) | (R_GTO if self.go_to else 0) | (R_ATR if self.auto_release else 0)
        return bytes((action, 0, 0, self.position, self.speed, self.force))

    @classmethod
    def from_bytes(cls, data: bytes) -> GripperCommand:
        action = data[0]
        return cls(bool(action & R_ACT), bool(action & R_GTO), data[3], data[4], data[5], bool(action & R_ATR))


@dataclass(frozen=True)
class GripperStatus:
    """Robot-input bank, decoded."""

    activated: bool  # gACT echo of rACT
    go_to: bool  # gGTO echo of rGTO
    activation: ActivationStatus
    object: ObjectStatus
    fault: GripperFault
    controller_fault: int  # kFLT, high nibble of the fault byte
    position_request: int  # gPR echo of rPR
    position: int  # gPO, 0 open .. 255 closed
    current_a: float

    @property
    def object_detected(self) -> bool:
        return self.object in (ObjectStatus.CONTACT_OPENING, ObjectStatus.CONTACT_CLOSING)

    @property
    def is_ready(self) -> bool:
        return self.activation is ActivationStatus.ACTIVATED and not self.fault.is_major

    @classmethod
    def from_bytes(cls, data: bytes) -> GripperStatus:
        status, fault = data[0], data[2]
        try:
            gripper_fault = GripperFault(fault & 0x0F)
        except ValueError:  # codes the manual leaves unassigned: report as internal
            gripper_fault = GripperFault.INTERNAL
        sta = (status >> 4) & 0x3
        return cls(
            activated=bool(status & 0x01),
            go_to=bool(status & 0x08),
            activation=ActivationStatus(sta) if sta != 2 else ActivationStatus.ACTIVATING,
            object=ObjectStatus((status >> 6) & 0x3),
            fault=gripper_fault,
            controller_fault=fault >> 4,
            position_request=data[3],
            position=data[4],
            current_a=data[5] * CURRENT_UNIT_A,
        )

    def to_bytes(self) -> bytes:
        status = int(self.activated) | (int(self.go_to) << 3) | (int(self.activation) << 4) | (int(self.object) << 6)
        fault = int(self.fault) | (self.controller_fault << 4)
        current = min(255, round(self.current_a / CURRENT_UNIT_A))
        return bytes((status, 0, fault, self.position_request, self.position, current))
