"""PandaPegInsert: insert a held square peg into a tight hole (``robot/PandaPegInsert-v0``, task ``peg-insert``).

The peg (25 mm square, 70 mm long) is held rigidly between the fingers from the start, as in SERL's real
peg task; the board's hole is 27 mm wide (1 mm clearance per side) and 40 mm deep, at a random place on
the table. Spaces, timing and action semantics are the Panda base's (``envs.panda_base``) without a
gripper component: 3-D action ``[dx, dy, dz]`` (6-D with ``rotation``), 2 cm per unit by default. The
controller is compliant: its position error clip of 3 / 3 / 10 mm (x / y / z) with 2000 N/m bounds the
steady contact force to 6 / 6 / 20 N per world axis (``force_bound_n``).

State observation (float32, ``OBS_LAYOUT``), world frame:
    tcp_pos (3) [m] | tcp_quat (4) | tcp_linvel (3) [m/s] | tcp_angvel (3) [rad/s] | gripper_width (1) [m] |
    tcp_force (3) [N] | hole_pos (3) [m]
``tcp_force`` is the net contact force on the peg, low-pass filtered like a real arm's external-force
estimate (``force_filter_time_constant_s``); with ``image_obs`` the ``state`` keeps it (17 values), as a
real arm measures it.
``hole_pos`` is the centre of the hole's mouth.

Success (reward 1, ``terminated``): the peg's tip is ``insert_depth_m`` below the hole's mouth, inside the
hole, *and* no component of the (filtered) contact force on the peg has exceeded ``force_bound_n``
during the episode. The force is filtered and checked at every physics step: the controller bounds the
steady force by K * clip, so only impacts can break the bound (slamming the peg down at full speed gives
~50 N; 1 cm per step stays within it). ``info`` reports ``insert_depth_m``,
``peak_force_n`` (per-axis peak |F| so far), ``force_bound_n`` and ``force_ok``. A force violation does
not end the episode (only success terminates), but no success can follow it. With ``dense_reward``:
0.45 (1 - tanh(10 d)) + 0.45 clip(depth / insert_depth_m, 0, 1) - 1 (a cost), d the tip's distance to the mouth [m].

``PegInsertExpert`` aligns the tip 1 cm above the hole, then pushes in at 5 mm per step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceConfig
from envs.panda_base import (
    ASSETS,
    PROPRIO_BOUNDS,
    PROPRIO_DIM,
    PROPRIO_LAYOUT,
    PandaConfig,
    PandaEnv,
    ScriptedExpert,
    default_controller_config,
    quat_to_matrix,
)

OBS_LAYOUT: dict[str, slice] = {**PROPRIO_LAYOUT, "tcp_force": slice(14, 17), "hole_pos": slice(17, 20)}
OBS_DIM = 20
_OBS_BOUNDS = {**PROPRIO_BOUNDS, "tcp_force": (-1000.0, 1000.0), "hole_pos": (-2.0, 2.0)}

PEG_HALF_WIDTH_M = 0.0125
PEG_HALF_LENGTH_M = 0.035
PEG_CENTER_FROM_TCP_M = 0.02
"""The peg's centre sits this far beyond the tool centre point along the tool z axis [m]."""
PEG_TIP_FROM_TCP_M = PEG_CENTER_FROM_TCP_M + PEG_HALF_LENGTH_M
"""The peg's tip (its end face's centre) is this far beyond the tool centre point [m]."""
_TCP_IN_HAND_M = 0.1034  # the tcp site's offset along the hand's z axis (panda.xml)


def peg_controller_config() -> CartesianImpedanceConfig:
    """SERL's peg ``COMPLIANCE_PARAM`` clips (3 / 3 / 10 mm) over the base tasks' gains and 20 ms filter."""
    return dataclasses.replace(default_controller_config(), position_error_clip_m=(0.003, 0.003, 0.01))


@dataclass
class PandaPegInsertConfig(PandaConfig):
    """Settings of ``PandaPegInsertEnv``: the Panda base's plus the board's and the success test's."""

    action_scale_m: float = 0.02
    """Tool displacement for an action of 1 [m]; SERL's peg task uses 0.02."""
    controller: CartesianImpedanceConfig = field(default_factory=peg_controller_config)
    """Impedance gains and limits; the clips set the force bound (see ``peg_controller_config``)."""
    board_center_xy_m: tuple[float, float] = (0.5, 0.0)
    """Centre of the region where the hole appears [m], world frame (under the tool at home)."""
    board_xy_half_range_m: tuple[float, float] = (0.05, 0.05)
    """Half size of that region [m]; the hole's x, y are uniform in centre +- this."""
    insert_depth_m: float = 0.02
    """Success needs the peg's tip this far below the hole's mouth [m]; the hole is 0.04 deep."""
    force_tolerance_n: float = 5.0
    """Contact force allowed above the controller's steady bound K * clip per axis [N] (impacts)."""
    force_filter_time_constant_s: float = 0.02
    """First-order low-pass on the measured contact force [s], as a real arm's external-force estimate
    is filtered; 0 checks the raw force of every physics step (MuJoCo's impact spikes included)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.insert_depth_m < 0.04:
            raise ValueError(f"insert_depth_m must be in (0, 0.04) (the hole's depth), got {self.insert_depth_m!r}")
        for name in ("force_tolerance_n", "force_filter_time_constant_s"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")


class PandaPegInsertEnv(PandaEnv):
    """Insert a held peg into a tight hole within the controller's force bound; see the module docstring."""

    scene_file = "peg_insert.xml"
    obs_layout = OBS_LAYOUT
    obs_bounds = _OBS_BOUNDS
    proprio_dim = PROPRIO_DIM + 3  # the contact force is measured on a real arm too
    position_fields = ("tcp_pos", "hole_pos")
    tool_vector_fields = ("tcp_linvel", "tcp_angvel", "tcp_force")
    object_geoms = ("peg", "board_px", "board_nx", "board_py", "board_ny")
    has_gripper_action = False
    _fixed_gripper_width_m = 2 * PEG_HALF_WIDTH_M

    def __init__(self, config: PandaPegInsertConfig | None = None, render_mode: str | None = None) -> None:
        self.config: PandaPegInsertConfig
        super().__init__(config if config is not None else PandaPegInsertConfig(), render_mode)

    def _load_model(self) -> mujoco.MjModel:
        """The scene plus the peg, a body of the hand, and a sensor of the net contact force on it."""
        spec = mujoco.MjSpec.from_file(str(ASSETS / self.scene_file))
        peg = spec.body("hand").add_body(name="peg", pos=[0.0, 0.0, _TCP_IN_HAND_M + PEG_CENTER_FROM_TCP_M])
        peg.add_geom(
            name="peg",
            type=mujoco.mjtGeom.mjGEOM_BOX,
            size=[PEG_HALF_WIDTH_M, PEG_HALF_WIDTH_M, PEG_HALF_LENGTH_M],
            mass=0.05,
            friction=[0.5, 0.005, 0.0001],
            rgba=[0.9, 0.6, 0.15, 1.0],
        )
        for finger in ("left_finger", "right_finger"):  # the fingers hold it; their contacts would fight
            spec.add_exclude(bodyname1="peg", bodyname2=finger)
        spec.add_sensor(
            name="peg_contact_force",
            type=mujoco.mjtSensor.mjSENS_CONTACT,
            objtype=mujoco.mjtObj.mjOBJ_BODY,
            objname="peg",
            intprm=[2, 3, 1],  # data = force (bit 1), reduce = netforce (3), one slot: world-frame net force
        )
        return spec.compile()

    def _init_task(self) -> None:
        m, d = self.model, self.data
        self._board_pos = d.mocap_pos[m.body("board").mocapid[0]]
        self._hole_top_z_m = float(m.site("hole_top").pos[2])
        self._hole_half_width_m = float(m.geom("board_py").size[0])
        self._peg_body = m.body("peg").id
        adr = int(m.sensor_adr[m.sensor("peg_contact_force").id])
        # The sensor reports the force the peg exerts on what it touches; the force on the peg is minus it.
        self._force_by_peg = d.sensordata[adr : adr + 3]
        cfg = self.config
        clip = np.array(cfg.controller.position_error_clip_m, dtype=float)
        self.force_bound_n = cfg.controller.translational_stiffness_n_per_m * clip + cfg.force_tolerance_n
        """Per-axis bound on the contact force [N]: K * clip + tolerance (world x, y, z)."""
        tau = cfg.force_filter_time_constant_s
        self._force_alpha = 1.0 - math.exp(-cfg.physics_dt_s / tau) if tau > 0.0 else 1.0
        self._force = np.zeros(3)  # filtered force on the peg [N], world frame
        self._peak_force = np.zeros(3)
        self._abs_force = np.zeros(3)
        self._substep_monitor = self._track_force
        self._force_sensor_adr = adr

    def _compiled_force_monitor(self):
        from controllers.native_tick import ForceMonitor

        return ForceMonitor(self._force_sensor_adr, self._force_alpha, self._force, self._peak_force, self._track_force)

    def _track_force(self) -> None:
        """Filter the contact force on the peg and keep its per-axis peak (after every physics step)."""
        force, alpha = self._force, self._force_alpha
        mujoco.mju_scl(force, force, 1.0 - alpha)
        mujoco.mju_addToScl(force, self._force_by_peg, -alpha)
        np.abs(force, out=self._abs_force)
        np.maximum(self._peak_force, self._abs_force, out=self._peak_force)

    def _reset_task(self, rng: np.random.Generator) -> None:
        cfg = self.config
        xy = np.asarray(cfg.board_center_xy_m) + rng.uniform(-1.0, 1.0, 2) * np.asarray(cfg.board_xy_half_range_m)
        self._board_pos[:] = (xy[0], xy[1], 0.0)
        self._force[:] = 0.0
        self._peak_force[:] = 0.0

    def _observe_task(self, obs: np.ndarray) -> None:
        obs[14:17] = self._force
        obs[17:19] = self._board_pos[:2]
        obs[19] = self._hole_top_z_m

    def peg_tip_pos(self) -> np.ndarray:
        """World position of the centre of the peg's end face [m] (kinematics must be current)."""
        d = self.data
        return d.xpos[self._peg_body] + d.xmat[self._peg_body].reshape(3, 3)[:, 2] * PEG_HALF_LENGTH_M

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        cfg = self.config
        tip = self.peg_tip_pos()
        mouth = np.array([self._board_pos[0], self._board_pos[1], self._hole_top_z_m])
        depth_m = float(mouth[2] - tip[2])
        # Plain float comparisons: np.all's wrapper costs more than these five numbers (once per env step).
        half_width = self._hole_half_width_m
        in_hole = bool(abs(tip[0] - mouth[0]) <= half_width and abs(tip[1] - mouth[1]) <= half_width)
        peaks, bounds = self._peak_force.tolist(), self.force_bound_n.tolist()
        force_ok = all(peak <= bound for peak, bound in zip(peaks, bounds, strict=True))
        success = in_hole and depth_m >= cfg.insert_depth_m and force_ok
        if success:
            reward = 1.0
        elif cfg.dense_reward:
            # Above the mouth: distance to it; inside: only the lateral offset (depth is counted below).
            to_mouth = tip - mouth if depth_m <= 0.0 else tip[:2] - mouth[:2]
            distance_m = float(np.linalg.norm(to_mouth))
            depth = min(max(depth_m / cfg.insert_depth_m, 0.0), 1.0) if in_hole else 0.0
            reward = 0.45 * (1.0 - math.tanh(10.0 * distance_m)) + 0.45 * depth
        else:
            reward = 0.0
        info = {
            "insert_depth_m": depth_m,
            "peak_force_n": self._peak_force.copy(),
            "force_bound_n": self.force_bound_n.copy(),
            "force_ok": force_ok,
        }
        return reward, success, info

    def _reset_info(self) -> dict[str, Any]:
        return {"peak_force_n": self._peak_force.copy(), "force_bound_n": self.force_bound_n.copy(), "force_ok": True}


class PegInsertExpert(ScriptedExpert):
    """Scripted insertion: tip 1 cm above the mouth, aligned to 0.4 mm, then down at 5 mm per step (see
    ``ScriptedExpert``)."""

    config_cls = PandaPegInsertConfig
    has_gripper = False
    approach_height_m = 0.01
    """Height of the tip above the mouth while aligning [m]."""
    insert_step_m = 0.005
    """Descent per step while inserting [m]; slow enough that touching a wall stays within the bound."""
    target_depth_m = 0.03
    """Depth the expert pushes to [m] (success needs 0.02; the hole is 0.04 deep)."""

    def reset(self) -> None:
        """Start a new episode."""
        self._inserting = False

    def __call__(self, obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> np.ndarray:
        state = self._state(obs, info)
        tcp = state[OBS_LAYOUT["tcp_pos"]]
        tcp_quat = state[OBS_LAYOUT["tcp_quat"]]
        tip = tcp + quat_to_matrix(tcp_quat)[:, 2] * PEG_TIP_FROM_TCP_M
        mouth = state[OBS_LAYOUT["hole_pos"]]
        xy_error = float(np.linalg.norm(mouth[:2] - tip[:2]))
        if not self._inserting and xy_error < 0.0004 and abs(tip[2] - mouth[2] - self.approach_height_m) < 0.003:
            self._inserting = True
        if self._inserting and xy_error > 0.003 and tip[2] > mouth[2]:
            self._inserting = False  # pushed off the mouth: align again
        goal_tip = mouth.copy()
        if self._inserting:
            goal_tip[2] = max(tip[2] - self.insert_step_m, mouth[2] - self.target_depth_m)
        else:
            # Stay above the board until over the hole, then come down to the approach height.
            goal_tip[2] += self.approach_height_m + min(0.05, 4.0 * max(xy_error - 0.002, 0.0))
        return self._action(goal_tip - tip, tcp_quat)
