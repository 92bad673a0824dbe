"""PandaReach: bring the tool centre point to a target (``robot/PandaReach-v0``, task ``reach``).

Spaces, timing and action semantics are the Panda base's (``envs.panda_base``), without a gripper
component: 3-D action ``[dx, dy, dz]`` (6-D with ``rotation``); the gripper stays open. 20-value state
observation (``OBS_LAYOUT``):
    tcp_pos (3) [m] | tcp_quat (4) | tcp_linvel (3) [m/s] | tcp_angvel (3) [rad/s] |
    gripper_width (1) [m] | target_pos (3) [m] | target_from_tcp (3) [m]

Reward: 1 and ``terminated`` when the tool centre point is within ``success_distance_m`` of the target; 0
otherwise, or with ``dense_reward`` 0.9 (1 - tanh(10 d)) - 1 for the distance d [m]
(a cost, see ``PandaConfig.dense_reward``). Time-outs (50 steps) are truncations.
``ReachExpert`` moves straight to the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.panda_base import PROPRIO_BOUNDS, PROPRIO_LAYOUT, PandaConfig, PandaEnv, ScriptedExpert

OBS_LAYOUT: dict[str, slice] = {**PROPRIO_LAYOUT, "target_pos": slice(14, 17), "target_from_tcp": slice(17, 20)}
OBS_DIM = 20
_OBS_BOUNDS = {**PROPRIO_BOUNDS, "target_pos": (-2.0, 2.0), "target_from_tcp": (-4.0, 4.0)}


@dataclass
class PandaReachConfig(PandaConfig):
    """Settings of ``PandaReachEnv``: the Panda base's plus the target's."""

    target_center_m: tuple[float, float, float] = (0.5, 0.0, 0.2)
    """Centre of the box where the target appears [m], world frame."""
    target_half_range_m: tuple[float, float, float] = (0.15, 0.2, 0.15)
    """Half size of that box [m]; the target is uniform in centre +- this."""
    success_distance_m: float = 0.02
    """Success when the tool centre point is this close to the target [m]."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.success_distance_m > 0.0:
            raise ValueError(f"success_distance_m must be > 0, got {self.success_distance_m!r}")


class PandaReachEnv(PandaEnv):
    """Reach a random target with the tool; see the module docstring for spaces and reward."""

    scene_file = "reach.xml"
    obs_layout = OBS_LAYOUT
    obs_bounds = _OBS_BOUNDS
    position_fields = ("tcp_pos", "target_pos")
    reset_frame_vector_fields = ("target_from_tcp",)
    object_geoms = ("target",)
    has_gripper_action = False

    def __init__(self, config: PandaReachConfig | None = None, render_mode: str | None = None) -> None:
        self.config: PandaReachConfig
        super().__init__(config if config is not None else PandaReachConfig(), render_mode)

    def _init_task(self) -> None:
        self._target_pos = self.data.mocap_pos[self.model.body("target").mocapid[0]]

    def _reset_task(self, rng: np.random.Generator) -> None:
        cfg = self.config
        self._target_pos[:] = np.asarray(cfg.target_center_m) + rng.uniform(-1.0, 1.0, 3) * np.asarray(
            cfg.target_half_range_m
        )

    def _observe_task(self, obs: np.ndarray) -> None:
        obs[14:17] = self._target_pos
        np.subtract(self._target_pos, obs[0:3], out=obs[17:20])  # the offset to close, given directly

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        offset = self.robot.site_pos_world - self._target_pos
        distance_m = math.sqrt(np.dot(offset, offset))  # np.linalg.norm's checks cost more than the sum
        success = distance_m <= self.config.success_distance_m
        if success:
            reward = 1.0
        elif self.config.dense_reward:
            reward = 0.9 * (1.0 - math.tanh(10.0 * distance_m))
        else:
            reward = 0.0
        return reward, success, {"distance_m": distance_m}


class ReachExpert(ScriptedExpert):
    """Scripted reach policy: straight to the target (see ``ScriptedExpert``)."""

    config_cls = PandaReachConfig
    has_gripper = False

    def __call__(self, obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None = None) -> np.ndarray:
        state = self._state(obs, info)
        tcp = state[OBS_LAYOUT["tcp_pos"]]
        return self._action(state[OBS_LAYOUT["target_pos"]] - tcp, state[OBS_LAYOUT["tcp_quat"]])
