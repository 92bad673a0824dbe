"""Franka Panda / FR3 through pylibfranka: our Cartesian impedance law as the arm's 1 kHz torque callback.

Two parts, so that the logic is testable without the robot:

- ``ImpedanceTorqueCallback``: a plain class, measured joint state in -> joint torques out. It feeds a
  ``RobotModel`` built with ``firmware_compensates_gravity=True`` from the measured q, dq (the robot adds
  gravity to every command itself, so the torques exclude it), runs ``CartesianImpedanceController``
  (reference limiting, torque-rate limit, clamp, NaN guard, watchdog hold) and adds a second watchdog
  stage: after ``stop_after_s`` without a target it stops for good (damping only, ``finished`` = True)
  until ``start`` re-arms it. The MuJoCo twin calls the very same object with the simulated joint state
  and applies its torques plus the simulated gravity, as the robot's firmware would.
- ``FrankaArm``: the pylibfranka driver. ``run(callback)`` opens a torque-control session and, per
  1 ms packet, reads the state, calls the callback and writes the torques; a finished callback ends the
  motion (the robot then holds on its brakes). pylibfranka is optional (``pip install
  'robot-stack[hardware]'``) and imported only when a ``FrankaArm`` is built.

Caveat (reference 4): CPython does not promise 1 kHz; libfranka aborts after ~20 missed packets
(communication_constraints_violation). Run on a PREEMPT_RT kernel with the performance governor, keep
the callback free of allocation and logging, and watch ``FrankaArm.lost_packets``.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
from controllers.limits import clamp_, limit_torque_
from controllers.robot_model import RobotModel
from hardware.optional import require

PANDA_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
PANDA_ACTUATORS = tuple(f"motor{i}" for i in range(1, 8))
PANDA_TCP_SITE = "tcp"
CONTROL_PERIOD_S = 0.001
"""libfranka's packet period (kDeltaT) [s]."""


def load_arm_model(mjcf_path: str | Path, firmware_compensates_gravity: bool = True) -> RobotModel:
    """A ``RobotModel`` of the Panda MJCF (motor actuators ``motor1..7``, site ``tcp``) on a private ``MjData``.

    With ``firmware_compensates_gravity`` its ``bias_nm`` holds only the Coriolis/centrifugal torques,
    which is what a torque command to a Franka must contain.
    """
    model = mujoco.MjModel.from_xml_path(str(mjcf_path))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    return RobotModel(model, data, PANDA_TCP_SITE, PANDA_JOINTS, PANDA_ACTUATORS, firmware_compensates_gravity)


@dataclass
class SilenceConfig:
    """What the arm does when the client stops sending targets (two stages)."""

    hold_after_s: float = 0.1
    """No target for this long [s]: hold the current pose with extra joint damping (the controller's
    watchdog) until the next target; usual 0.1-0.5; math.inf disables."""
    stop_after_s: float = 2.0
    """No target for this long [s]: stop (damping torques only; a real arm ends the motion and brakes)
    until the next reset; must exceed hold_after_s; math.inf disables."""
    stop_damping_nm_s_per_rad: float = 5.0
    """Joint damping of the stopped state [N*m*s/rad]; usual 1-10."""

    def __post_init__(self) -> None:
        if not self.hold_after_s > 0.0:
            raise ValueError(f"hold_after_s must be > 0 s (math.inf disables), got {self.hold_after_s!r}")
        if not self.stop_after_s > self.hold_after_s:
            raise ValueError(
                f"stop_after_s ({self.stop_after_s!r}) must be greater than hold_after_s ({self.hold_after_s!r})"
            )
        if not (self.stop_damping_nm_s_per_rad >= 0.0 and math.isfinite(self.stop_damping_nm_s_per_rad)):
            raise ValueError(f"stop_damping_nm_s_per_rad must be finite and >= 0, "
                             f"got {self.stop_damping_nm_s_per_rad!r}")


class ImpedanceTorqueCallback:
    """Measured (q, dq, time) -> joint torques [N*m], gravity excluded when the model says so.

    Thread safety: ``set_target``, ``set_stiffness``, ``start`` and ``read`` may be called from other
    threads (an API server); they share one lock with the tick, held for at most one tick.

    Args:
        robot: the arm model, fed from the measured state every tick (``load_arm_model``).
        config: gains and limits of the impedance law; its watchdog timeout is replaced by
            ``silence.hold_after_s``.
        silence: hold and stop timeouts.
        dt_s: control period [s] (0.001 on a Franka).
    """

    def __init__(
        self,
        robot: RobotModel,
        config: CartesianImpedanceConfig,
        silence: SilenceConfig | None = None,
        dt_s: float = CONTROL_PERIOD_S,
    ) -> None:
        self.silence = silence or SilenceConfig()
        self.robot = robot
        law_config = dataclasses.replace(config, watchdog_timeout_s=self.silence.hold_after_s)
        self.controller = CartesianImpedanceController(robot, law_config, dt_s)
        self.lock = threading.Lock()
        self.ticks = 0
        self.targets = 0
        self._finished = False
        self._last_target_s = 0.0
        self._now_s = 0.0
        self._started = False
        n = robot.n_joints
        self._tau = np.zeros(n)
        self._prev = np.zeros(n)
        self._scratch = np.zeros(n)
        self._scratch2 = np.zeros(n)
        self._max_step = law_config.torque_rate_limit_nm_per_s * dt_s
        self._low = robot.torque_limits_nm[:, 0].copy()
        self._high = robot.torque_limits_nm[:, 1].copy()

    # ------------------------------------------------------------------------------------ commands
    def start(self, q: np.ndarray, dq: np.ndarray, now_s: float = 0.0) -> None:
        """(Re-)arm at the measured state: hold the current tool pose, clear the stop and the statistics."""
        with self.lock:
            self.robot.set_joint_state(q, dq)
            self.controller.reset()
            self._prev[:] = self.controller.last_torque_nm
            self._finished = False
            self._last_target_s = self._now_s = now_s
            self._started = True

    def set_target(self, pos_world: Sequence[float], quat_world: Sequence[float]) -> bool:
        """New tool pose target (position [m], quaternion (w, x, y, z)); False if refused or stopped."""
        pos, quat = np.asarray(pos_world, dtype=float), np.asarray(quat_world, dtype=float)
        if pos.shape != (3,) or quat.shape != (4,):
            raise ValueError(f"target needs a position of 3 and a quaternion of 4 values, "
                             f"got {pos.shape}, {quat.shape}")
        with self.lock:
            if self._finished or not self._started:
                return False
            accepted = self.controller.set_target(pos, quat)
            if accepted:
                self._last_target_s = self._now_s
                self.targets += 1
            return accepted

    def set_stiffness(self, stiffness: Sequence[float]) -> bool:
        """[K_t x 3 (N/m), K_r x 3 (N*m/rad)], reached through the gain filter; False if refused."""
        with self.lock:
            return self.controller.set_stiffness(stiffness)

    @property
    def finished(self) -> bool:
        """The stop stage fired (no target for ``stop_after_s``): a real arm ends its motion."""
        return self._finished

    @property
    def holding(self) -> bool:
        """The hold stage is active (no target for ``hold_after_s``)."""
        return self.controller.status.watchdog_engaged

    # ------------------------------------------------------------------------------------------ tick
    def __call__(self, q: np.ndarray, dq: np.ndarray, now_s: float) -> np.ndarray:
        """One tick: torques for the measured state at loop time ``now_s`` [s] (internal buffer)."""
        with self.lock:
            self.ticks += 1
            self._now_s = now_s
            robot = self.robot
            robot.set_joint_state(q, dq)
            if not self._finished and now_s - self._last_target_s >= self.silence.stop_after_s:
                self._finished = True
            tau = self._tau
            if self._finished:
                # Damping plus Coriolis, still rate limited and clamped from the last command.
                np.multiply(robot.dq, -self.silence.stop_damping_nm_s_per_rad, out=tau)
                if self.controller.config.compensate_bias:
                    np.add(tau, robot.bias_nm, out=tau)
                limit_torque_(tau, self._prev, self._max_step, self._low, self._high, self._scratch, self._scratch2)
                if not np.all(np.isfinite(tau)):
                    tau[:] = self._prev
                clamp_(tau, self._low, self._high)
            else:
                np.copyto(tau, self.controller.compute(now_s))
            self._prev[:] = tau
            return tau

    def read(self) -> dict[str, object]:
        """Snapshot of the arm for the API: joints, tool pose and twist (world), watchdog and limits."""
        with self.lock:
            robot, status = self.robot, self.controller.status
            robot.update_jacobian()
            twist = robot.site_twist_world(np.zeros(6))
            quat = robot.site_quat_world(np.zeros(4))
            if quat[0] < 0.0:
                quat = -quat
            return {
                "time_s": self._now_s,
                "q": robot.q.tolist(),
                "dq": robot.dq.tolist(),
                "tau_command": self._prev.tolist(),
                "tcp_pos": robot.site_pos_world.tolist(),
                "tcp_quat": quat.tolist(),
                "tcp_linvel": twist[:3].tolist(),
                "tcp_angvel": twist[3:].tolist(),
                "watchdog": "stopped" if self._finished else ("hold" if status.watchdog_engaged else "ok"),
                "watchdog_trips": status.watchdog_trips,
                "target_pos": self.controller.target_pos_world.tolist(),
                "target_quat": self.controller.target_quat_world.tolist(),
                "torque_rate_limited": status.torque_rate_limited,
                "torque_clamped": status.torque_clamped,
                "rejected_commands": status.rejected_commands,
                "targets": self.targets,
                "ticks": self.ticks,
            }


@dataclass
class FrankaConfig:
    """Connection and reflexes of a Franka arm (pylibfranka)."""

    robot_ip: str = ""
    """Address of the robot's control interface (FCI), e.g. the arm's static IP."""
    enforce_realtime: bool = True
    """Require a real-time kernel (libfranka kEnforce); False runs on a stock kernel (kIgnore)."""
    joint_collision_thresholds_nm: tuple[float, ...] = (20.0, 20.0, 18.0, 18.0, 16.0, 14.0, 12.0)
    """Torque per joint [N*m] above which the robot stops with a reflex (franka_control defaults)."""
    cartesian_collision_thresholds: tuple[float, ...] = (20.0, 20.0, 20.0, 25.0, 25.0, 25.0)
    """Force [N] x 3 and torque [N*m] x 3 at the tool above which the robot stops with a reflex."""

    def __post_init__(self) -> None:
        if not self.robot_ip:
            raise ValueError("FrankaConfig.robot_ip is empty; give the arm's FCI address")
        if len(self.joint_collision_thresholds_nm) != 7 or len(self.cartesian_collision_thresholds) != 6:
            raise ValueError("collision thresholds need 7 joint and 6 Cartesian values")


TorqueCallback = Callable[[np.ndarray, np.ndarray, float], np.ndarray]


class FrankaArm:
    """A Franka arm in torque control with a ``TorqueCallback`` (see the module docstring)."""

    def __init__(self, config: FrankaConfig) -> None:
        self._lib = require("pylibfranka", "hardware")
        self.config = config
        self._robot = None
        self.lost_packets = 0
        """1 ms packets the robot reported as missed (duration > 1 ms between two reads)."""

    def connect(self) -> None:
        lib, cfg = self._lib, self.config
        realtime = lib.RealtimeConfig.kEnforce if cfg.enforce_realtime else lib.RealtimeConfig.kIgnore
        self._robot = lib.Robot(cfg.robot_ip, realtime)
        joints, cart = list(cfg.joint_collision_thresholds_nm), list(cfg.cartesian_collision_thresholds)
        self._robot.set_collision_behavior(joints, joints, cart, cart)

    def read_joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured q [rad], dq [rad/s] outside a control session."""
        state = self._connected().read_once()
        return np.asarray(state.q, dtype=float), np.asarray(state.dq, dtype=float)

    def run(self, callback: ImpedanceTorqueCallback, should_stop: Callable[[], bool] = lambda: False,
            on_tick: Callable[[float], None] | None = None) -> None:
        """Torque control until the callback finishes or ``should_stop()``; blocks (run it in its own thread)."""
        robot, lib = self._connected(), self._lib
        q, dq = self.read_joint_state()
        callback.start(q, dq, 0.0)
        control = robot.start_torque_control()
        now_s = 0.0
        while True:
            state, duration = control.readOnce()
            period = duration.to_sec()
            now_s += period
            if period > 1.5 * CONTROL_PERIOD_S:
                self.lost_packets += round(period / CONTROL_PERIOD_S) - 1
            tau = callback(np.asarray(state.q, dtype=float), np.asarray(state.dq, dtype=float), now_s)
            command = lib.Torques(tau.tolist())
            done = callback.finished or should_stop()
            command.motion_finished = done
            control.writeOnce(command)
            if on_tick is not None:
                on_tick(now_s)
            if done:
                return

    def stop(self) -> None:
        if self._robot is not None:
            self._robot.stop()

    def _connected(self):
        if self._robot is None:
            raise RuntimeError("FrankaArm is not connected; call connect() first")
        return self._robot
