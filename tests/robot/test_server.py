"""The robot server API on the MuJoCo twin: authentication, versioning, loopback, no pickle, watchdog, config.

One twin server (reach task, real-time 1 kHz loop) serves the whole module on a free loopback port.
"""

from __future__ import annotations

import ast
import json
import pickle
import socket
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from hardware.franka import SilenceConfig
from hardware.server.client import RobotClient
from hardware.server.protocol import API_VERSION, ApiError, AuthError, VersionMismatchError, recv_message
from robot.config import ConfigError
from robot.server.config import NetConfig, RobotServerConfig, load_robot_config
from robot.server.server import RobotServer
from robot.server.twin import TwinBackend

TOKEN = "test-token-0123456789"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server():
    config = RobotServerConfig(arm="twin", task="reach", watchdog=SilenceConfig(hold_after_s=0.1, stop_after_s=0.4))
    config.server = NetConfig(port=0)
    with RobotServer(TwinBackend(config.check()), TOKEN, config.server) as srv:
        yield srv


def client(server, token=TOKEN, version=API_VERSION) -> RobotClient:
    host, port = server.address
    return RobotClient(host, port, token, timeout_s=5.0, version=version)


def test_binds_loopback_by_default(server):
    assert NetConfig().host == "127.0.0.1"
    assert server.address[0] == "127.0.0.1"
    with pytest.raises(ValueError, match="allow_remote"):
        NetConfig(host="0.0.0.0")
    with pytest.raises(ValueError, match="not loopback"):
        RobotServer(object(), TOKEN, _remote_net())


def _remote_net() -> NetConfig:
    net = NetConfig()
    net.host = "0.0.0.0"  # bypass the config check: the server checks again
    return net


def test_refuses_missing_and_wrong_token(server):
    for token in ("", "wrong-token", TOKEN[:-1]):
        with pytest.raises(AuthError, match="token"):
            client(server, token=token).connect()
    with client(server) as ok:
        assert ok.server_info["arm"] == "twin" and ok.server_info["task"] == "reach"
        assert len(ok.state()["q"]) == 7
    assert server.refused["auth"] >= 3


def test_refuses_other_api_version(server):
    with pytest.raises(VersionMismatchError, match=f"server speaks {API_VERSION}"):
        client(server, version=API_VERSION + 1).connect()
    # After a good handshake, a message of another version is refused too and the connection closed.
    with client(server) as c:
        c.version = API_VERSION + 1
        with pytest.raises(VersionMismatchError, match="version"):
            c.state()


def test_refuses_pickle_and_never_imports_it(server):
    sock = socket.create_connection(server.address, timeout=5.0)
    blob = pickle.dumps({"op": "hello", "token": TOKEN})
    sock.sendall(struct.pack("!II", len(blob), 0) + blob)
    reply, _ = recv_message(sock)
    assert reply["ok"] is False and reply["code"] == "protocol" and "not UTF-8 JSON" in reply["error"]
    assert sock.recv(1) == b""  # closed
    sock.close()
    for folder in ("robot/server", "hardware/server"):
        for path in (ROOT / folder).glob("*.py"):
            imported = {alias.name for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, (ast.Import, ast.ImportFrom))
                        for alias in node.names} | {node.module for node in ast.walk(ast.parse(path.read_text()))
                                                    if isinstance(node, ast.ImportFrom)}
            assert not {"pickle", "cloudpickle", "dill", "marshal"} & imported, path


def test_watchdog_holds_after_100ms_then_stops_until_reset(server):
    with client(server) as c:
        c.reset(seed=1)
        state = c.state()
        sent = c.set_target(np.add(state["tcp_pos"], [0.0, 0.0, 0.02]), state["tcp_quat"])
        assert sent["accepted"]
        t0 = sent["time_s"]
        first = {}
        deadline = time.monotonic() + 10.0
        while "stopped" not in first and time.monotonic() < deadline:
            state = c.state()
            first.setdefault(state["watchdog"], state["time_s"] - t0)
            time.sleep(0.005)
        # Not before the timeouts (server clock); the upper bounds only absorb polling delays on a busy machine.
        assert 0.1 <= first["hold"] <= 0.3, first
        assert 0.4 <= first["stopped"] <= 0.6, first
        with pytest.raises(ApiError, match="reset") as err:
            c.set_target(state["tcp_pos"], state["tcp_quat"])
        assert err.value.code == "stopped"
        c.reset(seed=2)
        assert c.state()["watchdog"] == "ok"
        assert c.set_target(state["tcp_pos"], state["tcp_quat"])["accepted"]
        stats = c.stats()
        assert stats["running"] and stats["ticks"] > 100 and stats["rate_hz"] == 1000.0 and stats["error"] is None


def test_bad_requests_get_clear_errors(server):
    with client(server) as c:
        with pytest.raises(ApiError, match="'pos' must be a list of 3 numbers"):
            c.request("set_target", pos=[0, 0], quat=[1, 0, 0, 0])
        with pytest.raises(ApiError, match="unknown op 'fly'"):
            c.request("fly")
        with pytest.raises(ApiError, match="holds its gripper fixed"):
            c.gripper(True)
        assert c.state()["task"]["name"] == "reach"  # still connected


def test_frames_are_raw_uint8(server):
    from envs.rendering import can_render

    ok, why = can_render()
    if not ok:
        pytest.skip(why)
    with client(server) as c:
        frames = c.frames(["front", "wrist"], (48, 64))
        image, stamp = frames["front"]
        assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and image.std() > 1.0
        with pytest.raises(ApiError, match="unknown camera"):
            c.frames(["top"], (48, 64))


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("bad.json", '{"arm": "franka"}', "robot_ip: required"),
        ("bad.json", '{"arm": "ur5"}', "arm: expected one of"),
        ("bad.json", '{"speed": 3}', "unknown key(s) ['speed']"),
        ("bad.json", '{"gains": {"translational_stiffness": 1}}', "unknown config key"),
        ("bad.json", '{"server": {"port": "abc"}}', "server.port: expected int"),
        ("bad.json", '{"server": {"host": "0.0.0.0"}}', "allow_remote"),
        ("bad.json", '{"task": "juggle"}', "unknown task 'juggle'"),
        ("bad.json", '{"arm": "franka", "robot_ip": "1.2.3.4", "gripper": {"kind": "robotiq"}}', "gripper.port"),
        ("bad.json", '{"watchdog": {"hold_after_s": 0.5, "stop_after_s": 0.2}}', "stop_after_s"),
        ("bad.toml", 'arm = "twin"\n[cameras.wrist]\nsource = "0"\n', "twin renders its scene cameras"),
        ("bad.toml", "arm = ", "not valid TOML"),
        ("bad.yaml", "arm: twin", "expected a .json or .toml"),
    ],
)
def test_bad_robot_config_names_file_and_key(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_robot_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_good_robot_config_and_cli_error(tmp_path):
    path = tmp_path / "robot.toml"
    path.write_text('arm = "franka"\nrobot_ip = "172.16.0.2"\n[gripper]\nkind = "emulated"\n'
                    "[gains]\ntranslational_stiffness_n_per_m = 1500.0\n[cameras.wrist]\nsource = 0\nwidth = 640\n")
    config = load_robot_config(path)
    assert config.controller.translational_stiffness_n_per_m == 1500.0
    assert config.cameras["wrist"].source == "0" and config.server.host == "127.0.0.1"
    from robot.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"arm": "twin", "rate_hz": 5}))
    assert main(["serve", "--robot", str(bad)]) == 2
