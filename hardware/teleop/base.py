"""What every teleop device returns, and SERL's rule for when the person has taken over.

Conventions (the same as the environments' actions, see `envs/panda_pick_cube.py`):
- twist_ee = [vx, vy, vz, wx, wy, wz], each in [-1, 1], in the end-effector (tool) frame, unitless:
  the environment scales it (`action_scale_m`, `action_scale_rad`).
- gripper: +1 close, -1 open, 0 keep the current state (the env's binary gripper closes at >= 0.5
  and opens at <= -0.5).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from hardware.errors import HardwareError


class TeleopError(HardwareError):
    """A teleop device cannot be read (no terminal, no device, reader failed)."""


class GripperIntent(enum.IntEnum):
    OPEN = -1
    KEEP = 0
    CLOSE = 1


@dataclass(frozen=True)
class TeleopCommand:
    """One reading of a teleop device.

    twist_ee: (6,) float64 [vx, vy, vz, wx, wy, wz] in [-1, 1], end-effector frame.
    gripper: what the person asks of the gripper.
    intervention_active: the person is in control; the env executes this command instead of the policy's.
    buttons: raw button states in device order (SpaceMouse buttons; keyboard `button_keys`).
    timestamp_s: `time.monotonic()` (or the device's injected clock) when the command was read.
    """

    twist_ee: np.ndarray
    gripper: GripperIntent
    intervention_active: bool
    buttons: tuple[bool, ...]
    timestamp_s: float


class InterventionRule:
    """SERL's rule: intervening while |twist| > threshold or a gripper/button is pressed.

    With hold_s > 0 the intervention stays active that long after the last activity, so a person who
    pauses briefly keeps control (SERL holds 0.5 s; HIL-SERL does not hold).
    """

    def __init__(self, threshold: float = 1e-3, hold_s: float = 0.0) -> None:
        if threshold < 0:
            raise ValueError(f"intervention threshold must be >= 0, got {threshold}")
        if hold_s < 0:
            raise ValueError(f"intervention hold_s must be >= 0 s, got {hold_s}")
        self.threshold = threshold
        self.hold_s = hold_s
        self._last_active_s: float | None = None

    def update(self, twist: np.ndarray, pressed: bool, now_s: float) -> bool:
        if float(np.linalg.norm(twist)) > self.threshold or pressed:
            self._last_active_s = now_s
            return True
        return self._last_active_s is not None and now_s - self._last_active_s < self.hold_s

    def reset(self) -> None:
        self._last_active_s = None


class TeleopDevice(ABC):
    """connect/disconnect (or a `with` block), then `read()` at the control rate."""

    @property
    @abstractmethod
    def is_connected(self) -> bool: ...

    @abstractmethod
    def connect(self) -> None: ...

    @abstractmethod
    def disconnect(self) -> None:
        """Release the device. Safe to call twice."""

    @abstractmethod
    def read(self) -> TeleopCommand:
        """The command now. Never blocks; a device that stopped reporting reads as zero motion."""

    def __enter__(self) -> TeleopDevice:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
