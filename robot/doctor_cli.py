"""``robot doctor``: is this machine ready to drive the robot? One table, non-zero exit if a required check failed.

    robot doctor                                   serial ports and loop latency
    robot doctor --robot robot.toml                + the config's gripper and cameras
    robot doctor --dynamixel /dev/ttyUSB0:1,2,3    + ping Dynamixel ids 1-3 (PORT[@BAUD]:IDS)
    robot doctor --feetech /dev/ttyACM0@1000000:1  + ping a Feetech servo
    robot doctor --robotiq /dev/ttyUSB1 --camera 0 + a Robotiq gripper and camera 0
    robot doctor --emulate                         ping the Dynamixel, Feetech and Robotiq emulators and read
                                                   a generated video file (checks the drivers, not devices)

Checks: serial ports (pyserial ``list_ports``, information only), a ping per device (required), per camera
(required): open, resolution and frame rate read back, age of the newest frame; the 1 kHz loop (``RateLoop``
with a busy-wait tail for ``--loop-seconds``): required only with ``--loop-p99-limit-us``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from robot.cli import CliParser, CommandLineError, console


@dataclass
class Check:
    name: str
    target: str
    ok: bool | None  # None: information only
    detail: str
    required: bool = True

    @property
    def status(self) -> str:
        if self.ok is None:
            return "[cyan]info[/]"
        if self.ok:
            return "[green]ok[/]"
        return "[red]FAIL[/]" if self.required else "[yellow]warn[/]"


def build_parser() -> CliParser:
    parser = CliParser(prog="robot doctor", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", metavar="CONFIG", help="robot config: check its gripper port and cameras")
    parser.add_argument("--dynamixel", action="append", default=[], metavar="PORT[@BAUD]:IDS",
                        help="ping Dynamixel servos, e.g. /dev/ttyUSB0:1,2 (repeatable)")
    parser.add_argument("--feetech", action="append", default=[], metavar="PORT[@BAUD]:IDS",
                        help="ping Feetech servos, e.g. /dev/ttyACM0@1000000:1 (repeatable)")
    parser.add_argument("--robotiq", action="append", default=[], metavar="PORT", help="ping a Robotiq gripper")
    parser.add_argument("--camera", action="append", default=[], metavar="SOURCE",
                        help="open a camera: index, device path or video file (repeatable)")
    parser.add_argument("--emulate", action="store_true", help="check the drivers against the device emulators")
    parser.add_argument("--loop-seconds", type=float, default=1.0, help="duration of the loop test (default 1)")
    parser.add_argument("--loop-rate", type=float, default=1000.0, help="rate of the loop test [Hz] (default 1000)")
    parser.add_argument("--loop-p99-limit-us", type=float, default=None,
                        help="make the loop test required: fail when p99 lateness exceeds this [us]")
    parser.add_argument("--timeout", type=float, default=0.1, help="reply timeout of each ping [s] (default 0.1)")
    return parser


def parse_bus(spec: str, option: str) -> tuple[str, int, list[int]]:
    """PORT[@BAUD]:ID,ID -> (port, baudrate, ids); the port may itself contain ':' (urls)."""
    port, sep, ids_text = spec.rpartition(":")
    baud = 1_000_000
    if "@" in port:
        port, _, baud_text = port.rpartition("@")
        if not baud_text.isdigit():
            raise CommandLineError(f"{option} {spec!r}: baud rate must be a number, got {baud_text!r}")
        baud = int(baud_text)
    try:
        ids = [int(x) for x in ids_text.split(",") if x.strip()]
    except ValueError:
        ids = []
    if not sep or not port or not ids or not all(0 <= i <= 252 for i in ids):
        raise CommandLineError(f"{option} {spec!r}: expected PORT:IDS or PORT@BAUD:IDS, ids 0-252 "
                               "separated by commas")
    return port, baud, ids


# ----------------------------------------------------------------------------------------------- checks
def check_serial_ports() -> list[Check]:
    from serial.tools import list_ports

    ports = sorted(list_ports.comports(), key=lambda p: p.device)
    if not ports:
        return [Check("serial ports", "-", None, "none found (USB adapters unplugged, or no permission)", False)]
    return [Check("serial port", p.device, None, f"{p.description or '-'} [{p.hwid or '-'}]", False) for p in ports]


def ping_bus(family: str, port: str, baud: int, ids: list[int], timeout_s: float) -> list[Check]:
    from hardware.motor_bus import Motor, MotorBusConfig

    if family == "dynamixel":
        from hardware.dynamixel import DynamixelBus as Bus
        from hardware.dynamixel import Model
    else:
        from hardware.feetech import FeetechBus as Bus
        from hardware.feetech import Model
    by_number = {m.value.model_number: m.value.name for m in Model}
    any_model = next(iter(Model))
    motors = {f"id{i}": Motor(i, any_model) for i in ids}
    bus = Bus(MotorBusConfig(port, motors, baudrate=baud, timeout_s=timeout_s, retries=1, verify_models=False))
    target = f"{port} @ {baud}"
    try:
        bus.connect()
    except Exception as err:  # noqa: BLE001 (any failure is the finding)
        return [Check(f"{family} bus", target, False, f"cannot open: {err}")]
    checks = []
    try:
        for i in ids:
            start = time.perf_counter()
            try:
                number = bus.ping(f"id{i}")
                ms = (time.perf_counter() - start) * 1e3
                model = by_number.get(number, f"unknown model {number}")
                checks.append(Check(f"{family} ping", f"{target} id {i}", True, f"{model}, {ms:.1f} ms"))
            except Exception as err:  # noqa: BLE001
                checks.append(Check(f"{family} ping", f"{target} id {i}", False, str(err).splitlines()[0]))
    finally:
        bus.disconnect(disable_torque=False)
    return checks


def ping_robotiq(port: str, timeout_s: float) -> Check:
    from hardware.robotiq.gripper import Robotiq2F, Robotiq2FConfig

    gripper = Robotiq2F(Robotiq2FConfig(port=port, timeout_s=max(timeout_s, 0.05), retries=1,
                                        keepalive_period_s=None))
    start = time.perf_counter()
    try:
        gripper.connect(activate=False)
        status = gripper.status()
        ms = (time.perf_counter() - start) * 1e3
        return Check("robotiq status", port, not status.fault.is_major,
                     f"{status.activation.name.lower()}, fault {status.fault.name}, position {status.position}, "
                     f"{ms:.1f} ms")
    except Exception as err:  # noqa: BLE001
        return Check("robotiq status", port, False, str(err).splitlines()[0])
    finally:
        gripper.disconnect()


def check_camera(source: str, width: int | None = None, height: int | None = None, fps: float | None = None,
                 label: str | None = None) -> Check:
    from hardware.cameras.opencv import OpenCVCamera, OpenCVCameraConfig

    parsed: int | str = int(source) if source.isdigit() else source
    camera = OpenCVCamera(OpenCVCameraConfig(source=parsed, width=width, height=height, fps=fps,
                                             strict_settings=False, connect_timeout_s=3.0, reconnect_attempts=0))
    target = label or source
    try:
        camera.connect()
        frame = camera.async_read(timeout_s=1.0)
        age_ms = (time.monotonic() - frame.timestamp_s) * 1e3
        h, w = frame.image.shape[:2]
        settings = camera.settings
        mismatch = getattr(camera, "setting_mismatches", ())
        detail = f"{w}x{h} @ {settings.fps:g} fps {settings.fourcc}, newest frame {age_ms:.0f} ms old"
        if mismatch:
            detail += "; asked for " + ", ".join(map(str, mismatch))
        return Check("camera", target, age_ms < 500 and not mismatch, detail)
    except Exception as err:  # noqa: BLE001
        return Check("camera", target, False, str(err).splitlines()[0])
    finally:
        with contextlib.suppress(Exception):
            camera.disconnect()


def check_loop(rate_hz: float, seconds: float, limit_us: float | None) -> Check:
    from controllers.rate_loop import RateLoop

    stats = RateLoop(rate_hz, spin_s=0.0002).run(lambda _i: None, max(1, round(rate_hz * seconds)))
    detail = (f"lateness p50 {stats.p50_lateness_us:.0f} us, p99 {stats.p99_lateness_us:.0f} us, max "
              f"{stats.max_lateness_us:.0f} us, {stats.overruns} overruns / {stats.ticks} ticks")
    bound = 1000.0 if limit_us is None else limit_us
    return Check("control loop", f"{rate_hz:g} Hz x {seconds:g} s", stats.p99_lateness_us <= bound,
                 detail + ("" if limit_us is not None else f" (warn above p99 {bound:.0f} us)"),
                 required=limit_us is not None)


@contextlib.contextmanager
def emulated_devices() -> Iterator[tuple[list[Callable[[float], list[Check]]], str]]:
    """Dynamixel, Feetech and Robotiq emulators on ptys, and a generated video file as a camera."""
    import cv2
    import numpy as np

    from hardware.dynamixel import Model as DxlModel
    from hardware.emulators import EmulatorServer, Transport
    from hardware.emulators.dynamixel import DynamixelBusEmulator
    from hardware.emulators.feetech import FeetechBusEmulator
    from hardware.emulators.robotiq import Robotiq2FEmulator
    from hardware.feetech import Model as FtsModel

    with contextlib.ExitStack() as stack:
        dxl = stack.enter_context(EmulatorServer(
            DynamixelBusEmulator.with_models({1: DxlModel.XM430_W350, 2: DxlModel.XL330_M288}), Transport.PTY))
        fts = stack.enter_context(EmulatorServer(FeetechBusEmulator.with_models({1: FtsModel.STS3215}),
                                                 Transport.PTY))
        grip = stack.enter_context(EmulatorServer(Robotiq2FEmulator(), Transport.PTY))
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="doctor-")))
        video = folder / "camera.avi"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (160, 120))
        for i in range(30):
            writer.write(np.full((120, 160, 3), 8 * i, dtype=np.uint8))
        writer.release()
        checks = [
            lambda t: ping_bus("dynamixel", dxl.url, 1_000_000, [1, 2], max(t, 0.25)),
            lambda t: ping_bus("feetech", fts.url, 1_000_000, [1], max(t, 0.25)),
            lambda t: [ping_robotiq(grip.url, max(t, 0.25))],
        ]
        yield checks, str(video)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.loop_seconds > 0 or not args.loop_rate > 0:
        raise CommandLineError("--loop-seconds and --loop-rate must be > 0")
    buses = [("dynamixel", *parse_bus(s, "--dynamixel")) for s in args.dynamixel]
    buses += [("feetech", *parse_bus(s, "--feetech")) for s in args.feetech]
    robotiq = list(args.robotiq)
    cameras: list[tuple[str, int | None, int | None, float | None, str | None]] = [
        (c, None, None, None, None) for c in args.camera]
    if args.robot is not None:
        from robot.server.config import load_robot_config

        config = load_robot_config(args.robot)
        if config.gripper == "robotiq":
            robotiq.append(config.gripper_port)
        for name, entry in config.cameras.items():
            cameras.append((entry.source, entry.width or None, entry.height or None, entry.fps or None,
                            f"{name} ({entry.source})"))

    checks = check_serial_ports()
    with contextlib.ExitStack() as stack:
        if args.emulate:
            emulated, video = stack.enter_context(emulated_devices())
            for run in emulated:
                checks += run(args.timeout)
            cameras.append((video, None, None, None, "emulated (video file)"))
        for family, port, baud, ids in buses:
            checks += ping_bus(family, port, baud, ids, args.timeout)
        checks += [ping_robotiq(port, args.timeout) for port in robotiq]
        checks += [check_camera(*camera) for camera in cameras]
    checks.append(check_loop(args.loop_rate, args.loop_seconds, args.loop_p99_limit_us))

    table = Table(title="robot doctor", title_justify="left")
    for column in ("check", "target", "status", "detail"):
        table.add_column(column, overflow="fold")
    for c in checks:
        table.add_row(c.name, c.target, c.status, c.detail)
    console.print(table)
    failed = [c for c in checks if c.ok is False and c.required]
    if failed:
        console.print(f"[red]{len(failed)} required check(s) failed[/]")
        return 1
    return 0
