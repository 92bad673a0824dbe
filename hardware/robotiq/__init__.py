"""Robotiq 2F-85/2F-140 grippers over Modbus RTU: own RTU framing, register map, driver."""

from hardware.robotiq.gripper import Robotiq2F, Robotiq2FConfig
from hardware.robotiq.registers import ActivationStatus, GripperCommand, GripperFault, GripperStatus, ObjectStatus

__all__ = [
    "ActivationStatus", "GripperCommand", "GripperFault", "GripperStatus", "ObjectStatus", "Robotiq2F",
    "Robotiq2FConfig",
]
