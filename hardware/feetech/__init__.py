"""Feetech STS/SCS serial servos: codec, control tables, bus driver."""

from hardware.feetech.bus import FeetechBus
from hardware.feetech.protocol import Instruction, StatusBit
from hardware.feetech.tables import Model, Reg, Series

__all__ = ["FeetechBus", "Instruction", "Model", "Reg", "Series", "StatusBit"]
