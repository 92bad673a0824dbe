"""Teleop: keyboard (queued keys and a real pseudo-terminal) and SpaceMouse mapping (scripted reader).

The SpaceMouse itself cannot be plugged in here; its driver code runs unchanged against a reader
object that returns scripted states, the way `pyspacemouse.read()` would.
"""

from __future__ import annotations

import importlib.util
import os
import termios
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest

from hardware.errors import DeviceNotConnectedError
from hardware.teleop import (
    GripperIntent,
    KeyboardTeleop,
    KeyboardTeleopConfig,
    KeyEvent,
    QueueKeySource,
    SpaceMouseConfig,
    SpaceMouseTeleop,
    TeleopError,
    TerminalKeySource,
    twist_from_axes,
)
from tests.hardware.conftest import wait_for


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 100.0

    def __call__(self) -> float:
        return self.now_s


def keyboard(*keys: str, **config) -> tuple[KeyboardTeleop, QueueKeySource, FakeClock]:
    clock = FakeClock()
    source = QueueKeySource(keys)
    teleop = KeyboardTeleop(KeyboardTeleopConfig(**config), source, clock)
    teleop.connect()
    return teleop, source, clock


# ---- keyboard ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "keys, twist",
    [("w", [1, 0, 0, 0, 0, 0]), ("d", [0, -1, 0, 0, 0, 0]), ("f", [0, 0, -1, 0, 0, 0]),
     ("i", [0, 0, 0, 1, 0, 0]), ("l", [0, 0, 0, 0, -1, 0]), ("u", [0, 0, 0, 0, 0, 1]),
     ("wa", [1, 1, 0, 0, 0, 0]), ("ws", [0, 0, 0, 0, 0, 0]), ("W", [1, 0, 0, 0, 0, 0])],
    ids=["w-forward", "d-right", "f-down", "i-roll", "l-pitch-neg", "u-yaw", "diagonal", "opposites-cancel",
         "shift-same-key"],
)
def test_key_map(keys, twist):
    teleop, _, _ = keyboard(*keys)
    command = teleop.read()
    np.testing.assert_array_equal(command.twist_ee, twist)
    assert command.intervention_active == any(twist)
    assert command.gripper is GripperIntent.KEEP


@pytest.mark.parametrize("keys, gripper", [("c", GripperIntent.CLOSE), ("v", GripperIntent.OPEN),
                                           ("cv", GripperIntent.KEEP)], ids=["close", "open", "both-keep"])
def test_gripper_keys_follow_the_env_convention(keys, gripper):
    command = keyboard(*keys)[0].read()
    assert command.gripper is gripper and int(command.gripper) == {"c": 1, "v": -1, "cv": 0}[keys]
    assert command.intervention_active == (gripper is not GripperIntent.KEEP)


def test_a_key_lets_go_after_the_timeout_without_a_release_event():
    teleop, source, clock = keyboard("w", key_timeout_s=0.15)
    assert teleop.read().twist_ee[0] == 1
    clock.now_s += 0.1
    source.push("w")  # the OS repeats a held key
    clock.now_s += 0.1
    assert teleop.read().twist_ee[0] == 1, "repeats keep the key held"
    clock.now_s += 0.15
    command = teleop.read()
    assert not command.twist_ee.any() and not command.intervention_active, "no repeats: motion stops"


def test_a_release_event_stops_the_key_at_once():
    teleop, source, _ = keyboard("w", "a")
    teleop.read()
    source.push(KeyEvent("w", pressed=False))
    np.testing.assert_array_equal(teleop.read().twist_ee, [0, 1, 0, 0, 0, 0])


def test_intervention_hold_after_the_last_key():
    teleop, _, clock = keyboard("w", key_timeout_s=0.1, intervention_hold_s=0.5)
    assert teleop.read().intervention_active
    clock.now_s += 0.3
    command = teleop.read()
    assert not command.twist_ee.any() and command.intervention_active, "held: the person keeps control"
    clock.now_s += 0.3
    assert not teleop.read().intervention_active


def test_scale_and_button_keys():
    teleop, _, _ = keyboard("w", "\r", scale=0.5, button_keys=("\r", "q"))
    command = teleop.read()
    assert command.twist_ee[0] == 0.5 and command.buttons == (True, False)


@pytest.mark.parametrize(
    "config, match",
    [({"close_key": "w"}, r"\['w'\] are bound twice"), ({"key_map": {"w": (6, 1.0)}}, "axis in 0..5"),
     ({"open_key": "V"}, "lower-case"), ({"scale": 0.0}, "scale")],
    ids=["duplicate-key", "bad-axis", "upper-case", "zero-scale"],
)
def test_keyboard_config_rejects(config, match):
    with pytest.raises(ValueError, match=match):
        KeyboardTeleopConfig(**config)


def test_read_before_connect_says_how_to_fix():
    with pytest.raises(DeviceNotConnectedError, match=r"\.connect\(\)"):
        KeyboardTeleop(source=QueueKeySource()).read()


def test_terminal_source_on_a_real_pty():
    master, slave = os.openpty()
    try:
        attrs_before = termios.tcgetattr(slave)
        with KeyboardTeleop(source=TerminalKeySource(slave)) as teleop:
            assert not termios.tcgetattr(slave)[3] & (termios.ECHO | termios.ICANON), "cbreak: no echo, no Enter"
            os.write(master, b"wr")
            assert wait_for(lambda: teleop.read().twist_ee[2] == 1, timeout_s=1.0)
            np.testing.assert_array_equal(teleop.read().twist_ee, [1, 0, 1, 0, 0, 0])
        assert termios.tcgetattr(slave) == attrs_before, "terminal settings restored"
    finally:
        os.close(master)
        os.close(slave)


def test_terminal_source_refuses_a_non_terminal(tmp_path):
    with open(tmp_path / "not-a-tty", "w") as file, pytest.raises(TeleopError, match="not a terminal"):
        KeyboardTeleop(source=TerminalKeySource(file.fileno())).connect()


# ---- SpaceMouse --------------------------------------------------------------------------------
class ScriptedSpaceMouse:
    """Stands in for the device: `read()` returns whatever state the test set last."""

    def __init__(self) -> None:
        self.state = SimpleNamespace(x=0.0, y=0.0, z=0.0, roll=0.0, pitch=0.0, yaw=0.0, buttons=[0, 0])
        self.reads = 0
        self.closed = False
        self.fail_with: Exception | None = None
        self.hang = threading.Event()
        self.hanging = threading.Event()

    def read(self):
        if self.fail_with is not None:
            raise self.fail_with
        while self.hang.is_set():
            self.hanging.set()
            time.sleep(0.005)
        self.reads += 1
        return self.state

    def close(self) -> None:
        self.closed = True

    def set(self, **values) -> None:
        self.state = SimpleNamespace(**{**vars(self.state), **values})
        seen = self.reads
        assert wait_for(lambda: self.reads >= seen + 2), "reader thread did not pick up the state"


@pytest.fixture
def spacemouse():
    device, clock = ScriptedSpaceMouse(), FakeClock()
    teleop = SpaceMouseTeleop(SpaceMouseConfig(deadband=0.1, intervention_hold_s=0.5), reader=device, clock=clock)
    with teleop:
        yield teleop, device, clock
    assert device.closed


@pytest.mark.parametrize(
    "raw, twist",
    [((0.05, 0, 0, 0, 0, 0), [0, 0, 0, 0, 0, 0]), ((0.55, 0, 0, 0, 0, 0), [0.5, 0, 0, 0, 0, 0]),
     ((0, -1.0, 0, 0, 0, 0), [0, -1, 0, 0, 0, 0]), ((0, 0, 0, 0, 0, 0.28), [0, 0, 0, 0, 0, 0.2])],
    ids=["inside-deadband", "rescaled-past-deadband", "full-scale", "yaw"],
)
def test_deadband_rescales_to_reach_full_scale(raw, twist):
    np.testing.assert_allclose(twist_from_axes(np.array(raw), SpaceMouseConfig(deadband=0.1)), twist, atol=1e-12)


def test_axis_order_sign_and_scale():
    config = SpaceMouseConfig(axis_order=(1, 0, 2, 3, 4, 5), axis_sign=(-1, 1, 1, 1, 1, -1), deadband=0.0, scale=2)
    raw = np.array([0.1, 0.2, 0.3, 0.0, 0.0, 0.6])
    np.testing.assert_allclose(twist_from_axes(raw, config), [-0.4, 0.2, 0.6, 0, 0, -1.0])


def test_spacemouse_motion_and_intervention_hold(spacemouse):
    teleop, device, clock = spacemouse
    assert not teleop.read().intervention_active
    device.set(x=0.55)
    command = teleop.read()
    np.testing.assert_allclose(command.twist_ee, [0.5, 0, 0, 0, 0, 0])
    assert command.intervention_active
    device.set(x=0.0)
    clock.now_s += 0.4
    assert teleop.read().intervention_active, "SERL keeps control 0.5 s after the last motion"
    clock.now_s += 0.2
    assert not teleop.read().intervention_active


@pytest.mark.parametrize("buttons, gripper", [([1, 0], GripperIntent.CLOSE), ([0, 1], GripperIntent.OPEN),
                                              ([1, 1], GripperIntent.KEEP)], ids=["left-closes", "right-opens",
                                                                                  "both-keep"])
def test_spacemouse_buttons_drive_the_gripper_and_intervene(spacemouse, buttons, gripper):
    teleop, device, _ = spacemouse
    device.set(buttons=buttons)
    command = teleop.read()
    assert command.gripper is gripper and command.intervention_active
    assert command.buttons == tuple(bool(b) for b in buttons)


def test_spacemouse_that_stops_reporting_reads_as_no_motion(spacemouse):
    teleop, device, clock = spacemouse
    device.set(z=1.0)
    device.hang.set()
    try:
        assert device.hanging.wait(1.0), "the reader thread is now stuck inside read()"
        assert teleop.read().twist_ee[2] == 1
        clock.now_s += 0.2  # over max_state_age_s
        assert not teleop.read().twist_ee.any()
    finally:
        device.hang.clear()


def test_spacemouse_read_error_is_raised_not_dropped(spacemouse):
    teleop, device, _ = spacemouse
    device.fail_with = OSError("read error on hidraw")
    assert wait_for(lambda: teleop._reader_error is not None)
    with pytest.raises(TeleopError, match="hidraw"):
        teleop.read()


@pytest.mark.skipif(importlib.util.find_spec("pyspacemouse") is not None, reason="pyspacemouse is installed")
def test_spacemouse_without_the_extra_names_it():
    with pytest.raises(ImportError, match=r"pip install 'robot-stack\[hardware\]'"):
        SpaceMouseTeleop()
