"""SpaceMouse teleop (3Dconnexion, raw HID through `pyspacemouse`, from the `hardware` extra).

A daemon thread polls the device and keeps its newest state; `read()` maps that state to a
TeleopCommand without blocking:
1. reorder and flip the six axes to the end-effector frame (`axis_order`, `axis_sign`; set them so
   pushing the cap away from you moves the tool the way you see it move),
2. deadband: |v| < deadband reads 0, and the rest is rescaled so the output starts at 0 and still
   reaches 1,
3. multiply by `scale` and clip to [-1, 1].
Buttons map to the gripper as in SERL (left closes, right opens). The person is intervening while
|twist| > 0.001 or any button is pressed (SERL), optionally held for `intervention_hold_s` after
the last motion (SERL 0.5 s, HIL-SERL 0).

If the reader thread stops receiving states (device unplugged, thread stuck), `read()` returns zero
motion once the newest state is older than `max_state_age_s`; if the device raised, `read()` raises.
Known problem: some SpaceMice read all zeros over USB and work over Bluetooth (hil-serl #40).

Example:
    config = SpaceMouseConfig(axis_order=(1, 0, 2, 4, 3, 5), axis_sign=(-1, 1, 1, -1, 1, 1))  # mounted rotated
    with SpaceMouseTeleop(config) as spacemouse:
        command = spacemouse.read()
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from hardware.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError
from hardware.optional import require
from hardware.teleop.base import GripperIntent, InterventionRule, TeleopCommand, TeleopDevice, TeleopError

logger = logging.getLogger(__name__)

AXES = ("x", "y", "z", "roll", "pitch", "yaw")  # the device's raw axes, in this order


class SpaceMouseState(Protocol):
    """What `pyspacemouse.read()` returns: axes in [-1, 1] and button states (0/1)."""

    x: float
    y: float
    z: float
    roll: float
    pitch: float
    yaw: float
    buttons: Sequence[int]


class SpaceMouseReader(Protocol):
    def read(self) -> SpaceMouseState: ...
    def close(self) -> None: ...


class _PySpaceMouseReader:
    """The real device through pyspacemouse."""

    def __init__(self, pyspacemouse: Any, device: str | None) -> None:
        kwargs = {} if device is None else {"device": device}
        self._device = pyspacemouse.open(**kwargs)
        if not self._device:
            raise TeleopError(
                f"no SpaceMouse{'' if device is None else ' ' + repr(device)} found. Check it is plugged in "
                "and that your user may read /dev/hidraw* (a udev rule giving group plugdev MODE 0664); "
                "3Dconnexion's own driver (spacenavd) must not hold it."
            )

    def read(self) -> SpaceMouseState:
        return self._device.read()

    def close(self) -> None:
        self._device.close()


@dataclass
class SpaceMouseConfig:
    """Args:
    device: pyspacemouse device name ("SpaceMouse Compact", ...); None opens the first one found.
    axis_order: twist_ee[i] comes from raw axis axis_order[i] of (x, y, z, roll, pitch, yaw).
    axis_sign: then multiplied by axis_sign[i] (+1 or -1).
    deadband: raw magnitudes below this read as 0, in [0, 1).
    scale: factor after the deadband, > 0; the result is clipped to [-1, 1].
    close_button, open_button: button indices that close and open the gripper (both: keep).
    intervention_threshold: |twist| above which the person is intervening (SERL: 0.001).
    intervention_hold_s: keep intervening this long after the last motion or press [s].
    poll_period_s: how often the reader thread polls the device [s].
    max_state_age_s: a newest state older than this reads as zero motion [s].
    """

    device: str | None = None
    axis_order: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
    axis_sign: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    deadband: float = 0.05
    scale: float = 1.0
    close_button: int = 0
    open_button: int = 1
    intervention_threshold: float = 1e-3
    intervention_hold_s: float = 0.0
    poll_period_s: float = 0.005
    max_state_age_s: float = 0.1

    def __post_init__(self) -> None:
        if sorted(self.axis_order) != list(range(6)):
            raise ValueError(f"axis_order must be a permutation of 0..5, got {self.axis_order}")
        if len(self.axis_sign) != 6 or any(s not in (-1, 1) for s in self.axis_sign):
            raise ValueError(f"axis_sign must be six values of +1 or -1, got {self.axis_sign}")
        if not 0 <= self.deadband < 1:
            raise ValueError(f"deadband must be in [0, 1), got {self.deadband}")
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if self.close_button == self.open_button or min(self.close_button, self.open_button) < 0:
            raise ValueError(
                f"close_button ({self.close_button}) and open_button ({self.open_button}) must be two "
                "different indices >= 0"
            )
        for name in ("poll_period_s", "max_state_age_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")


def twist_from_axes(raw: np.ndarray, config: SpaceMouseConfig) -> np.ndarray:
    """Raw (x, y, z, roll, pitch, yaw) -> twist_ee (6,): reorder and flip, deadband, scale, clip."""
    twist = raw[list(config.axis_order)] * np.asarray(config.axis_sign)
    magnitude = np.maximum(np.abs(twist) - config.deadband, 0.0) / (1.0 - config.deadband)
    return np.clip(np.sign(twist) * magnitude * config.scale, -1.0, 1.0)


class SpaceMouseTeleop(TeleopDevice):
    """A SpaceMouse read by a background thread.

    reader: an object with `read()` and `close()` standing in for the device (tests); None opens the
    real device through pyspacemouse, which must then be installed (`robot-stack[hardware]`).
    clock: injectable so tests control time.
    """

    def __init__(
        self,
        config: SpaceMouseConfig | None = None,
        reader: SpaceMouseReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SpaceMouseConfig()
        self._pyspacemouse = require("pyspacemouse", extra="hardware") if reader is None else None
        self._injected_reader = reader
        self._reader: SpaceMouseReader | None = None
        self._clock = clock
        self._rule = InterventionRule(self.config.intervention_threshold, self.config.intervention_hold_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: tuple[np.ndarray, tuple[bool, ...], float] | None = None  # axes, buttons, time
        self._reader_error: Exception | None = None
        self.states_read = 0

    def __repr__(self) -> str:
        return f"SpaceMouseTeleop({self.config.device or 'first found'})"

    @property
    def is_connected(self) -> bool:
        return self._thread is not None

    def connect(self) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(repr(self))
        if self._injected_reader is not None:
            self._reader = self._injected_reader
        else:
            self._reader = _PySpaceMouseReader(self._pyspacemouse, self.config.device)
        self._latest = None
        self._reader_error = None
        self._rule.reset()
        self._stop.clear()
        self._thread = threading.Thread(target=self._read_loop, name="spacemouse", daemon=True)
        self._thread.start()

    def disconnect(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=1.0)
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read_loop(self) -> None:
        assert self._reader is not None
        while not self._stop.is_set():
            try:
                state = self._reader.read()
                axes = np.array([float(getattr(state, name)) for name in AXES])
                buttons = tuple(bool(b) for b in state.buttons)
            except Exception as exc:  # surfaced by read(), never dropped
                logger.exception("%s: reading the device failed", self)
                with self._lock:
                    self._reader_error = exc
                return
            with self._lock:
                self._latest = (axes, buttons, self._clock())
                self.states_read += 1
            self._stop.wait(self.config.poll_period_s)

    def read(self) -> TeleopCommand:
        if self._thread is None:
            raise DeviceNotConnectedError(repr(self))
        cfg = self.config
        now_s = self._clock()
        with self._lock:
            error, latest = self._reader_error, self._latest
        if error is not None:
            raise TeleopError(
                f"{self} stopped reading: {type(error).__name__}: {error}. Check the cable or receiver, "
                "then disconnect and connect again."
            ) from error
        if latest is None:
            twist_ee, buttons = np.zeros(6), ()
        elif now_s - latest[2] > cfg.max_state_age_s:  # no fresh state: no motion, no presses
            twist_ee, buttons = np.zeros(6), (False,) * len(latest[1])
        else:
            twist_ee, buttons = twist_from_axes(latest[0], cfg), latest[1]
        closing = len(buttons) > cfg.close_button and buttons[cfg.close_button]
        opening = len(buttons) > cfg.open_button and buttons[cfg.open_button]
        gripper = GripperIntent.KEEP if closing == opening else GripperIntent.CLOSE if closing else GripperIntent.OPEN
        return TeleopCommand(
            twist_ee=twist_ee,
            gripper=gripper,
            intervention_active=self._rule.update(twist_ee, any(buttons), now_s),
            buttons=buttons,
            timestamp_s=now_s,
        )
