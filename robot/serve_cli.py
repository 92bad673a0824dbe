"""``robot serve``: the robot server (control loop + arm + gripper + cameras behind the API).

    robot serve --robot robot.toml            a real arm from a robot config (JSON or TOML)
    robot serve --twin pick-cube              the MuJoCo twin of a sim task, same API, real time
    robot serve --twin reach --port 0         any free port (printed)
    robot serve --twin reach --speed 5        the twin's clock 5x the wall clock (rehearsals, tests)

The token: ``--token-file FILE`` reads it (or writes a fresh one there, mode 600); without it the
``ROBOT_SERVER_TOKEN`` environment variable is used, else a fresh token is written to
``robot_server.token`` in the working folder. Clients (``envs.real``) read ``ROBOT_SERVER_TOKEN``.
The server listens on 127.0.0.1 unless ``--host`` names another address together with ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import threading
from pathlib import Path

from robot.cli import CliParser, CommandLineError, console

DEFAULT_TOKEN_FILE = "robot_server.token"
TOKEN_ENV = "ROBOT_SERVER_TOKEN"


def build_parser() -> CliParser:
    parser = CliParser(prog="robot serve", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--robot", metavar="CONFIG", help="robot config file (.json or .toml)")
    source.add_argument("--twin", metavar="TASK", help="serve the MuJoCo twin of this sim task")
    parser.add_argument("--host", help="address to bind (default: the config's, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: the config's, 5555; 0 = any free port)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --host")
    parser.add_argument("--speed", type=float, metavar="X",
                        help="twin only: simulated seconds per wall-clock second (default 1: real time)")
    parser.add_argument("--token-file", metavar="FILE", help="read the token from FILE (written if missing)")
    parser.add_argument("--duration", type=float, default=None, metavar="S",
                        help="stop after S seconds (default: run until Ctrl-C)")
    return parser


def resolve_token(token_file: str | None) -> tuple[str, str]:
    """(token, where it came from)."""
    if token_file is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV], f"${TOKEN_ENV}"
    path = Path(token_file or DEFAULT_TOKEN_FILE)
    if path.is_file():
        token = path.read_text().strip()
        if not token:
            raise CommandLineError(f"--token-file {path}: the file is empty")
        return token, str(path)
    token = secrets.token_urlsafe(24)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token, f"{path} (new)"


def main(argv: list[str]) -> int:
    from robot.config import apply_overrides
    from robot.server.config import RobotServerConfig, load_robot_config
    from robot.server.server import RobotServer, make_backend

    args = build_parser().parse_args(argv)
    twin = RobotServerConfig(arm="twin", task=args.twin or "pick-cube")
    config = load_robot_config(args.robot) if args.robot is not None else twin
    net = {}
    if args.host is not None:
        net["server.host"] = args.host
    if args.port is not None:
        net["server.port"] = args.port
    if args.allow_remote:
        net["server.allow_remote"] = True
    if args.speed is not None:
        net["twin_speed"] = args.speed
    config = apply_overrides(config, net).check() if net else config.check()
    token, token_source = resolve_token(args.token_file)

    server = RobotServer(make_backend(config), token, config.server).start()
    host, port = server.address
    what = f"twin of {config.task} (x{config.twin_speed:g})" if config.arm == "twin" else f"franka at {config.robot_ip}"
    console.print(f"[bold]robot server[/] {what} on {host}:{port} | loop {config.rate_hz:g} Hz | "
                  f"token from {token_source}", highlight=False)
    console.print(f"listening {host} {port}", highlight=False)  # machine-readable line for scripts and tests
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.duration is not None:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True  # a SIGTERM or Ctrl-C must not wait for it
        timer.start()
    try:
        server.wait(stop)
    except KeyboardInterrupt:
        pass
    finally:
        stats = server.backend.stats()
        server.close()
    last = stats.get("last") or {}
    console.print(f"stopped: {stats.get('ticks', 0)} ticks, {stats.get('targets', 0)} targets, worst loop p99 "
                  f"lateness {stats.get('worst_p99_lateness_us', last.get('p99_lateness_us', 0.0)):.0f} us",
                  highlight=False)
    return 0
