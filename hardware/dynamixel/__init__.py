"""Dynamixel Protocol 2.0 servos (ROBOTIS X-series): codec, control tables, bus driver."""

from hardware.dynamixel.bus import DynamixelBus
from hardware.dynamixel.protocol import Instruction, StatusError
from hardware.dynamixel.tables import HardwareErrorBit, Model, OperatingMode, Reg

__all__ = ["DynamixelBus", "HardwareErrorBit", "Instruction", "Model", "OperatingMode", "Reg", "StatusError"]
