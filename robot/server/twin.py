"""The digital twin backend: the MuJoCo arm of a sim task behind the same API and callback as the Franka.

Per control tick (``rate_hz``, 1 kHz by default, real time):

    mj_step1 -> q, dq -> ImpedanceTorqueCallback (own RobotModel, gravity left out, as for the Franka)
             -> motor torques + the arm's gravity torques (what a Franka's firmware adds) -> mj_step2

so the twin exercises exactly the callback object, clock and watchdog that the real arm runs. The task's
objects, reward and success come from the sim task itself (its scene, ``_observe_state``, ``_evaluate``),
reported with every state. The gripper is the sim task's fingers (not the Robotiq emulator: the
emulator has no fingers that can grasp a MuJoCo cube). Cameras are the scene's cameras rendered on
request, on one render thread (an OpenGL context belongs to one thread), from a copy of the state taken
under the lock, so rendering never blocks the control tick.

Task config: a client's ``reset`` carries its env config (``envs.real.task_config_fields``); the twin
validates it (one error naming the key) and serves its task with it, rebuilding the scene when it
differs from the one served (reward options, target ranges, randomisation, home pose...). The twin keeps
its own physics rate; the impedance gains are the server's (``controller``), as on the real arm.

Speed: ``twin_speed`` > 1 runs the simulated clock faster than the wall clock (a rehearsal or a test in
less time; clients pace on the server clock, so nothing else changes). The watchdog guards against a silent
client, whose pauses are wall-clock time, so its timeouts are scaled to stay wall-clock seconds.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import mujoco
import numpy as np

import envs
from envs.panda_base import ASSETS, CAMERAS, PandaConfig, PandaEnv
from envs.real import SERVER_OWNED_FIELDS, task_env_class
from hardware.franka import ImpedanceTorqueCallback, load_arm_model
from robot.server.config import RobotServerConfig
from robot.server.loop import ControlLoopThread


def make_task_env(task: str, rate_hz: float, **config_overrides: Any) -> PandaEnv:
    """The unwrapped sim env of ``task`` with its physics at the loop rate."""
    spec = envs.get_task(task)
    env_cls = task_env_class(spec.name)
    config = dataclasses.replace(spec.config_cls(), physics_dt_s=1.0 / rate_hz, **config_overrides)
    return env_cls(config)


CLIENT_SIDE_FIELDS = ("action_scale_m", "action_scale_rad", "rotation", "workspace_low_m", "workspace_high_m",
                      "gripper_toggle_penalty", "relative_frame", "image_obs", "cameras", "image_size", "render_camera",
                      "render_size")
"""Env config fields that shape the client's actions, observations and penalties (``envs.real`` applies them),
not the served scene: a client differing only in these never makes the twin rebuild its scene."""


def served_task_config(base: PandaConfig, fields: dict[str, Any]) -> PandaConfig:
    """``base`` (the twin's default for its task) with a client's env config fields; ValueError names a bad key."""
    from robot.config import ConfigError, from_dict

    owned = sorted(set(fields) & set(SERVER_OWNED_FIELDS))
    if owned:
        raise ValueError(f"task_config: {owned} are the server's (its loop rate and impedance gains); "
                         "leave them out")
    try:
        return from_dict(base, {k: v for k, v in fields.items() if k not in CLIENT_SIDE_FIELDS})
    except (ConfigError, TypeError) as err:
        raise ValueError(f"task_config: {err}") from None


def jsonable(value: Any) -> Any:
    """Task info values as JSON (numbers, bools, strings, lists, dicts); other objects become strings."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


class TwinBackend:
    """MuJoCo arm + task behind the robot server API (see the module docstring)."""

    kind = "twin"

    def __init__(self, config: RobotServerConfig) -> None:
        self.config = config
        self.lock = threading.RLock()
        self._bind(make_task_env(config.task, config.rate_hz))
        self.default_task_config = self.env.config
        watchdog = dataclasses.replace(config.watchdog, hold_after_s=config.watchdog.hold_after_s * config.twin_speed,
                                       stop_after_s=config.watchdog.stop_after_s * config.twin_speed)
        self.callback = ImpedanceTorqueCallback(
            load_arm_model(ASSETS / "panda.xml", firmware_compensates_gravity=True),
            config.controller, watchdog, dt_s=1.0 / config.rate_hz,
        )
        self._renderers: dict[tuple[int, int], Any] = {}
        self._renderer_model: mujoco.MjModel | None = None
        self._render_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-render")
        self.loop = ControlLoopThread(self._tick, config.rate_hz * config.twin_speed)
        self.episode_seed: int | None = None
        self.resets = 0
        self.rebuilds = 0
        self._reset_locked(0)

    def _bind(self, env: PandaEnv) -> None:
        """Serve ``env``'s scene (at start, and when a client's task config needs another scene)."""
        self.env = env
        self.model, self.data = env.model, env.data
        robot = env.robot
        self._q, self._dq = robot.q, robot.dq
        self._dofs = robot.dof_slice
        self._arm_ctrl = env._arm_ctrl
        self._gravity = np.zeros(self.model.nv)
        self._qvel = np.zeros(self.model.nv)
        self._render_data = mujoco.MjData(self.model)

    # ------------------------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.loop.start()

    def close(self) -> None:
        self.loop.stop()
        self._render_pool.submit(self._close_renderers).result(timeout=5)
        self._render_pool.shutdown(wait=True)

    def _close_renderers(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    def info(self) -> dict[str, Any]:
        return {"arm": "twin", "task": self.config.task, "rate_hz": self.config.rate_hz, "cameras": list(CAMERAS),
                "has_gripper": self.env.has_gripper_action, "gripper": "sim", "speed": self.config.twin_speed}

    # ------------------------------------------------------------------------------------------ tick
    def _tick(self) -> None:
        with self.lock:
            m, d = self.model, self.data
            mujoco.mj_step1(m, d)
            self._gravity_torques()
            tau = self.callback(self._q, self._dq, d.time)
            np.copyto(self._arm_ctrl, tau)
            d.qfrc_applied[self._dofs] = self._gravity[self._dofs]
            mujoco.mj_step2(m, d)
            if self.env._substep_monitor is not None:
                self.env._substep_monitor()

    def _gravity_torques(self) -> None:
        """Gravity torques of the current pose into ``_gravity`` (RNE at zero velocity); velocities restored."""
        m, d = self.model, self.data
        self._qvel[:] = d.qvel
        d.qvel[:] = 0.0
        mujoco.mj_comVel(m, d)
        mujoco.mj_rne(m, d, 0, self._gravity)
        d.qvel[:] = self._qvel
        mujoco.mj_comVel(m, d)

    # ------------------------------------------------------------------------------------ commands
    def set_target(self, pos: list[float], quat: list[float]) -> bool:
        return self.callback.set_target(pos, quat)

    def set_stiffness(self, stiffness: list[float]) -> bool:
        return self.callback.set_stiffness(stiffness)

    def set_gripper(self, closed: bool) -> None:
        if not self.env.has_gripper_action:
            raise ValueError(f"task {self.config.task} holds its gripper fixed; it takes no gripper command")
        with self.lock:
            env = self.env
            env._gripper_closed = bool(closed)
            self.data.ctrl[env._gripper_actuator] = -env._gripper_speed_mps if closed else env._gripper_speed_mps

    def reset(self, seed: int | None, task: str | None = None,
              task_config: dict[str, Any] | None = None) -> dict[str, Any]:
        """The task's reset (seeded); with ``task_config``, first the client's task config (see the module doc)."""
        if task is not None and envs.get_task(task).name != self.config.task:
            raise ValueError(f"this twin serves task '{self.config.task}', the client runs '{task}'; "
                             f"start 'robot serve --twin {task}' for it")
        env = None
        if task_config is not None:
            wanted = served_task_config(self.default_task_config, task_config)
            if wanted != self.env.config:
                env = task_env_class(self.config.task)(wanted)  # outside the lock: compiling a scene takes a while
        with self.lock:
            if env is not None:
                old = self.env
                self._bind(env)
                old.close()
                self.rebuilds += 1
            self._reset_locked(seed)
            self.resets += 1
        return self.state()

    def _reset_locked(self, seed: int | None) -> None:
        self.env.reset(seed=seed)
        self.episode_seed = seed
        self.data.qfrc_applied[:] = 0.0
        self.callback.start(self._q, self._dq, self.data.time)

    # ------------------------------------------------------------------------------------ readings
    def state(self) -> dict[str, Any]:
        arm = self.callback.read()
        with self.lock:
            env = self.env
            task_state = env._observe_state().copy()
            reward, success, info = env._evaluate()
            gripper_width = float(task_state[13])
            closed = env.gripper_closed
        return {
            **arm,
            "gripper_width": gripper_width,
            "gripper_closed": closed,
            "task": {"name": self.config.task, "state": task_state.tolist(), "reward": float(reward),
                     "success": bool(success), "info": jsonable(info)},
        }

    def frames(self, names: list[str], size: tuple[int, int]) -> list[tuple[str, np.ndarray, float]]:
        unknown = [n for n in names if n not in CAMERAS]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the twin has {list(CAMERAS)}")
        height, width = size
        if not (0 < height <= 480 and 0 < width <= 640):
            raise ValueError(f"frame size must be (height, width) within (480, 640), got {size}")
        with self.lock:
            m, rd, d, shadows = self.model, self._render_data, self.data, self.env.config.image_shadows
            rd.qpos[:] = d.qpos
            rd.mocap_pos[:] = d.mocap_pos
            rd.mocap_quat[:] = d.mocap_quat
            stamp = float(d.time)
        return self._render_pool.submit(self._render, m, rd, names, (height, width), stamp, shadows).result(timeout=30)

    def _render(self, m: mujoco.MjModel, rd: mujoco.MjData, names: list[str], size: tuple[int, int], stamp: float,
                shadows: bool) -> list[tuple[str, np.ndarray, float]]:
        from envs.rendering import CameraRenderer

        if m is not self._renderer_model:  # a client's task config rebuilt the scene: renderers of the old one go
            self._close_renderers()
            self._renderer_model = m
        renderer = self._renderers.get(size)
        if renderer is None:
            renderer = self._renderers[size] = CameraRenderer(m, *size, shadows=shadows)
        mujoco.mj_kinematics(m, rd)
        mujoco.mj_camlight(m, rd)
        return [(name, renderer.render(rd, name).copy(), stamp) for name in names]

    def stats(self) -> dict[str, Any]:
        return {**self.loop.stats(), "ticks": self.callback.ticks, "targets": self.callback.targets,
                "resets": self.resets, "scene_rebuilds": self.rebuilds}

