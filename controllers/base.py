"""What every control law shares: the limits config, the safety status and the tick with its safety chain.

A law is a subclass of ``TorqueController`` that writes its torque in ``_law`` and knows how to hold the
pose it has (``_hold``). ``compute`` wraps the law in the same chain for every law:

    NaN guard (state)  -> watchdog  -> gain filter -> law (+ bias) -> watchdog damping
    -> joint-limit push -> NaN guard (torque) -> torque-rate limit -> torque clamp

The workspace box and the joint range act on targets when they are set (``set_target`` of each law).

- NaN guard: a non-finite joint state or torque repeats the previous command for that tick (it is finite
  by construction) and is counted in ``status``; a non-finite target is refused and counted, and the
  previous target stays.
- Watchdog: when no target has arrived for ``watchdog_timeout_s`` the law holds the pose it has at that
  tick (target = reference = measured pose), with extra joint damping, until the next target. The
  controller's clock is ticks x dt, or the ``now_s`` passed to ``compute`` (a real arm's loop clock).
- Torques are [N*m]; the rate limit is per second so that it means the same at any tick rate.

``compute`` allocates nothing and logs nothing; it expects the robot's kinematics, mass-matrix
factorisation and bias forces to be current (after ``mj_step1`` in simulation, or
``RobotModel.set_joint_state`` on a real arm).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from controllers.limits import CLAMPED, RATE_LIMITED, all_finite, clamp_, joint_limit_push_, limit_torque_
from controllers.reference import VectorReference
from controllers.robot_model import RobotModel

# Slack on the watchdog deadline [s]: absorbs the rounding of ticks x dt (1e-9 s is far below any tick).
_CLOCK_SLACK_S = 1e-9


@dataclass
class ControllerConfig:
    """Limits and filters shared by every control law. Limits: ``math.inf`` disables; margins and gains: 0 does."""

    compensate_bias: bool = True
    """Add the robot's bias torques ``RobotModel.bias_nm`` [N*m]: gravity + Coriolis in simulation, Coriolis
    only for a real arm whose firmware adds gravity (``RobotModel(firmware_compensates_gravity=True)``);
    False adds nothing."""
    torque_rate_limit_nm_per_s: float = 1000.0
    """Max change of each commanded torque [N*m/s]; Panda: 1000 (1 N*m per 1 ms tick); math.inf disables."""
    target_filter_time_constant_s: float = 0.2
    """First-order filter from commanded target to the reference the law pulls to [s]; SERL's 0.005 per
    1 kHz tick = 0.2; usual 0.01-0.3; 0 disables (the reference jumps to each new target)."""
    gain_filter_time_constant_s: float = 0.2
    """First-order filter from a stiffness set with ``set_stiffness`` to the one in use [s]; SERL filters
    gains like targets (0.2); usual 0.05-0.5; 0 disables (gains jump)."""
    joint_limit_margin_rad: float = 0.0
    """Zone inside each joint limit where a spring pushes the joint back [rad]; joint targets are also kept
    this far inside; usual 0.05-0.25 (polymetis 0.1, deoxys 0.25); 0 disables."""
    joint_limit_stiffness_nm_per_rad: float = 50.0
    """Spring of that zone [N*m/rad]: push = k x depth into the zone (polymetis 50); usual 10-200."""
    watchdog_timeout_s: float = math.inf
    """Longest wait for a new target [s]; then the law holds its current pose, damped, until the next
    target; real arm: 2-5 policy periods (0.2-0.5 s at 10 Hz); math.inf disables."""
    watchdog_damping_nm_s_per_rad: float = 5.0
    """Joint damping added while the watchdog holds [N*m*s/rad]; usual 1-10; 0 adds none."""

    def __post_init__(self) -> None:
        self._check_nonnegative(
            "target_filter_time_constant_s",
            "gain_filter_time_constant_s",
            "joint_limit_margin_rad",
            "joint_limit_stiffness_nm_per_rad",
            "watchdog_damping_nm_s_per_rad",
        )
        for name in ("torque_rate_limit_nm_per_s", "watchdog_timeout_s"):
            value = getattr(self, name)
            if not value > 0.0:
                raise ValueError(f"{type(self).__name__}.{name} must be > 0 (math.inf disables), got {value!r}")

    def _check_nonnegative(self, *names: str) -> None:
        for name in names:
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"{type(self).__name__}.{name} must be finite and >= 0, got {value!r}")

    def _check_bounds(self, name: str, size: int | None) -> None:
        """A tuple of ``size`` values > 0 (or any length when None), math.inf allowed."""
        value = tuple(getattr(self, name))
        if (size is not None and len(value) != size) or not value or not all(v > 0.0 for v in value):
            count = f"{size} values" if size is not None else "values"
            raise ValueError(f"{type(self).__name__}.{name} must be {count} > 0 (math.inf disables), got {value!r}")


@dataclass(slots=True)
class ControllerStatus:
    """Safety state of a controller, updated in place every tick (read it, never write it)."""

    time_s: float = 0.0
    """Controller clock at the last tick [s]: ticks x dt, or the ``now_s`` given to ``compute``."""
    nan_hold: bool = False
    """The last tick repeated the previous command because the joint state or the torque was not finite."""
    nan_ticks: int = 0
    """Ticks held for non-finite numbers since reset."""
    rejected_commands: int = 0
    """Targets or gains refused since reset (NaN, infinite, zero quaternion, negative gain)."""
    target_clipped: bool = False
    """The last accepted target was moved into the workspace box (Cartesian) or joint range (joint)."""
    watchdog_engaged: bool = False
    """No target within ``watchdog_timeout_s``: holding the pose of the trip, damped, until the next one."""
    watchdog_trips: int = 0
    """Times the watchdog engaged since reset."""
    joint_limit_active: bool = False
    """Some joint was inside its joint-limit margin at the last tick."""
    torque_rate_limited: bool = False
    """The torque-rate limit changed the last command."""
    torque_clamped: bool = False
    """The torque clamp changed the last command."""
    inertia_guarded: bool = False
    """The singular-value guard capped the task inertia at the last tick (Cartesian laws)."""

    def clear(self) -> None:
        """Everything back to its default except the clock."""
        time_s = self.time_s
        for f in dataclasses.fields(self):
            setattr(self, f.name, f.default)
        self.time_s = time_s


class TorqueController:
    """The safety chain of the module docstring around a control law (subclasses implement ``_law``, ``_hold``).

    Args:
        robot: the arm; must have been built with ``actuator_names`` (its torque limits are the clamp).
        config: shared limits (the law's config, a ``ControllerConfig``).
        dt_s: control period [s] (the physics timestep in simulation, 0.001 on a Panda).
        stiffness: the law's initial stiffness vector (filtered by ``set_stiffness``), in the law's units.
        damping_ratio: zeta in D = 2 zeta sqrt(K) per axis [-] (unit-inertia convention, as franka_ros).
    """

    def __init__(
        self,
        robot: RobotModel,
        config: ControllerConfig,
        dt_s: float,
        stiffness: Sequence[float],
        damping_ratio: float,
    ) -> None:
        if robot.torque_limits_nm is None:
            raise ValueError("RobotModel needs actuator_names so that the controller knows the torque limits")
        if not dt_s > 0.0:
            raise ValueError(f"dt_s must be > 0, got {dt_s!r}")
        self.robot = robot
        self.config = config
        self.dt_s = dt_s
        #: safety state, updated in place every tick.
        self.status = ControllerStatus()
        n, nv, dofs = robot.n_joints, robot.model.nv, robot.dof_slice

        self._tau_low = np.ascontiguousarray(robot.torque_limits_nm[:, 0])
        self._tau_high = np.ascontiguousarray(robot.torque_limits_nm[:, 1])
        self._max_tau_step = config.torque_rate_limit_nm_per_s * dt_s
        self._compensate_bias = config.compensate_bias

        self._stiffness = VectorReference(len(stiffness), config.gain_filter_time_constant_s, dt_s)
        self._stiffness.reset(stiffness)
        self._damping_ratio = damping_ratio
        self._damping = np.zeros(len(stiffness))

        margin = config.joint_limit_margin_rad
        self._soft_low = robot.joint_limits_rad[:, 0] + margin
        self._soft_high = robot.joint_limits_rad[:, 1] - margin
        if np.any(self._soft_low > self._soft_high):
            raise ValueError(
                f"joint_limit_margin_rad={margin} leaves no room inside the joint limits "
                f"{robot.joint_limits_rad.tolist()}"
            )
        self._joint_limit_k = config.joint_limit_stiffness_nm_per_rad if margin > 0.0 else 0.0

        self._watchdog_deadline_s = config.watchdog_timeout_s - _CLOCK_SLACK_S
        self._watchdog_damping = config.watchdog_damping_nm_s_per_rad
        self._ticks = 0
        self._last_target_s = 0.0
        self._stamp_pending = True  # the next tick stamps the last target's arrival

        # Two torque buffers swapped each tick: the last command is the rate limiter's base. Full length nv
        # (zero outside the arm) for the Jacobian products; ``_tau``, ``_tau_prev`` view the arm.
        self._tau_full = np.zeros(nv)
        self._tau_full_prev = np.zeros(nv)
        self._tau = self._tau_full[dofs]
        self._tau_prev = self._tau_full_prev[dofs]
        self._scratch = np.zeros(n)
        self._scratch2 = np.zeros(n)
        self._update_gains()

    # ------------------------------------------------------------------------------------ law hooks
    def _law(self) -> None:
        """Write the law's torque (without bias) into ``self._tau_full`` / ``self._tau``."""
        raise NotImplementedError

    def _hold(self) -> None:
        """Make the measured pose the target and the reference (watchdog)."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ commands
    def set_stiffness(self, stiffness: Sequence[float]) -> bool:
        """New stiffness, reached through the gain filter; damping follows as 2 zeta sqrt(K).

        Units and length are the law's (see its class). Returns False, keeping the current gains, when a
        value is negative or not finite.
        """
        values = np.asarray(stiffness, dtype=float)
        if values.shape != self._stiffness.target.shape:
            raise ValueError(f"stiffness needs shape {self._stiffness.target.shape}, got {values.shape}")
        if not (np.all(np.isfinite(values)) and np.all(values >= 0.0)):
            self.status.rejected_commands += 1
            return False
        self._stiffness.set_target(values)
        self._update_gains()
        return True

    def _reset_safety(self) -> None:
        """Fresh status, watchdog restarted, rate limiter based on the torque that holds the arm still."""
        self.status.clear()
        self._stamp_pending = True
        if self._compensate_bias:
            self._tau_prev[:] = self.robot.bias_nm
        else:
            self._tau_prev[:] = 0.0
        clamp_(self._tau_prev, self._tau_low, self._tau_high)
        self._tau[:] = self._tau_prev

    def _command_received(self, accepted: bool, clipped: bool) -> bool:
        """Bookkeeping of a target: refused ones are counted; accepted ones feed the watchdog."""
        status = self.status
        if not accepted:
            status.rejected_commands += 1
            return False
        status.target_clipped = clipped
        status.watchdog_engaged = False
        self._stamp_pending = True
        return True

    # ------------------------------------------------------------------------------------------ tick
    def compute(self, now_s: float | None = None) -> np.ndarray:
        """One control tick: joint torques [N*m] (internal buffer, valid until the next call).

        ``now_s`` is the loop's clock [s] for the watchdog (a real arm); by default the controller counts
        ticks x dt_s.
        """
        status, robot = self.status, self.robot
        self._ticks += 1
        now = self._ticks * self.dt_s if now_s is None else now_s
        status.time_s = now
        if not (all_finite(robot.q) and all_finite(robot.dq)):
            return self._repeat_last_command()

        if self._stamp_pending:
            self._last_target_s = now
            self._stamp_pending = False
        elif now - self._last_target_s >= self._watchdog_deadline_s and not status.watchdog_engaged:
            status.watchdog_engaged = True
            status.watchdog_trips += 1
            self._hold()
        if self._stiffness.filter.decay != 0.0:
            self._stiffness.advance()
            self._update_gains()

        self._law()
        tau = self._tau
        if self._compensate_bias:
            np.add(tau, robot.bias_nm, out=tau)
        if status.watchdog_engaged and self._watchdog_damping > 0.0:
            mujoco.mju_addToScl(tau, robot.dq, -self._watchdog_damping)
        if self._joint_limit_k > 0.0:
            status.joint_limit_active = joint_limit_push_(
                tau, robot.q, self._soft_low, self._soft_high, self._joint_limit_k, self._scratch
            )
        if not all_finite(tau):
            return self._repeat_last_command()
        status.nan_hold = False
        limited = limit_torque_(
            tau, self._tau_prev, self._max_tau_step, self._tau_low, self._tau_high, self._scratch, self._scratch2
        )
        status.torque_rate_limited = bool(limited & RATE_LIMITED)
        status.torque_clamped = bool(limited & CLAMPED)
        # This command becomes the rate limiter's base; the other buffer is overwritten next tick.
        self._tau_full, self._tau_full_prev = self._tau_full_prev, self._tau_full
        self._tau, self._tau_prev = self._tau_prev, tau
        return tau

    def _repeat_last_command(self) -> np.ndarray:
        status = self.status
        status.nan_hold = True
        status.nan_ticks += 1
        status.torque_rate_limited = status.torque_clamped = False
        tau = self._tau
        tau[:] = self._tau_prev
        self._tau_full, self._tau_full_prev = self._tau_full_prev, self._tau_full
        self._tau, self._tau_prev = self._tau_prev, tau
        return tau

    def _update_gains(self) -> None:
        np.sqrt(self._stiffness.value, out=self._damping)
        self._damping *= 2.0 * self._damping_ratio
        self._gains_changed()

    def _gains_changed(self) -> None:
        """Hook: the stiffness or damping in use changed (laws that fold them into a matrix)."""

    # -------------------------------------------------------------------------------- inspection
    @property
    def stiffness(self) -> np.ndarray:
        """Stiffness in use (after the gain filter), in the law's units (copy)."""
        return self._stiffness.value.copy()

    @property
    def damping(self) -> np.ndarray:
        """Damping in use, 2 zeta sqrt(K), in the law's units (copy)."""
        return self._damping.copy()

    @property
    def last_torque_nm(self) -> np.ndarray:
        """Last commanded joint torques [N*m] (copy)."""
        return self._tau_prev.copy()
