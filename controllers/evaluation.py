"""Measures of a control law's response, for tests and benchmarks (not for the control tick).

- ``step_response``: overshoot, rise and 2 % settling time, final error of a position step.
- ``tracking_errors``: RMS and max position [mm] and orientation [deg] errors along a trajectory.
- ``circle``: a circular tool path through a start point, and ``inverse_kinematics`` to turn a tool path into
  joint targets (damped least squares on a scratch ``MjData``), so a joint-space law can follow it too.

Quaternions are (w, x, y, z).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import mujoco
import numpy as np


@dataclass(frozen=True)
class StepResponse:
    """Response of the tool position to a step of its target."""

    step_m: float
    """Size of the step [m]."""
    overshoot_frac: float
    """Largest excursion past the goal along the step direction, as a fraction of the step [-] (>= 0)."""
    rise_time_s: float
    """Time from 10 % to 90 % of the step along its direction [s] (inf if never reached)."""
    settling_time_s: float
    """Time after which the distance to the goal stays within ``band`` x step [s] (inf if never)."""
    final_error_m: float
    """Distance to the goal at the end [m]."""

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def step_response(
    times_s: np.ndarray, pos: np.ndarray, start: Sequence[float], goal: Sequence[float], band: float = 0.02
) -> StepResponse:
    """Step metrics of positions ``pos`` (N, 3) sampled at ``times_s`` (N,), step commanded at times_s[0]."""
    start_v, goal_v = np.asarray(start, dtype=float), np.asarray(goal, dtype=float)
    step = goal_v - start_v
    size = float(np.linalg.norm(step))
    if size == 0.0:
        raise ValueError("step_response needs goal != start")
    progress = (pos - start_v) @ step / size**2  # (N,) 0 at start, 1 at the goal
    distance = np.linalg.norm(pos - goal_v, axis=1)
    t = times_s - times_s[0]

    def first_time(mask: np.ndarray) -> float:
        idx = np.flatnonzero(mask)
        return float(t[idx[0]]) if idx.size else math.inf

    outside = np.flatnonzero(distance > band * size)
    if outside.size == 0:
        settling = 0.0
    elif outside[-1] == len(t) - 1:
        settling = math.inf
    else:
        settling = float(t[outside[-1] + 1])
    return StepResponse(
        step_m=size,
        overshoot_frac=max(0.0, float(progress.max()) - 1.0),
        rise_time_s=first_time(progress >= 0.9) - first_time(progress >= 0.1),
        settling_time_s=settling,
        final_error_m=float(distance[-1]),
    )


@dataclass(frozen=True)
class TrackingErrors:
    """Tool pose errors along a trajectory."""

    rms_pos_mm: float
    max_pos_mm: float
    rms_rot_deg: float
    max_rot_deg: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def tracking_errors(pos: np.ndarray, quat: np.ndarray, pos_ref: np.ndarray, quat_ref: np.ndarray) -> TrackingErrors:
    """Errors of poses (N, 3) + (N, 4) against references of the same shapes."""
    pos_err_mm = np.linalg.norm(pos - pos_ref, axis=1) * 1e3
    rot_err = np.zeros(len(quat))
    vec = np.zeros(3)
    for i in range(len(quat)):
        mujoco.mju_subQuat(vec, quat[i], quat_ref[i])
        rot_err[i] = np.linalg.norm(vec)
    rot_err_deg = np.degrees(rot_err)
    return TrackingErrors(
        rms_pos_mm=float(np.sqrt(np.mean(pos_err_mm**2))),
        max_pos_mm=float(pos_err_mm.max()),
        rms_rot_deg=float(np.sqrt(np.mean(rot_err_deg**2))),
        max_rot_deg=float(rot_err_deg.max()),
    )


def circle(
    times_s: np.ndarray,
    start: Sequence[float],
    radius_m: float,
    period_s: float,
    axis_u: Sequence[float] = (1.0, 0.0, 0.0),
    axis_v: Sequence[float] = (0.0, 1.0, 0.0),
) -> np.ndarray:
    """Positions (N, 3) on a circle through ``start`` in the plane of unit vectors u, v.

    p(t) = c + r (u cos wt + v sin wt) with c = start - r u, so p(0) = start; speed r w [m/s].
    """
    u, v = np.asarray(axis_u, dtype=float), np.asarray(axis_v, dtype=float)
    phase = 2.0 * math.pi * np.asarray(times_s)[:, None] / period_s
    center = np.asarray(start, dtype=float) - radius_m * u
    return center + radius_m * (np.cos(phase) * u + np.sin(phase) * v)


def inverse_kinematics(
    model: mujoco.MjModel,
    site_name: str,
    joint_names: Sequence[str],
    pos_world: np.ndarray,
    quat_world: np.ndarray,
    q_start: np.ndarray,
    iterations: int = 5,
    damping: float = 1e-3,
) -> np.ndarray:
    """Joint positions (N, n) that put the site at poses (N, 3) + (N, 4), each solve warm-started from the last.

    Damped least squares, dq = J^T (J J^T + damping^2 I)^-1 e, on a private ``MjData`` (the caller's state is
    untouched). Continuous paths give continuous joint paths.
    """
    data = mujoco.MjData(model)
    site = model.site(site_name).id
    qpos_adr = np.array([model.joint(name).qposadr[0] for name in joint_names])
    dof_adr = np.array([model.joint(name).dofadr[0] for name in joint_names])
    jac = np.zeros((6, model.nv))
    error = np.zeros(6)
    quat, vec = np.zeros(4), np.zeros(3)
    q = np.array(q_start, dtype=float)
    out = np.zeros((len(pos_world), len(joint_names)))
    for i in range(len(pos_world)):
        for _ in range(iterations):
            data.qpos[qpos_adr] = q
            mujoco.mj_kinematics(model, data)
            mujoco.mj_comPos(model, data)
            mujoco.mj_jacSite(model, data, jac[:3], jac[3:], site)
            error[:3] = pos_world[i] - data.site_xpos[site]
            mujoco.mju_mat2Quat(quat, data.site_xmat[site])
            mujoco.mju_subQuat(vec, quat_world[i], quat)  # target = current * exp(vec), site frame
            mujoco.mju_rotVecQuat(error[3:], vec, quat)
            j = jac[:, dof_adr]
            q += j.T @ np.linalg.solve(j @ j.T + damping**2 * np.eye(6), error)
        out[i] = q
    return out
