"""Teleop devices: keyboard (no dependency) and SpaceMouse (`robot-stack[hardware]`), one command type."""

from hardware.teleop.base import GripperIntent, InterventionRule, TeleopCommand, TeleopDevice, TeleopError
from hardware.teleop.keyboard import (
    DEFAULT_KEY_MAP,
    KeyboardTeleop,
    KeyboardTeleopConfig,
    KeyEvent,
    KeySource,
    QueueKeySource,
    TerminalKeySource,
)
from hardware.teleop.spacemouse import SpaceMouseConfig, SpaceMouseReader, SpaceMouseTeleop, twist_from_axes

__all__ = [
    "DEFAULT_KEY_MAP", "GripperIntent", "InterventionRule", "KeyEvent", "KeySource", "KeyboardTeleop",
    "KeyboardTeleopConfig", "QueueKeySource", "SpaceMouseConfig", "SpaceMouseReader", "SpaceMouseTeleop",
    "TeleopCommand", "TeleopDevice", "TeleopError", "TerminalKeySource", "twist_from_axes",
]
