"""The real-robot env: a sim task's exact spaces and action semantics, on the robot server API.

``make_real(task, config, connection)`` returns the same wrapper stack as ``envs.make(task, config)``
(gymnasium's env checker, order enforcing, the task's TimeLimit) around ``RealPandaEnv``, whose
observation and action spaces are built from the task's own class attributes and config, so a policy,
a replay buffer or a demo store made for the sim task works unchanged.

Per step (policy rate ``config.policy_hz``, like the sim): clip the action, turn the tool-frame delta into
a world target from the *measured* tool pose (clipped to the workspace box; orientation held or rotated
as in the sim), send it, send the binary gripper command when it toggles, wait until the server clock is
one policy period past the previous observation, then read the state (and camera frames with
``image_obs``). ``relative_frame`` re-expresses poses in the reset tool frame and velocities in the
current tool frame, as the sim does.

Where task values come from: a twin server (``robot serve --twin TASK``) reports its task state, reward
and success with every state, so flat-state tasks, rewards and success work as in the sim. Each ``reset``
sends this env's task config (``task_config_fields``); the twin validates it and serves its task with it
(reward options such as ``dense_reward``, target ranges, success thresholds, randomisation), so the twin
never scores a client with other options than the client's own. A real arm measures only the proprio
part: use ``image_obs`` (state = proprio + cameras) and pass ``reward_fn(obs, info) -> (reward, success)``
(e.g. a reward classifier); without one the reward is 0 and episodes end by time-out.

Connection: ``RealRobotConnection`` (loopback, port 5555; token, token file, else ``ROBOT_SERVER_TOKEN``).
The env connects at its first ``reset``. ``make_env(task, config, server)`` is the one switch that the
training, evaluation and demo code uses: the sim env without a server, this env with ``HOST:PORT``.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from envs.panda_base import (
    PandaConfig,
    PandaEnv,
    RelativeFrame,
    action_target,
    gripper_command,
    quat_to_matrix,
    step_reward,
    task_spaces,
)
from envs.registry import get_task, make, task_names
from hardware.server.client import RobotClient

GYM_ID = "robot/RealPanda-v0"
TOKEN_ENV = "ROBOT_SERVER_TOKEN"

RewardFn = Callable[[Any, dict[str, Any]], tuple[float, bool]]


@dataclass
class RealRobotConnection:
    """Where the robot server is and how to authenticate."""

    host: str = "127.0.0.1"
    """Server address (loopback unless the server was started with allow_remote)."""
    port: int = 5555
    """Server TCP port."""
    token: str = ""
    """Shared secret; empty reads token_file, else the ROBOT_SERVER_TOKEN environment variable."""
    token_file: str = ""
    """File holding the token (``robot serve --token-file``); read at connect time, never stored elsewhere."""
    timeout_s: float = 10.0
    """Longest wait for any reply [s]."""
    max_wait_periods: float = 5.0
    """A step waits at most this many policy periods for the server clock to advance."""

    def resolved_token(self) -> str:
        if self.token:
            return self.token
        if self.token_file:
            path = Path(self.token_file)
            if not path.is_file():
                raise FileNotFoundError(f"robot server token file {path} does not exist")
            token = path.read_text().strip()
            if not token:
                raise ValueError(f"robot server token file {path} is empty")
            return token
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ValueError(f"no robot server token: pass a token file or set the {TOKEN_ENV} "
                             "environment variable (robot serve prints where it wrote the token)")
        return token


def parse_server_address(server: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); one clear error otherwise."""
    host, sep, port = server.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"robot server address {server!r}: expected HOST:PORT, e.g. 127.0.0.1:5555")
    return host, int(port)


def connection_for(server: str, token_file: str = "") -> RealRobotConnection:
    """The connection to ``HOST:PORT`` with the token from ``token_file`` (else ``ROBOT_SERVER_TOKEN``)."""
    host, port = parse_server_address(server)
    return RealRobotConnection(host=host, port=port, token_file=token_file)


def make_env(task: str, config: Any = None, server: str = "", token_file: str = "") -> gym.Env:
    """The env of ``task``: the sim (``envs.make``) without ``server``, the robot behind ``HOST:PORT`` with it
    (a twin or a real arm, same spaces and wrappers)."""
    if not server:
        return make(task, config)
    return make_real(task, config, connection_for(server, token_file))


SERVER_OWNED_FIELDS = ("policy_hz", "physics_dt_s", "controller", "compiled_controller")
"""Env config fields a server never takes from a client: the twin's physics runs at its loop rate and the
server's impedance gains drive the arm (as on the real one); the policy rate is the client's own pacing."""


def task_config_fields(config: PandaConfig) -> dict[str, Any]:
    """The env config sent with each ``reset`` as JSON values (the twin serves its task with it)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in SERVER_OWNED_FIELDS}


def panda_task_names() -> list[str]:
    """The registered tasks that a Panda (real or twin) can serve: those with a ``PandaConfig``."""
    return [name for name in task_names() if _is_panda(get_task(name).config_cls)]


def _is_panda(config_cls: type | None) -> bool:
    return isinstance(config_cls, type) and issubclass(config_cls, PandaConfig)


def task_env_class(task: str) -> type[PandaEnv]:
    """The sim env class of a Panda task; other tasks raise ValueError listing the Panda ones."""
    spec = get_task(task)
    if not _is_panda(spec.config_cls) or spec.entry_point is None:
        raise ValueError(f"task '{spec.name}' is not a Panda task; the robot serves {', '.join(panda_task_names())}")
    module, name = spec.entry_point.split(":")
    return getattr(importlib.import_module(module), name)


class RealPandaEnv(gym.Env):
    """A sim task's spaces and action semantics on the robot server (see the module docstring)."""

    metadata = {"render_modes": [], "render_fps": 10}

    def __init__(self, task: str, config: PandaConfig | None = None, connection: RealRobotConnection | None = None,
                 reward_fn: RewardFn | None = None, client: RobotClient | None = None) -> None:
        spec = get_task(task)
        cls = task_env_class(spec.name)
        if config is None:
            config = spec.config_cls()
        if not isinstance(config, spec.config_cls):
            raise TypeError(f"config for task '{spec.name}' must be a {spec.config_cls.__name__}, "
                            f"got {type(config).__name__}")
        self.task = spec.name
        self.config = config
        self.connection = connection or RealRobotConnection()
        self.reward_fn = reward_fn
        self.metadata = {**self.metadata, "render_fps": config.policy_hz}
        self.has_gripper_action = cls.has_gripper_action
        self.proprio_dim = cls.proprio_dim
        self.action_space, self.state_space, self.observation_space = task_spaces(cls, config)

        self._client = client
        self._config_fields = task_config_fields(config)
        self._period_s = 1.0 / config.policy_hz
        self._state: dict[str, Any] = {}
        self._obs_time_s = 0.0
        self._gripper_closed = False
        self._hold_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._target_quat = np.zeros(4)
        self._relative_frame = RelativeFrame(cls)

    # ------------------------------------------------------------------------------------ connection
    @property
    def client(self) -> RobotClient:
        if self._client is None:
            c = self.connection
            self._client = RobotClient(c.host, c.port, c.resolved_token(), c.timeout_s).connect()
        if not self._client.server_info:
            self._client.connect()
        self._check_server(self._client.server_info)
        return self._client

    def _check_server(self, info: dict[str, Any]) -> None:
        server_task = info.get("task")
        if server_task is not None and server_task != self.task:
            raise ValueError(f"the robot server serves task '{server_task}', this env is '{self.task}'")
        if server_task is None and not self.config.image_obs and self.state_space.shape[0] > self.proprio_dim:
            raise ValueError(f"task '{self.task}' observes object state that a real arm cannot measure; use "
                             "image_obs=True (proprio + cameras) or a twin server")
        if self.config.image_obs:
            missing = [c for c in self.config.cameras if c not in info.get("cameras", [])]
            if missing:
                raise ValueError(f"the robot server has no camera(s) {missing}; it has {info.get('cameras')}")
        if self.has_gripper_action and not info.get("has_gripper", False):
            raise ValueError(f"task '{self.task}' commands a gripper but the robot server has none")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # ------------------------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = state = self.client.reset(seed, task=self.task, task_config=self._config_fields)
        self._obs_time_s = float(state["time_s"])
        self._gripper_closed = False
        self._hold_quat[:] = state["tcp_quat"]
        self._relative_frame.set_reset_pose(np.asarray(state["tcp_pos"]), self._hold_quat)
        info = {"is_success": False, **self._evaluate(state)[2]}
        return self._observation(state, info), info

    def step(self, action: np.ndarray):
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a!r}")
        a = np.clip(a, -1.0, 1.0)
        cfg, state, client = self.config, self._state, self.client

        tcp_quat = np.asarray(state["tcp_quat"], dtype=np.float64)
        target_pos = action_target(a, np.asarray(state["tcp_pos"], dtype=np.float64), quat_to_matrix(tcp_quat),
                                   tcp_quat, self._hold_quat, cfg, self._target_quat)
        client.set_target(target_pos, self._target_quat)

        toggled = False
        if self.has_gripper_action:
            was_closed = self._gripper_closed
            self._gripper_closed = gripper_command(a[-1], was_closed)
            toggled = self._gripper_closed != was_closed
            if toggled:
                client.gripper(self._gripper_closed)

        self._state = state = self._wait_for_next_observation()
        reward, success, info = self._evaluate(state)
        reward = step_reward(reward, success, toggled, cfg)
        info = {"is_success": success, **info}
        obs = self._observation(state, info)
        if self.reward_fn is not None:
            reward, success = self.reward_fn(obs, info)
            info["is_success"] = success
        return obs, float(reward), bool(success), False, info

    # ---------------------------------------------------------------------------------- internals
    def _wait_for_next_observation(self) -> dict[str, Any]:
        """Sleep until the server clock is one policy period past the last observation, then read the state."""
        deadline = self._obs_time_s + self._period_s
        give_up = time.monotonic() + self.connection.max_wait_periods * self._period_s + self.connection.timeout_s
        speed = float(self.client.server_info.get("speed", 1.0))  # a fast-forwarded twin's clock rate
        state = self.client.state()
        while state["time_s"] < deadline - 1e-9:
            if time.monotonic() > give_up:
                raise TimeoutError(f"robot server clock stuck at {state['time_s']:.3f} s "
                                   f"(waiting for {deadline:.3f} s)")
            time.sleep(max((deadline - state["time_s"]) / speed, 0.0005))
            state = self.client.state()
        self._obs_time_s = float(state["time_s"])
        return state

    def _evaluate(self, state: dict[str, Any]) -> tuple[float, bool, dict[str, Any]]:
        task = state.get("task")
        info: dict[str, Any] = {"server_time_s": state["time_s"], "watchdog": state["watchdog"]}
        if task is None:
            return 0.0, False, info
        return float(task["reward"]), bool(task["success"]), {**task.get("info", {}), **info}

    def _world_state(self, state: dict[str, Any]) -> np.ndarray:
        vec = np.zeros(self.state_space.shape[0], dtype=np.float32)
        task = state.get("task")
        if task is not None and len(task["state"]) == len(vec):
            vec[self.proprio_dim:] = task["state"][self.proprio_dim:]
        vec[0:3] = state["tcp_pos"]
        quat = np.asarray(state["tcp_quat"])
        vec[3:7] = quat if quat[0] >= 0.0 else -quat
        vec[7:10] = state["tcp_linvel"]
        vec[10:13] = state["tcp_angvel"]
        vec[13] = state["gripper_width"]
        return vec

    def _observation(self, state: dict[str, Any], info: dict[str, Any]):
        cfg = self.config
        world = self._world_state(state)
        obs_state = world.copy()
        if cfg.relative_frame:
            info["state"] = world.copy()
            self._relative_frame.apply(obs_state, quat_to_matrix(np.asarray(state["tcp_quat"])))
        if not cfg.image_obs:
            return obs_state
        info.setdefault("state", world)
        obs: dict[str, np.ndarray] = {"state": obs_state[: self.proprio_dim].copy()}
        frames = self.client.frames(cfg.cameras, cfg.image_size)
        for camera in cfg.cameras:
            image, _stamp = frames[camera]
            obs[camera] = np.array(image, dtype=np.uint8)
        return obs


def make_real(task: str, config: PandaConfig | None = None, connection: RealRobotConnection | None = None,
              reward_fn: RewardFn | None = None) -> gym.Env:
    """``RealPandaEnv`` for ``task`` with the same wrappers as ``envs.make(task)`` (TimeLimit of the task)."""
    spec = get_task(task)
    if GYM_ID not in gym.registry:
        gym.register(id=GYM_ID, entry_point="envs.real:RealPandaEnv")
    return gym.make(GYM_ID, max_episode_steps=spec.max_episode_steps, task=spec.name, config=config,
                    connection=connection, reward_fn=reward_fn)

