"""The compiled Cartesian impedance tick for simulation: n x (mj_step1 -> tick -> mj_step2) in C.

Why: MuJoCo runs the controller every physics step, and the Python tick (about 30 MuJoCo/NumPy calls,
~20 us) costs twice an ``mj_step`` of the Panda scene. ``native/cartesian_impedance_tick.c`` is a line by
line translation of the ``CartesianImpedanceController`` tick that works *in place on the controller's own
NumPy buffers*, so there is still one controller: its Python tick drives a real arm, this drives the
simulated one, and the tests run both on the same trajectories and compare torques.

- What it covers: the law and the safety chain as envs configure them (bias, target filter, null-space
  posture, torque-rate limit, clamp, NaN guard). At any tick it cannot do (watchdog trip or hold, the
  singular-value guard engaging) it hands that one tick to Python and goes on; controllers using integral
  action, joint-limit push, firmware gravity or a moving gain filter are stepped in Python entirely.
- Build: compiled on first use with the system C compiler against the MuJoCo library and headers in the
  ``mujoco`` wheel, cached per source, MuJoCo version and Python ABI under ``$XDG_CACHE_HOME/robot-stack``
  (``ROBOT_STACK_CACHE`` overrides). Without a compiler, or with ``ROBOT_STACK_NATIVE=0``, everything runs
  in Python (a warning says so once).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceController

_SOURCE = Path(__file__).with_name("native") / "cartesian_impedance_tick.c"

_P = ctypes.POINTER(ctypes.c_double)


class _State(ctypes.Structure):
    """Mirror of ``rs_cimp`` in the C file (same order, same types)."""

    _fields_ = [
        *[(name, ctypes.c_int) for name in ("nv", "n", "dof_start", "qpos_start", "site_id", "ctrl_start")],
        ("compensate_bias", ctypes.c_int),
        ("posture_enabled", ctypes.c_int),
        *[(name, ctypes.c_double) for name in
          ("dt", "max_tau_step", "inertia_floor", "posture_k", "posture_d", "watchdog_deadline")],
        *[(name, _P) for name in (
            "target_pos", "target_quat", "ref_pos", "ref_quat", "offset", "state", "gain", "err_low", "err_high",
            "wrench", "jac_full", "jac_minv", "inertia_inv", "factor", "probe", "solved", "posture_offset",
            "posture_tau_full", "tau_full", "tau_full_prev", "tau_low", "tau_high")],
        *[(name, ctypes.c_double) for name in ("pose_decay", "pose_beta", "min_eigenvalue", "last_target_s")],
        *[(name, ctypes.c_long) for name in ("ticks", "ticks_to_refresh", "nan_ticks")],
        *[(name, ctypes.c_int) for name in
          ("stamp_pending", "watchdog_engaged", "nan_hold", "rate_limited", "clamped")],
        ("monitor_sensor_adr", ctypes.c_int),
        ("monitor_alpha", ctypes.c_double),
        ("monitor_force", _P),
        ("monitor_peak", _P),
    ]


@dataclass(frozen=True)
class ForceMonitor:
    """A per-physics-step contact-force filter and peak, done in C: each step
    force <- (1 - alpha) force - alpha sensordata[adr:adr+3]; peak <- max(peak, |force|) (in place).

    ``python`` is the env's own Python version of the same update, used for the ticks Python runs.
    """

    sensor_adr: int
    alpha: float
    force: np.ndarray
    peak: np.ndarray
    python: Callable[[], None]


def _cache_dir() -> Path:
    root = os.environ.get("ROBOT_STACK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "robot-stack"
    )
    return Path(root) / "native"


def _mujoco_library() -> Path:
    package = Path(mujoco.__file__).parent
    found = sorted(package.glob("libmujoco.so*")) + sorted(package.glob("libmujoco*.dylib"))
    if not found:
        raise FileNotFoundError(f"no libmujoco shared library in the mujoco package at {package}")
    return found[0]


@cache
def load_library() -> ctypes.CDLL | None:
    """The compiled tick (built on first use), or None when it cannot be built or is disabled."""
    if os.environ.get("ROBOT_STACK_NATIVE", "1") == "0":
        return None
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    try:
        library = _mujoco_library()
        if compiler is None:
            raise FileNotFoundError("no C compiler (cc/gcc) on PATH")
        source = _SOURCE.read_bytes()
        key = hashlib.sha256(
            source + mujoco.__version__.encode() + sysconfig.get_platform().encode() + sys.version.encode()
        ).hexdigest()[:16]
        target = _cache_dir() / f"cartesian_impedance_tick-{key}.so"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            include = Path(mujoco.__file__).parent / "include"
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                built = Path(tmp) / target.name
                subprocess.run(
                    [compiler, "-O2", "-shared", "-fPIC", "-std=c11", f"-I{include}", str(_SOURCE), "-o", str(built),
                     str(library), f"-Wl,-rpath,{library.parent}", "-lm"],
                    check=True, capture_output=True, text=True,
                )
                os.replace(built, target)  # atomic: concurrent builders never load a half-written file
        lib = ctypes.CDLL(str(target))
        lib.rs_run.restype = ctypes.c_int
        lib.rs_run.argtypes = [ctypes.POINTER(_State), ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        if lib.rs_struct_size() != ctypes.sizeof(_State):
            raise RuntimeError("C and Python layouts of the controller state differ")
        return lib
    except (OSError, subprocess.CalledProcessError, RuntimeError) as err:
        detail = err.stderr.strip() if isinstance(err, subprocess.CalledProcessError) else str(err)
        warnings.warn(f"compiled controller tick unavailable, simulating with the Python tick: {detail}",
                      RuntimeWarning, stacklevel=2)
        return None


def _ptr(array: np.ndarray) -> ctypes._Pointer:
    if array.dtype != np.float64 or not array.flags.c_contiguous:
        raise ValueError("controller buffers must be contiguous float64 arrays")
    return array.ctypes.data_as(_P)


def unsupported_reason(controller: object) -> str | None:
    """Why this controller cannot use the compiled tick at all (None: it can)."""
    if type(controller) is not CartesianImpedanceController:
        return f"{type(controller).__name__} has no compiled tick"
    if controller._integral_gain > 0.0:
        return "integral action"
    if controller._joint_limit_k > 0.0:
        return "joint-limit push"
    if controller.robot.firmware_compensates_gravity:
        return "firmware gravity (a real arm)"
    return None


class CompiledImpedanceStepper:
    """Steps an env's MuJoCo model with a ``CartesianImpedanceController`` ticked in C.

    Args:
        controller: the env's controller (its robot's model/data are the ones stepped).
        ctrl_start: index of the first arm actuator in ``data.ctrl``.
        python_tick: what the env does for a tick in Python (compute and write ctrl); used for the ticks
            the C code hands back.
        force_monitor: optional contact-force peak tracking after every physics step.
    """

    def __init__(self, controller: CartesianImpedanceController, ctrl_start: int,
                 python_tick: Callable[[], None], force_monitor: ForceMonitor | None = None) -> None:
        reason = unsupported_reason(controller)
        if reason is not None:
            raise ValueError(f"compiled tick not available: {reason}")
        lib = load_library()
        if lib is None:
            raise RuntimeError("compiled tick not available (see the warning)")
        self._lib, self._ctrl, self._python_tick = lib, controller, python_tick
        robot, pose, task = controller.robot, controller._pose, controller._task
        posture = controller._posture_spring
        s = self._state = _State()
        s.nv, s.n, s.dof_start = robot.model.nv, robot.n_joints, robot.dof_slice.start
        s.qpos_start, s.site_id, s.ctrl_start = robot.qpos_slice.start, robot.site_id, ctrl_start
        s.compensate_bias = int(controller._compensate_bias)
        s.posture_enabled = int(controller._posture is not None)
        s.dt, s.max_tau_step = controller.dt_s, controller._max_tau_step
        s.inertia_floor = task.inertia.floor
        s.posture_k, s.posture_d = posture.stiffness, posture.damping
        s.watchdog_deadline = controller._watchdog_deadline_s
        # Fixed buffers (the Python objects keep them for their lifetime); the posture offset and the
        # filter offset are views, so their base arrays are what C writes through.
        self._keep = {
            "target_pos": pose.target_pos, "target_quat": pose.target_quat, "ref_pos": pose.ref_pos,
            "ref_quat": pose.ref_quat, "offset": pose.filter.offset, "state": controller._state,
            "gain": controller._gain, "err_low": controller._error_low, "err_high": controller._error_high,
            "wrench": controller._wrench, "jac_full": task.jac_full, "jac_minv": task.jac_minv,
            "inertia_inv": task.inertia_inv, "factor": task.inertia._factor, "probe": task.inertia._probe,
            "solved": task.inertia._solved, "posture_offset": posture._offset,
            "posture_tau_full": posture.tau_full, "tau_low": controller._tau_low, "tau_high": controller._tau_high,
        }
        s.monitor_sensor_adr = -1
        self._python_monitor = None
        if force_monitor is not None:
            s.monitor_sensor_adr, s.monitor_alpha = force_monitor.sensor_adr, force_monitor.alpha
            self._keep["monitor_force"], self._keep["monitor_peak"] = force_monitor.force, force_monitor.peak
            self._python_monitor = force_monitor.python
        for name, array in self._keep.items():
            setattr(s, name, _ptr(array))
        self._pointer = ctypes.byref(s)
        # The controller swaps its two torque buffers every tick; their pointers are looked up by identity.
        self._tau_pointers = {id(a): _ptr(a) for a in (controller._tau_full, controller._tau_full_prev)}
        #: ticks run in Python so far (handed back by the C code, or while the gain filter moves).
        self.python_ticks = 0
        self._model_address = robot.model._address
        self._data_address = robot.data._address

    def usable_now(self) -> bool:
        """False while the gain filter moves (that tick is Python's)."""
        return self._ctrl._stiffness.filter.decay == 0.0

    def step(self, n_substeps: int) -> None:
        """n_substeps x (mj_step1 -> tick -> mj_step2), C ticks where possible, Python ticks otherwise."""
        s = self._state
        done = 0
        while done < n_substeps:
            if not self.usable_now():
                self._python_substep(done_step1=False)
                done += 1
                continue
            self._load(s)
            ran = self._lib.rs_run(self._pointer, self._model_address, self._data_address, n_substeps - done)
            self._store(s, ran)
            done += ran
            if done < n_substeps:  # the C code stopped after mj_step1 of a tick it leaves to Python
                self._python_substep(done_step1=True)
                done += 1

    def _python_substep(self, done_step1: bool) -> None:
        model, data = self._ctrl.robot.model, self._ctrl.robot.data
        self.python_ticks += 1
        if not done_step1:
            mujoco.mj_step1(model, data)
        self._python_tick()
        mujoco.mj_step2(model, data)
        if self._python_monitor is not None:
            self._python_monitor()

    # Scalars live in Python attributes; they are copied in before and out after each C call.
    def _load(self, s: _State) -> None:
        ctrl = self._ctrl
        pose_filter, inertia, status = ctrl._pose.filter, ctrl._task.inertia, ctrl.status
        pointers = self._tau_pointers
        s.tau_full, s.tau_full_prev = pointers[id(ctrl._tau_full)], pointers[id(ctrl._tau_full_prev)]
        s.pose_decay, s.pose_beta = pose_filter.decay, pose_filter.beta
        s.min_eigenvalue, s.ticks_to_refresh = inertia.min_eigenvalue, inertia._ticks_to_refresh
        s.last_target_s, s.ticks = ctrl._last_target_s, ctrl._ticks
        s.stamp_pending, s.watchdog_engaged = int(ctrl._stamp_pending), int(status.watchdog_engaged)
        s.nan_ticks, s.nan_hold = status.nan_ticks, int(status.nan_hold)

    def _store(self, s: _State, ran: int) -> None:
        if ran == 0:
            return
        ctrl = self._ctrl
        status, inertia = ctrl.status, ctrl._task.inertia
        ctrl._pose.filter.decay = s.pose_decay
        inertia.min_eigenvalue, inertia._ticks_to_refresh = s.min_eigenvalue, s.ticks_to_refresh
        inertia.guarded = False
        ctrl._last_target_s, ctrl._ticks, ctrl._stamp_pending = s.last_target_s, s.ticks, bool(s.stamp_pending)
        status.time_s = s.ticks * ctrl.dt_s
        status.nan_ticks, status.nan_hold = s.nan_ticks, bool(s.nan_hold)
        status.torque_rate_limited, status.torque_clamped = bool(s.rate_limited), bool(s.clamped)
        if ctrl._posture is not None:
            status.inertia_guarded = False
