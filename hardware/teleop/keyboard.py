"""Keyboard teleop: held keys move the end effector, with no extra dependency.

Key map (`DEFAULT_KEY_MAP`; twist in the end-effector frame, letters case-insensitive):

    w / s   +vx / -vx        i / k   +wx / -wx   (roll)
    a / d   +vy / -vy        j / l   +wy / -wy   (pitch)
    r / f   +vz / -vz        u / o   +wz / -wz   (yaw)
    c       close gripper    v       open gripper

A terminal reports key presses but no releases; while a key is held the OS repeats it (after an
initial delay of about 0.5 s, then 25-30 times a second). So a key counts as held for `key_timeout_s`
after its last press event and then lets go by itself: releasing every key stops the motion within
`key_timeout_s`, and no lost event can leave the arm moving. A tap is a short nudge; holding a key
moves continuously once the OS starts repeating it. Sources that do report releases
(`KeyEvent(key, pressed=False)`) stop the key at once.

Key events come from a `KeySource`: `TerminalKeySource` (stdin in cbreak mode, via termios) for real
use, `QueueKeySource` for tests and for GUIs that forward their own key events.

Example:
    with KeyboardTeleop() as keyboard:        # terminal in cbreak mode until the block ends
        command = keyboard.read()             # once per control step
        if command.intervention_active:
            action = np.append(command.twist_ee, command.gripper)
"""

from __future__ import annotations

import io
import os
import queue
import select
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from hardware.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError
from hardware.teleop.base import GripperIntent, InterventionRule, TeleopCommand, TeleopDevice, TeleopError

# key -> (twist axis, direction); axes 0-2 are vx, vy, vz and 3-5 are wx, wy, wz.
DEFAULT_KEY_MAP: dict[str, tuple[int, float]] = {
    "w": (0, 1.0), "s": (0, -1.0), "a": (1, 1.0), "d": (1, -1.0), "r": (2, 1.0), "f": (2, -1.0),
    "i": (3, 1.0), "k": (3, -1.0), "j": (4, 1.0), "l": (4, -1.0), "u": (5, 1.0), "o": (5, -1.0),
}


@dataclass(frozen=True)
class KeyEvent:
    key: str  # one character, as typed
    pressed: bool = True  # False: the source saw the key go up


class KeySource(Protocol):
    def open(self) -> None: ...
    def close(self) -> None: ...
    def poll(self) -> list[KeyEvent]:
        """Events since the last poll, oldest first; never blocks."""
        ...


class QueueKeySource:
    """Key events pushed by a test or a GUI (thread-safe)."""

    def __init__(self, keys: Iterable[str | KeyEvent] = ()) -> None:
        self._queue: queue.SimpleQueue[KeyEvent] = queue.SimpleQueue()
        for key in keys:
            self.push(key)

    def push(self, key: str | KeyEvent, pressed: bool = True) -> None:
        self._queue.put(key if isinstance(key, KeyEvent) else KeyEvent(key, pressed))

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def poll(self) -> list[KeyEvent]:
        events = []
        while True:
            try:
                events.append(self._queue.get_nowait())
            except queue.Empty:
                return events


class TerminalKeySource:
    """Key presses typed into a terminal: cbreak mode (no echo, no Enter needed; Ctrl-C still works).

    fd: the terminal's file descriptor; None uses stdin. The terminal's settings are restored on close.
    """

    def __init__(self, fd: int | None = None) -> None:
        self._fd = fd
        self._open_fd: int | None = None
        self._saved_attrs: list | None = None

    def open(self) -> None:
        import termios  # POSIX only; imported here so the module imports everywhere
        import tty

        fd = self._fd
        if fd is None:
            try:
                fd = sys.stdin.fileno()
            except (AttributeError, ValueError, io.UnsupportedOperation) as err:
                raise TeleopError(
                    "stdin has no file descriptor (captured or closed); run in an interactive terminal "
                    "or give KeyboardTeleop a QueueKeySource"
                ) from err
        if not os.isatty(fd):
            raise TeleopError(
                f"file descriptor {fd} is not a terminal, so keys cannot be read from it; run in an "
                "interactive terminal (not under a pipe or a service) or give KeyboardTeleop a QueueKeySource"
            )
        self._saved_attrs = termios.tcgetattr(fd)
        tty.setcbreak(fd, termios.TCSANOW)
        self._open_fd = fd

    def close(self) -> None:
        if self._open_fd is None:
            return
        import termios

        termios.tcsetattr(self._open_fd, termios.TCSADRAIN, self._saved_attrs)
        self._open_fd = None

    def poll(self) -> list[KeyEvent]:
        if self._open_fd is None:
            raise TeleopError("TerminalKeySource is not open; call `.open()` first")
        data = b""
        while select.select([self._open_fd], [], [], 0)[0]:
            chunk = os.read(self._open_fd, 1024)
            if not chunk:  # end of input (terminal closed)
                break
            data += chunk
        return [KeyEvent(char) for char in data.decode(errors="ignore")]


@dataclass
class KeyboardTeleopConfig:
    """Args:
    key_map: key -> (twist axis 0..5, direction in [-1, 1]); see the module docstring.
    close_key, open_key: gripper keys.
    button_keys: keys reported in `TeleopCommand.buttons`, in this order (for example success or
        reset keys that the env layer gives a meaning); they do not start an intervention.
    key_timeout_s: a key counts as held this long after its last press event [s]; keep it above the
        OS key-repeat period (~0.04 s) plus the read period.
    scale: factor on every axis, in (0, 1].
    intervention_hold_s: keep `intervention_active` this long after the last motion key [s].
    """

    key_map: dict[str, tuple[int, float]] = field(default_factory=lambda: dict(DEFAULT_KEY_MAP))
    close_key: str = "c"
    open_key: str = "v"
    button_keys: tuple[str, ...] = ()
    key_timeout_s: float = 0.15
    scale: float = 1.0
    intervention_hold_s: float = 0.0

    def __post_init__(self) -> None:
        keys = [*self.key_map, self.close_key, self.open_key, *self.button_keys]
        for key in keys:
            if len(key) != 1 or key != key.lower():
                raise ValueError(f"keys must be single lower-case characters, got {key!r}")
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"keys {duplicates} are bound twice; give each key one role")
        for key, (axis, direction) in self.key_map.items():
            if axis not in range(6) or not (-1.0 <= direction <= 1.0 and direction != 0):
                raise ValueError(
                    f"key_map[{key!r}] = ({axis}, {direction}); need an axis in 0..5 and a direction in "
                    "[-1, 1] other than 0"
                )
        if not self.key_timeout_s > 0:
            raise ValueError(f"key_timeout_s must be > 0 s, got {self.key_timeout_s}")
        if not 0 < self.scale <= 1:
            raise ValueError(f"scale must be in (0, 1], got {self.scale}")


class KeyboardTeleop(TeleopDevice):
    """Held keys -> TeleopCommand. `clock` is injectable so tests control time."""

    def __init__(
        self,
        config: KeyboardTeleopConfig | None = None,
        source: KeySource | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or KeyboardTeleopConfig()
        self.source: KeySource = source if source is not None else TerminalKeySource()
        self._clock = clock
        self._rule = InterventionRule(hold_s=self.config.intervention_hold_s)
        self._last_press_s: dict[str, float] = {}
        self._connected = False

    def __repr__(self) -> str:
        return f"KeyboardTeleop({type(self.source).__name__})"

    @property
    def is_connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        if self._connected:
            raise DeviceAlreadyConnectedError(repr(self))
        self.source.open()
        self._last_press_s.clear()
        self._rule.reset()
        self._connected = True

    def disconnect(self) -> None:
        if self._connected:
            self._connected = False
            self.source.close()

    def read(self) -> TeleopCommand:
        if not self._connected:
            raise DeviceNotConnectedError(repr(self))
        cfg = self.config
        now_s = self._clock()
        for event in self.source.poll():  # events of one poll share its time stamp
            key = event.key.lower()
            if event.pressed:
                self._last_press_s[key] = now_s
            else:
                self._last_press_s.pop(key, None)
        self._last_press_s = {k: t for k, t in self._last_press_s.items() if now_s - t < cfg.key_timeout_s}
        held = self._last_press_s.keys()

        twist_ee = np.zeros(6)
        for key in held & cfg.key_map.keys():
            axis, direction = cfg.key_map[key]
            twist_ee[axis] += direction
        twist_ee = np.clip(twist_ee * cfg.scale, -1.0, 1.0)  # opposite keys cancel
        closing, opening = cfg.close_key in held, cfg.open_key in held
        gripper = GripperIntent.KEEP if closing == opening else GripperIntent.CLOSE if closing else GripperIntent.OPEN
        return TeleopCommand(
            twist_ee=twist_ee,
            gripper=gripper,
            intervention_active=self._rule.update(twist_ee, gripper is not GripperIntent.KEEP, now_s),
            buttons=tuple(key in held for key in cfg.button_keys),
            timestamp_s=now_s,
        )
