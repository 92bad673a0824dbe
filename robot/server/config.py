"""The robot config of ``robot serve --robot CONFIG``: a JSON or TOML file, validated with one clear error.

Example (TOML)::

    arm = "franka"                 # franka | twin
    robot_ip = "172.16.0.2"         # franka only

    [gripper]
    kind = "robotiq"                # robotiq | emulated (Robotiq emulator, real Modbus driver) | sim (twin) | none
    port = "/dev/ttyUSB0"           # any pyserial url

    [cameras.wrist]
    source = "/dev/v4l/by-id/usb-...-video-index0"
    width = 640
    height = 480
    fps = 30

    [gains]                         # any CartesianImpedanceConfig field
    translational_stiffness_n_per_m = 2000.0

    [limits]                        # also CartesianImpedanceConfig fields (clips, workspace, torque rate)
    workspace_low_m = [0.25, -0.35, 0.005]

    [watchdog]
    hold_after_s = 0.1
    stop_after_s = 2.0

    [server]
    port = 5555                     # host stays 127.0.0.1 unless allow_remote = true
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controllers.cartesian_impedance import CartesianImpedanceConfig
from envs.panda_base import default_controller_config
from hardware.franka import SilenceConfig
from robot.config import ConfigError, apply_overrides

ARMS = ("franka", "twin")
GRIPPERS = ("robotiq", "emulated", "sim", "none")


@dataclass
class NetConfig:
    """Where the API listens."""

    host: str = "127.0.0.1"
    """Address to bind; anything but loopback needs allow_remote (the token is then the only protection,
    and the traffic is not encrypted)."""
    port: int = 5555
    """TCP port; 0 picks a free one (printed at start)."""
    allow_remote: bool = False
    """Allow binding a non-loopback address."""
    max_clients: int = 4
    """Connections served at once; more are refused."""
    client_idle_timeout_s: float = 120.0
    """A connection with no request for this long is closed [s]."""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"server.port must be 0-65535, got {self.port}")
        if not is_loopback(self.host) and not self.allow_remote:
            raise ValueError(f"server.host {self.host!r} is not a loopback address; set server.allow_remote = true "
                             "to expose the robot on the network")
        if self.max_clients < 1 or not self.client_idle_timeout_s > 0:
            raise ValueError("server.max_clients must be >= 1 and server.client_idle_timeout_s > 0")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class CameraEntry:
    """One real camera (OpenCV)."""

    source: str = ""
    """Device index ("0"), path or url."""
    width: int = 0
    """Capture width [px]; 0 keeps the device's."""
    height: int = 0
    """Capture height [px]; 0 keeps the device's."""
    fps: float = 0.0
    """Capture rate [Hz]; 0 keeps the device's."""
    max_frame_age_s: float = 0.5
    """Older frames are an error [s]."""


@dataclass
class RobotServerConfig:
    """Everything ``robot serve`` needs; see the module docstring for the file layout."""

    arm: str = "twin"
    """franka (pylibfranka) or twin (the MuJoCo arm of ``task``)."""
    task: str = "pick-cube"
    """Twin only: the sim task whose scene, objects, reward and cameras the twin serves."""
    robot_ip: str = ""
    """Franka only: the arm's FCI address."""
    enforce_realtime: bool = True
    """Franka only: require a real-time kernel."""
    gripper: str = "sim"
    """robotiq, emulated (Robotiq emulator through the real Modbus driver), sim (twin fingers) or none."""
    gripper_port: str = ""
    """robotiq: pyserial url of the RS-485 adapter."""
    rate_hz: float = 1000.0
    """Control loop rate [Hz] (a Franka is always 1000)."""
    twin_speed: float = 1.0
    """Twin only: simulated seconds per wall-clock second; > 1 fast-forwards a rehearsal or a test (clients
    pace on the server clock). The watchdog's timeouts stay wall-clock seconds."""
    controller: CartesianImpedanceConfig = field(default_factory=default_controller_config)
    """Impedance gains and limits (the sim tasks' defaults)."""
    watchdog: SilenceConfig = field(default_factory=SilenceConfig)
    """Hold and stop timeouts when no target arrives."""
    server: NetConfig = field(default_factory=NetConfig)
    """Network settings of the API."""
    cameras: dict[str, CameraEntry] = field(default_factory=dict)
    """Real cameras by name (the twin renders its scene cameras instead)."""
    reset_tcp_pos_m: tuple[float, float, float] = (0.5, 0.0, 0.3)
    """Franka only: tool position of ``reset`` [m], base frame (the sim tasks' home)."""
    reset_tcp_quat: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 0.0)
    """Franka only: tool orientation of ``reset`` (w, x, y, z): fingers down."""
    reset_duration_s: float = 1.5
    """Franka only: time of the straight-line move to the reset pose [s] (SERL 1.5)."""

    def check(self) -> RobotServerConfig:
        """Cross-field rules; raises ConfigError naming the key."""
        if self.arm not in ARMS:
            raise ConfigError(f"arm: expected one of {ARMS}, got {self.arm!r}")
        if self.gripper not in GRIPPERS:
            raise ConfigError(f"gripper.kind: expected one of {GRIPPERS}, got {self.gripper!r}")
        if self.arm == "franka":
            if not self.robot_ip:
                raise ConfigError("robot_ip: required with arm = 'franka' (the arm's FCI address)")
            if self.gripper == "sim":
                raise ConfigError("gripper.kind: 'sim' exists only for the twin; use robotiq, emulated or none")
            if self.rate_hz != 1000.0:
                raise ConfigError(f"rate_hz: a Franka runs at 1000 Hz, got {self.rate_hz}")
            if self.twin_speed != 1.0:
                raise ConfigError(f"twin_speed: a real arm runs in real time; remove it (got {self.twin_speed})")
        else:
            from envs.real import task_env_class

            try:
                task_env_class(self.task)
            except ValueError as err:
                raise ConfigError(f"task: {err}") from None
            if self.gripper not in ("sim", "none"):
                raise ConfigError(f"gripper.kind: the twin drives its simulated fingers; use 'sim', "
                                  f"got {self.gripper!r}")
            if self.cameras:
                raise ConfigError("cameras: the twin renders its scene cameras (front, wrist); remove the section")
            if not 100.0 <= self.rate_hz <= 2000.0:
                raise ConfigError(f"rate_hz: expected 100-2000 Hz for the twin, got {self.rate_hz}")
            if not 0.1 <= self.twin_speed <= 20.0:
                raise ConfigError(f"twin_speed: expected 0.1-20 (simulated seconds per second), got {self.twin_speed}")
        if self.gripper == "robotiq" and not self.gripper_port:
            raise ConfigError("gripper.port: required with gripper.kind = 'robotiq' (a pyserial url)")
        if not (self.reset_duration_s > 0 and math.isfinite(self.reset_duration_s)):
            raise ConfigError(f"reset_duration_s: expected > 0, got {self.reset_duration_s}")
        return self


_SECTIONS = ("arm", "task", "robot_ip", "enforce_realtime", "gripper", "rate_hz", "twin_speed", "gains", "limits",
             "watchdog", "server", "cameras", "reset_tcp_pos_m", "reset_tcp_quat", "reset_duration_s")


def load_robot_config(path: str | Path) -> RobotServerConfig:
    """Read and validate a robot config file (.json or .toml); errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"robot config {path} does not exist")
    try:
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
        elif path.suffix == ".toml":
            raw = tomllib.loads(path.read_text())
        else:
            raise ConfigError(f"{path}: expected a .json or .toml robot config, got '{path.suffix or 'no suffix'}'")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path}: not valid {path.suffix[1:].upper()}: {err}") from None
    try:
        return robot_config_from_dict(raw)
    except (ConfigError, ValueError, TypeError) as err:
        raise ConfigError(f"{path}: {err}") from None


def robot_config_from_dict(raw: Any) -> RobotServerConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"expected a table/object at the top level, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_SECTIONS))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; accepted: {', '.join(_SECTIONS)}")
    flat: dict[str, Any] = {}
    for key in ("arm", "task", "robot_ip", "enforce_realtime", "rate_hz", "twin_speed", "reset_tcp_pos_m",
                "reset_tcp_quat", "reset_duration_s"):
        if key in raw:
            flat[key] = raw[key]
    gripper = raw.get("gripper", {})
    if isinstance(gripper, str):
        gripper = {"kind": gripper}
    _expect_table("gripper", gripper, ("kind", "port"))
    if "kind" in gripper:
        flat["gripper"] = gripper["kind"]
    if "port" in gripper:
        flat["gripper_port"] = gripper["port"]
    for section in ("gains", "limits"):
        table = raw.get(section, {})
        _expect_table(section, table, None)
        for key, value in table.items():
            flat[f"controller.{key}"] = value
    for section, target in (("watchdog", "watchdog"), ("server", "server")):
        table = raw.get(section, {})
        _expect_table(section, table, None)
        for key, value in table.items():
            flat[f"{target}.{key}"] = value
    if "arm" in raw and raw["arm"] == "franka" and "gripper" not in flat:
        flat["gripper"] = "none"
    config = apply_overrides(RobotServerConfig(), flat)
    cameras = raw.get("cameras", {})
    _expect_table("cameras", cameras, None)
    entries = {}
    for name, table in cameras.items():
        _expect_table(f"cameras.{name}", table, tuple(f.name for f in dataclasses.fields(CameraEntry)))
        try:
            values = {k: str(v) if k == "source" else v for k, v in table.items()}
            entries[name] = apply_overrides(CameraEntry(), values)
        except ConfigError as err:
            raise ConfigError(f"cameras.{name}.{err}") from None
        if not entries[name].source:
            raise ConfigError(f"cameras.{name}.source: required (device index, path or url)")
    config.cameras = entries
    return config.check()


def _expect_table(name: str, value: Any, keys: tuple[str, ...] | None) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: expected a table/object, got {value!r}")
    if keys is not None:
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise ConfigError(f"{name}: unknown key(s) {unknown}; accepted: {', '.join(keys)}")
