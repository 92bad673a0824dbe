"""The Panda task base: scene, controller stepping, tool-frame actions, gripper, observations, cameras.

Every Panda task (reach, pick-cube, peg-insert, stack-cubes) is a ``PandaEnv`` subclass that adds its
objects, reward and success; they share the conventions of the real arm:

Timing: the policy acts at ``policy_hz`` (10 Hz); MuJoCo integrates at ``1 / physics_dt_s`` (500 Hz) and the
Cartesian impedance controller (the class that drives the real arm) computes joint torques at every
physics step: n x (mj_step1 -> controller -> mj_step2) per env step.

Action (float32, in [-1, 1]): ``[dx, dy, dz, (rx, ry, rz), (gripper)]``
- dx, dy, dz: tool displacement in the tool (end-effector) frame, times ``action_scale_m`` [m], added to
  the measured tool position; the new target is clipped to the workspace box (world frame).
- rx, ry, rz (``rotation=True`` only): rotation vector in the tool frame, times ``action_scale_rad`` [rad],
  applied to the measured tool orientation. Without ``rotation`` the tool holds its reset orientation.
- gripper (tasks with ``has_gripper_action`` only): a >= 0.5 closes, a <= -0.5 opens, anything between
  keeps the previous command (SERL's binary gripper: noise never toggles it); each effective toggle costs
  ``gripper_toggle_penalty`` reward. Tasks without it hold the gripper at a fixed opening.

State observation (float32, world frame, quaternions (w, x, y, z) with w >= 0): the 14-value proprio
part ``tcp_pos (3) [m] | tcp_quat (4) | tcp_linvel (3) [m/s] | tcp_angvel (3) [rad/s] | gripper_width (1)
[m]``, then the task's values; each task's ``OBS_LAYOUT`` maps names to slices.

``relative_frame=True`` (SERL's relative frame): positions and orientations (tool and objects) are
expressed in the tool frame of the episode's reset pose, and velocities (and forces) in the current tool
frame; actions are tool-frame deltas in both cases.

``image_obs=True``: a ``Dict`` observation ``{"state": proprio (float32), <camera>: (H, W, 3) uint8, ...}``
for each camera in ``cameras`` (default front and wrist, 128 x 128), as on the real arm, which sees no
object poses. Images are rendered only in this mode (see ``envs.rendering`` for headless OpenGL).

With ``image_obs`` or ``relative_frame``, ``info["state"]`` holds the full world-frame state vector (the
default observation) for scripted experts (``expert(obs, info)``) and asymmetric critics.

Randomisation (``randomize``, all off by default): object colours, friction, lighting, camera poses;
object poses are randomised by each task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

import gymnasium as gym
import mujoco
import numpy as np

from controllers.cartesian_impedance import CartesianImpedanceConfig, CartesianImpedanceController
from controllers.robot_model import RobotModel
from envs.rendering import CameraRenderer

ASSETS = Path(__file__).parent / "assets"
ARM_JOINTS = tuple(f"joint{i}" for i in range(1, 8))
ARM_ACTUATORS = tuple(f"motor{i}" for i in range(1, 8))
TCP_SITE = "tcp"
CAMERAS = ("front", "wrist")
GRIPPER_OPEN_WIDTH_M = 0.08

PROPRIO_LAYOUT: dict[str, slice] = {
    "tcp_pos": slice(0, 3),
    "tcp_quat": slice(3, 7),
    "tcp_linvel": slice(7, 10),
    "tcp_angvel": slice(10, 13),
    "gripper_width": slice(13, 14),
}
PROPRIO_DIM = 14

# Loose physical bounds of the observation fields (reach of the arm, unit quaternions, speeds far above
# the controller's), for space checks; not meant for normalisation. Tasks add theirs.
PROPRIO_BOUNDS = {
    "tcp_pos": (-2.0, 2.0),
    "tcp_quat": (-1.0, 1.0),
    "tcp_linvel": (-10.0, 10.0),
    "tcp_angvel": (-50.0, 50.0),
    "gripper_width": (-0.01, 0.1),
}


def layout_bounds(layout: Mapping[str, slice], bounds: Mapping[str, tuple[float, float]]) -> tuple[np.ndarray, ...]:
    """Low and high float32 vectors of an observation layout; every field needs bounds."""
    dim = max(s.stop for s in layout.values())
    low, high = np.zeros(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32)
    for name, part in layout.items():
        low[part], high[part] = bounds[name]
    return low, high


def quat_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = quat_wxyz
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def state_vector(
    obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None, world_state_in_info: bool = False
) -> np.ndarray:
    """The flat world-frame state a scripted expert acts on: ``info["state"]`` when the env provides it
    (image observations, relative frame), else ``obs``.

    ``world_state_in_info``: the env's observations are not world-frame state vectors (relative frame),
    so ``info`` is required.
    """
    if info is not None and "state" in info:
        return np.asarray(info["state"], dtype=np.float64)
    if isinstance(obs, Mapping) or world_state_in_info:
        raise ValueError(
            "with image observations or relative_frame the expert needs the world-frame state: call "
            "expert(obs, info); the env puts it in info['state']"
        )
    return np.asarray(obs, dtype=np.float64)


# ---------------------------------------------------------------------------------------------
# Task semantics shared by the sim env and the real one (``envs.real``): spaces, action -> target,
# gripper, reward terms, relative frame. One definition, so a policy sees the same task on both.
# ---------------------------------------------------------------------------------------------
def task_spaces(env_cls: type, config: PandaConfig) -> tuple[gym.spaces.Box, gym.spaces.Box, gym.spaces.Space]:
    """(action, state, observation) spaces of a Panda task class (``PandaEnv`` subclass) under ``config``."""
    n_act = 3 + (3 if config.rotation else 0) + (1 if env_cls.has_gripper_action else 0)
    action_space = gym.spaces.Box(-1.0, 1.0, shape=(n_act,), dtype=np.float32)
    low, high = layout_bounds(env_cls.obs_layout, env_cls.obs_bounds)
    state_space = gym.spaces.Box(low, high, dtype=np.float32)
    if not config.image_obs:
        return action_space, state_space, state_space
    height, width = config.image_size
    proprio = env_cls.proprio_dim
    spaces: dict[str, gym.spaces.Space] = {"state": gym.spaces.Box(low[:proprio], high[:proprio], dtype=np.float32)}
    for camera in config.cameras:
        spaces[camera] = gym.spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
    return action_space, state_space, gym.spaces.Dict(spaces)


def action_target(action: np.ndarray, tcp_pos: np.ndarray, tcp_rot: np.ndarray, tcp_quat: np.ndarray,
                  hold_quat: np.ndarray, config: PandaConfig, target_quat: np.ndarray) -> np.ndarray:
    """World tool target of a clipped action from the measured tool pose: position (clipped to the
    workspace box) returned, orientation written into ``target_quat`` (rotated, or ``hold_quat``)."""
    target_pos = tcp_pos + tcp_rot @ (action[:3] * config.action_scale_m)
    low, high = config.workspace_low_m, config.workspace_high_m
    for i in range(3):  # three floats: cheaper than np.clip's array conversions, once per env step
        target_pos[i] = min(max(target_pos[i], low[i]), high[i])
    if config.rotation:
        target_quat[:] = tcp_quat
        mujoco.mju_quatIntegrate(target_quat, action[3:6] * config.action_scale_rad, 1.0)
    else:
        target_quat[:] = hold_quat
    return target_pos


def gripper_command(command: float, closed: bool) -> bool:
    """SERL's binary gripper: >= 0.5 closes, <= -0.5 opens, anything between keeps ``closed``."""
    if command >= 0.5:
        return True
    if command <= -0.5:
        return False
    return closed


def step_reward(reward: float, success: bool, toggled: bool, config: PandaConfig) -> float:
    """The task's reward plus the shared terms: the dense shaping cost and the gripper toggle penalty."""
    if config.dense_reward and not success:
        # Shaping becomes a cost in [-1, 0): with time-outs bootstrapped (not terminal), a positive
        # per-step bonus would be worth more than ending the episode by succeeding (up to
        # 0.9 / (1 - gamma) against 1), so the optimal policy would hover next to success.
        reward -= 1.0
    if toggled:
        reward -= config.gripper_toggle_penalty
    return reward


class RelativeFrame:
    """SERL's relative frame for a task class: poses in the reset tool frame, vectors in the current one."""

    def __init__(self, env_cls: type) -> None:
        self._layout = env_cls.obs_layout
        self._positions = env_cls.position_fields
        self._quats = env_cls.quat_fields
        self._reset_vectors = env_cls.reset_frame_vector_fields
        self._tool_vectors = env_cls.tool_vector_fields
        self._reset_pos = np.zeros(3)
        self._reset_rot = np.eye(3)
        self._reset_quat_inv = np.array([1.0, 0.0, 0.0, 0.0])
        self._quat = np.zeros(4)

    def set_reset_pose(self, tcp_pos: np.ndarray, tcp_quat: np.ndarray) -> None:
        self._reset_pos[:] = tcp_pos
        self._reset_rot[:] = quat_to_matrix(tcp_quat)
        mujoco.mju_negQuat(self._reset_quat_inv, np.asarray(tcp_quat, dtype=np.float64))

    def apply(self, state: np.ndarray, tcp_rot: np.ndarray) -> None:
        """Re-express the world-frame ``state`` in place; ``tcp_rot`` is the current tool orientation."""
        layout, rot0_t, quat = self._layout, self._reset_rot.T, self._quat
        for name in self._positions:
            state[layout[name]] = rot0_t @ (state[layout[name]] - self._reset_pos)
        for name in self._quats:
            mujoco.mju_mulQuat(quat, self._reset_quat_inv, state[layout[name]].astype(np.float64))
            state[layout[name]] = quat if quat[0] >= 0.0 else -quat
        for name in self._reset_vectors:
            state[layout[name]] = rot0_t @ state[layout[name]]
        rot_t = tcp_rot.T
        for name in self._tool_vectors:
            state[layout[name]] = rot_t @ state[layout[name]]


@dataclass
class RandomizationConfig:
    """Per-episode visual and physical randomisation, drawn at reset after the task's object poses.

    Every option is off at its default, and an option that is off draws no random numbers.
    """

    object_color_jitter: float = 0.0
    """Max change of each RGB channel of the task's objects [0-1]; 0 disables; usual 0.05-0.3."""
    friction_scale: tuple[float, float] = (1.0, 1.0)
    """Range of a factor on the sliding friction of the objects and the table [-]; (1, 1) disables;
    usual (0.5, 1.5)."""
    light_pos_jitter_m: float = 0.0
    """Max offset of the light position per axis [m]; 0 disables; usual 0.1-0.5."""
    light_intensity_scale: tuple[float, float] = (1.0, 1.0)
    """Range of a factor on the diffuse intensity of the light and the headlight [-]; (1, 1) disables;
    usual (0.6, 1.4)."""
    camera_pos_jitter_m: float = 0.0
    """Max offset of each camera's position per axis [m], in its parent body's frame; 0 disables; usual
    0.005-0.03."""
    camera_rot_jitter_rad: float = 0.0
    """Max angle of a random rotation of each camera about a random axis [rad]; 0 disables; usual
    0.01-0.05."""

    def __post_init__(self) -> None:
        for name in ("object_color_jitter", "light_pos_jitter_m", "camera_pos_jitter_m", "camera_rot_jitter_rad"):
            value = getattr(self, name)
            if not (value >= 0.0 and math.isfinite(value)):
                raise ValueError(f"RandomizationConfig.{name} must be finite and >= 0, got {value!r}")
        for name in ("friction_scale", "light_intensity_scale"):
            value = tuple(getattr(self, name))
            if len(value) != 2 or not 0.0 < value[0] <= value[1]:
                raise ValueError(f"RandomizationConfig.{name} must be (low, high) with 0 < low <= high, got {value!r}")

    @property
    def any(self) -> bool:
        """Whether some option is on."""
        return (
            self.object_color_jitter > 0.0
            or tuple(self.friction_scale) != (1.0, 1.0)
            or self.light_pos_jitter_m > 0.0
            or tuple(self.light_intensity_scale) != (1.0, 1.0)
            or self.camera_pos_jitter_m > 0.0
            or self.camera_rot_jitter_rad > 0.0
        )


def default_controller_config() -> CartesianImpedanceConfig:
    """The impedance gains of the free-space tasks (SERL's real-arm values except two, explained here).

    - target filter 0.02 s instead of SERL's 0.2 s: after one 0.1 s policy step 99 % of a new target has
      reached the reference (SERL: 39 %), so the observation carries nearly all the controller's state
      and the task stays Markov for the learner, while the 20 ms ramp still smooths each 10 Hz step;
    - position error clip 2 cm instead of 1 cm: bounds the steady spring force at 40 N and lets the tool
      move at up to ~0.45 m/s in free space (K clip / D), so one action of ``action_scale_m`` = 4 cm is
      tracked within a policy step.
    """
    return CartesianImpedanceConfig(
        translational_stiffness_n_per_m=2000.0,
        rotational_stiffness_nm_per_rad=150.0,
        damping_ratio=1.0,
        position_error_clip_m=(0.02, 0.02, 0.02),
        orientation_error_clip_rad=(0.05, 0.05, 0.05),
        nullspace_stiffness_nm_per_rad=10.0,
        compensate_bias=True,
        torque_rate_limit_nm_per_s=1000.0,
        target_filter_time_constant_s=0.02,
    )


@dataclass
class PandaConfig:
    """Timing, action, observation and randomisation settings shared by the Panda tasks."""

    policy_hz: float = 10.0
    """Policy (env step) rate [Hz]; 1 / (policy_hz * physics_dt_s) must be an integer (substeps)."""
    physics_dt_s: float = 0.002
    """Physics and controller period [s]; 0.001-0.002 (500 Hz default, 1 kHz like the real arm)."""
    action_scale_m: float = 0.04
    """Tool displacement for an action of 1 [m]; 0.01-0.05."""
    action_scale_rad: float = 0.2
    """Tool rotation for an action of 1 [rad] (only with ``rotation``); 0.05-0.3."""
    rotation: bool = False
    """Add a tool-frame rotation delta to the action; False holds the reset orientation."""
    gripper_toggle_penalty: float = 0.0
    """Reward subtracted per effective gripper toggle [-]; SERL uses 0.1; 0 disables."""
    workspace_low_m: tuple[float, float, float] = (0.25, -0.35, 0.005)
    """Lower corner of the box that clips the tool target [m], world frame (table top is z = 0)."""
    workspace_high_m: tuple[float, float, float] = (0.75, 0.35, 0.45)
    """Upper corner of the box that clips the tool target [m], world frame."""
    home_qpos_rad: tuple[float, ...] = (0.0, -0.110, 0.0, -2.273, 0.0, 2.163, math.pi / 4)
    """Arm joints at reset [rad]: tool 0.3 m above (0.5, 0) on the table, fingers pointing down."""
    dense_reward: bool = False
    """Per-step shaping cost (the task's progress term in [0, 1), minus 1) before success; success gives 1."""
    controller: CartesianImpedanceConfig = field(default_factory=default_controller_config)
    """Impedance gains and limits; see ``default_controller_config`` for the choices."""
    compiled_controller: bool = True
    """Tick the controller in C between physics steps (``controllers.native_tick``: the same law on the same
    state, ~10x cheaper per tick); False, or no C compiler, ticks it in Python."""
    relative_frame: bool = False
    """SERL's relative frame: poses relative to the reset tool pose, velocities in the tool frame."""
    image_obs: bool = False
    """Dict observation {"state": proprio, <camera>: RGB uint8} instead of the flat state vector."""
    cameras: tuple[str, ...] = CAMERAS
    """Cameras of the image observation: "front" (fixed, facing the robot) and/or "wrist" (on the hand)."""
    image_size: tuple[int, int] = (128, 128)
    """Height and width of the observation images [pixels]; at most 480 x 640."""
    image_shadows: bool = True
    """Shadows in the observation images (a depth cue); False renders ~4x faster with software OpenGL."""
    randomize: RandomizationConfig = field(default_factory=RandomizationConfig)
    """Visual and physical randomisation; all off by default."""
    render_camera: str = "front"
    """Camera used by ``render()``: "front" or "wrist"."""
    render_size: tuple[int, int] = (240, 320)
    """Height and width of ``render()`` frames [pixels]; at most 480 x 640."""

    def __post_init__(self) -> None:
        if not (self.policy_hz > 0 and self.physics_dt_s > 0):
            raise ValueError(
                f"policy_hz and physics_dt_s must be > 0, got {self.policy_hz!r} and {self.physics_dt_s!r}"
            )
        substeps = 1.0 / (self.policy_hz * self.physics_dt_s)
        if abs(substeps - round(substeps)) > 1e-6 or round(substeps) < 1:
            raise ValueError(
                f"1 / (policy_hz * physics_dt_s) must be a positive integer, got {substeps:.6g} "
                f"(policy_hz={self.policy_hz}, physics_dt_s={self.physics_dt_s})"
            )
        if len(self.home_qpos_rad) != len(ARM_JOINTS):
            raise ValueError(f"home_qpos_rad needs {len(ARM_JOINTS)} values, got {len(self.home_qpos_rad)}")
        if any(lo >= hi for lo, hi in zip(self.workspace_low_m, self.workspace_high_m, strict=True)):
            raise ValueError(
                f"workspace_low_m {self.workspace_low_m} must be below workspace_high_m {self.workspace_high_m}"
            )
        if self.render_camera not in CAMERAS:
            raise ValueError(f"render_camera must be one of {CAMERAS}, got {self.render_camera!r}")
        unknown = [c for c in self.cameras if c not in CAMERAS]
        if unknown or len(set(self.cameras)) != len(self.cameras) or (self.image_obs and not self.cameras):
            raise ValueError(
                f"cameras must be distinct names from {CAMERAS} (at least one with image_obs), got {self.cameras!r}"
            )
        for name in ("image_size", "render_size"):
            height, width = getattr(self, name)
            if not (0 < height <= 480 and 0 < width <= 640):
                raise ValueError(f"{name} must be (height, width) within (480, 640), got {getattr(self, name)!r}")

    @property
    def n_substeps(self) -> int:
        """Physics (and controller) steps per env step."""
        return round(1.0 / (self.policy_hz * self.physics_dt_s))


class PandaEnv(gym.Env):
    """Base of the Panda tasks; see the module docstring for the shared spaces.

    A task sets the class attributes and implements ``_init_task`` (named addresses), ``_reset_task``
    (objects, drawing from ``rng`` before ``mj_forward``), ``_observe_task`` (its slice of the state
    vector) and ``_evaluate`` (reward before the toggle penalty, success, extra info).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    scene_file: ClassVar[str]
    """MJCF file in ``envs/assets``."""
    obs_layout: ClassVar[dict[str, slice]]
    """Name -> slice of the state vector; starts with ``PROPRIO_LAYOUT``."""
    obs_bounds: ClassVar[dict[str, tuple[float, float]]]
    """Name -> (low, high) for every field of ``obs_layout``."""
    proprio_dim: ClassVar[int] = PROPRIO_DIM
    """Length of the leading part that a real arm measures (the ``state`` of image observations)."""
    position_fields: ClassVar[tuple[str, ...]] = ("tcp_pos",)
    """World positions, re-expressed in the reset tool frame with ``relative_frame``."""
    quat_fields: ClassVar[tuple[str, ...]] = ("tcp_quat",)
    """World orientations, re-expressed relative to the reset tool orientation with ``relative_frame``."""
    tool_vector_fields: ClassVar[tuple[str, ...]] = ("tcp_linvel", "tcp_angvel")
    reset_frame_vector_fields: ClassVar[tuple[str, ...]] = ()
    """World-frame displacements (e.g. tool to object), rotated into the reset tool frame in the relative frame."""
    """World vectors (velocities, forces) re-expressed in the current tool frame with ``relative_frame``."""
    object_geoms: ClassVar[tuple[str, ...]] = ()
    """Geoms whose colour and friction ``randomize`` varies (the table's friction varies too)."""
    has_gripper_action: ClassVar[bool] = True
    """The last action component commands the gripper; False holds it at ``_fixed_gripper_width_m``."""
    _fixed_gripper_width_m: ClassVar[float] = GRIPPER_OPEN_WIDTH_M
    _substep_monitor: Callable[[], None] | None = None
    """Called after every physics step (e.g. to track peak contact forces); None for speed."""

    def __init__(self, config: PandaConfig, render_mode: str | None = None) -> None:
        self.config = config
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.render_mode = render_mode
        self.metadata = {**self.metadata, "render_fps": config.policy_hz}

        self.model = model = self._load_model()
        model.opt.timestep = config.physics_dt_s
        self.data = data = mujoco.MjData(model)
        self.robot = RobotModel(model, data, TCP_SITE, ARM_JOINTS, ARM_ACTUATORS)
        self.controller = CartesianImpedanceController(self.robot, config.controller, config.physics_dt_s)
        self._n_substeps = config.n_substeps

        # Named addresses.
        finger_adr = [model.joint(name).qposadr[0] for name in ("finger_joint1", "finger_joint2")]
        self._finger_qpos = np.array(finger_adr)
        self._gripper_actuator = model.actuator("gripper").id
        # The gripper actuator integrates its ctrl (opening speed) into a commanded width: its state.
        self._gripper_act = int(model.actuator_actadr[self._gripper_actuator])
        self._gripper_speed_mps = float(model.actuator_ctrlrange[self._gripper_actuator, 1])
        arm_act = [model.actuator(name).id for name in ARM_ACTUATORS]
        if arm_act != list(range(arm_act[0], arm_act[0] + len(arm_act))):
            raise ValueError(f"arm actuators {ARM_ACTUATORS} must be consecutive in the model")
        self._arm_ctrl = data.ctrl[arm_act[0] : arm_act[0] + len(arm_act)]
        self._home_qpos = np.array(config.home_qpos_rad)
        self._init_task()
        self._init_randomization()
        self._stepper = self._compiled_stepper(arm_act[0]) if config.compiled_controller else None

        self.action_space, self.state_space, self.observation_space = task_spaces(type(self), config)
        """``state_space``: the flat state vector's space (the observation space unless ``image_obs``)."""

        self._tcp_quat = np.zeros(4)
        self._tcp_xmat = np.zeros(9)
        self._twist = np.zeros(6)
        self._hold_quat = np.array([1.0, 0.0, 0.0, 0.0])
        self._target_quat = np.zeros(4)
        self._obs = np.zeros(self.state_space.shape[0], dtype=np.float32)
        self._gripper_closed = False
        self._relative_frame = RelativeFrame(type(self))
        self._image_renderer: CameraRenderer | None = None
        self._renderer: CameraRenderer | None = None

    # ------------------------------------------------------------------------------------ task hooks
    def _load_model(self) -> mujoco.MjModel:
        """Compile the scene (tasks that add to the robot edit an ``MjSpec`` here)."""
        return mujoco.MjModel.from_xml_path(str(ASSETS / self.scene_file))

    def _init_task(self) -> None:
        """Look up the task's named model entities."""

    def _reset_task(self, rng: np.random.Generator) -> None:
        """Place the task's objects (after the arm is at home, before ``mj_forward``)."""

    def _observe_task(self, obs: np.ndarray) -> None:
        """Write the task's part of the state vector (world frame); kinematics are current."""

    def _evaluate(self) -> tuple[float, bool, dict[str, Any]]:
        """Reward (before the toggle penalty), success, and extra ``info`` entries for the current state."""
        raise NotImplementedError

    def _reset_info(self) -> dict[str, Any]:
        """Extra ``info`` entries at reset."""
        return {}

    # ------------------------------------------------------------------------------------ gym API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        m, d = self.model, self.data
        # Clear everything (time, velocities, solver warm start) so that a seed fixes the episode.
        mujoco.mj_resetData(m, d)
        d.qpos[self.robot.qpos_slice] = self._home_qpos
        if self.has_gripper_action:
            self._set_gripper(GRIPPER_OPEN_WIDTH_M, self._gripper_speed_mps)
        else:
            self._set_gripper(self._fixed_gripper_width_m, 0.0)
        self._gripper_closed = False

        rng = self.np_random
        self._reset_task(rng)
        if self._randomize_any:
            self._randomize(rng)

        mujoco.mj_forward(m, d)
        self.controller.reset()
        self._arm_ctrl[:] = self.controller.last_torque_nm
        self._hold_quat[:] = self.robot.site_quat_world()
        if self.config.relative_frame:
            self._relative_frame.set_reset_pose(self.robot.site_pos_world, self._hold_quat)
        self._observe_state()
        info = {"is_success": False, **self._reset_info()}
        return self._observation(info), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray | dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {a.shape}")
        if not math.isfinite(np.dot(a, a)):  # one reduction: a NaN or inf anywhere makes it non-finite
            raise ValueError(f"action must be finite, got {a!r}")
        a = np.minimum(np.maximum(a, -1.0), 1.0)  # np.clip's wrapper costs more than the two ufuncs
        cfg = self.config

        # New target from the measured tool pose (as SERL does: no wind-up when the tool is blocked).
        target_pos = action_target(a, self.robot.site_pos_world, self._tcp_xmat.reshape(3, 3), self._tcp_quat,
                                   self._hold_quat, cfg, self._target_quat)
        self.controller.set_target(target_pos, self._target_quat)

        toggled = False
        if self.has_gripper_action:
            was_closed = self._gripper_closed
            self._gripper_closed = gripper_command(a[-1], was_closed)
            toggled = self._gripper_closed != was_closed
            # Full speed toward closed or open; the actuator's width command stops at 0 / 0.08 m.
            self.data.ctrl[self._gripper_actuator] = (
                -self._gripper_speed_mps if self._gripper_closed else self._gripper_speed_mps
            )

        self._simulate()
        self._observe_state()
        reward, success, info = self._evaluate()
        reward = step_reward(reward, success, toggled, cfg)
        info = {"is_success": success, **info}
        return self._observation(info), reward, success, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            self._renderer = CameraRenderer(self.model, *self.config.render_size)
        mujoco.mj_camlight(self.model, self.data)  # camera poses for the current state
        return self._renderer.render(self.data, self.config.render_camera)

    def close(self) -> None:
        for renderer in (self._renderer, self._image_renderer):
            if renderer is not None:
                renderer.close()
        self._renderer = self._image_renderer = None

    @property
    def gripper_closed(self) -> bool:
        """The gripper command in effect (True: closing or closed)."""
        return self._gripper_closed

    # ---------------------------------------------------------------------------------- internals
    def _set_gripper(self, width_m: float, speed_mps: float) -> None:
        """Fingers at ``width_m``, the servo's commanded width there, moving at ``speed_mps`` (+ opens)."""
        d = self.data
        d.qpos[self._finger_qpos] = width_m / 2
        d.act[self._gripper_act] = width_m
        d.ctrl[self._gripper_actuator] = speed_mps

    def _simulate(self) -> None:
        """Advance one policy period: n x (mj_step1 -> controller -> mj_step2).

        mj_step1 computes kinematics, the factorised mass matrix and the bias forces that the controller
        reads; mj_step2 adds actuation, solves contacts and integrates, so nothing is computed twice.
        """
        m, d = self.model, self.data
        compute, arm_ctrl = self.controller.compute, self._arm_ctrl
        step1, step2, copyto = mujoco.mj_step1, mujoco.mj_step2, np.copyto
        monitor = self._substep_monitor
        if self._stepper is not None:
            self._stepper.step(self._n_substeps)
        elif monitor is None:
            for _ in range(self._n_substeps):
                step1(m, d)
                copyto(arm_ctrl, compute())
                step2(m, d)
        else:
            for _ in range(self._n_substeps):
                step1(m, d)
                copyto(arm_ctrl, compute())
                step2(m, d)
                monitor()

    def _compiled_stepper(self, ctrl_start: int):
        """The C stepper for this env's controller, or None (Python ticks) when it cannot be used."""
        from controllers import native_tick

        force_monitor = self._compiled_force_monitor()
        if self._substep_monitor is not None and force_monitor is None:
            return None  # a per-step monitor that only exists in Python
        if native_tick.unsupported_reason(self.controller) is not None or native_tick.load_library() is None:
            return None
        arm_ctrl, compute = self._arm_ctrl, self.controller.compute
        return native_tick.CompiledImpedanceStepper(
            self.controller, ctrl_start, lambda: np.copyto(arm_ctrl, compute()), force_monitor
        )

    def _compiled_force_monitor(self):
        """The C version of ``_substep_monitor`` (a ``controllers.native_tick.ForceMonitor``), if the task has one."""
        return None

    def _observe_state(self) -> np.ndarray:
        """Fill the state vector (world frame) into ``self._obs``; recomputes kinematics for the state
        after the last integration."""
        m, d, robot = self.model, self.data, self.robot
        mujoco.mj_kinematics(m, d)
        mujoco.mj_comPos(m, d)  # the Jacobian needs COM-based quantities
        robot.update_jacobian()
        robot.site_twist_world(self._twist)
        self._tcp_xmat[:] = robot.site_xmat_world
        quat = robot.site_quat_world(self._tcp_quat)
        if quat[0] < 0.0:
            np.negative(quat, out=quat)
        obs = self._obs
        obs[0:3] = robot.site_pos_world
        obs[3:7] = quat
        obs[7:10] = self._twist[:3]
        obs[10:13] = self._twist[3:]
        obs[13] = d.qpos[self._finger_qpos].sum()
        self._observe_task(obs)
        return obs

    def _observation(self, info: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
        """The observation of the state that ``_observe_state`` filled in; adds ``info["state"]`` (world frame)
        with image observations or the relative frame."""
        cfg = self.config
        state = self._obs.copy()
        if cfg.relative_frame:
            info["state"] = state.copy()
            self._to_relative_frame(state)
        if not cfg.image_obs:
            return state
        info.setdefault("state", state)
        obs: dict[str, np.ndarray] = {"state": state[: self.proprio_dim].copy()}
        if self._image_renderer is None:
            self._image_renderer = CameraRenderer(self.model, *cfg.image_size, shadows=cfg.image_shadows)
        mujoco.mj_camlight(self.model, self.data)  # camera and light poses for the current state
        for camera in self.config.cameras:
            obs[camera] = self._image_renderer.render(self.data, camera)
        return obs

    def _to_relative_frame(self, state: np.ndarray) -> None:
        """Re-express world-frame fields in the reset tool frame (poses) or the current one (vectors)."""
        self._relative_frame.apply(state, self._tcp_xmat.reshape(3, 3))

    # ------------------------------------------------------------------------------ randomisation
    def _init_randomization(self) -> None:
        m = self.model
        self._randomize_any = self.config.randomize.any
        self._object_geom_ids = np.array([m.geom(name).id for name in self.object_geoms], dtype=int)
        self._friction_geom_ids = np.append(self._object_geom_ids, m.geom("table").id)
        self._camera_ids = np.array([m.camera(name).id for name in CAMERAS])
        # Nominal values, restored before each draw.
        self._nominal_rgba = m.geom_rgba.copy()
        self._nominal_friction = m.geom_friction.copy()
        self._nominal_light_pos = m.light_pos.copy()
        self._nominal_light_diffuse = m.light_diffuse.copy()
        self._nominal_headlight = np.array(m.vis.headlight.diffuse)
        self._nominal_cam_pos = m.cam_pos.copy()
        self._nominal_cam_quat = m.cam_quat.copy()

    def _task_colors(self) -> np.ndarray:
        """RGBA of ``object_geoms`` for this episode before jitter (tasks with colour choices override)."""
        return self._nominal_rgba[self._object_geom_ids]

    def _randomize(self, rng: np.random.Generator) -> None:
        """Draw this episode's colours, friction, lights and camera poses (only the options that are on)."""
        m, r = self.model, self.config.randomize
        if r.object_color_jitter > 0.0 and len(self._object_geom_ids):
            rgba = self._task_colors().copy()
            rgba[:, :3] += rng.uniform(-r.object_color_jitter, r.object_color_jitter, (len(rgba), 3))
            m.geom_rgba[self._object_geom_ids] = np.clip(rgba, 0.0, 1.0)
        if tuple(r.friction_scale) != (1.0, 1.0):
            ids = self._friction_geom_ids
            scale = rng.uniform(*r.friction_scale, len(ids))
            m.geom_friction[ids, 0] = self._nominal_friction[ids, 0] * scale
        if r.light_pos_jitter_m > 0.0:
            m.light_pos[:] = self._nominal_light_pos + rng.uniform(
                -r.light_pos_jitter_m, r.light_pos_jitter_m, self._nominal_light_pos.shape
            )
        if tuple(r.light_intensity_scale) != (1.0, 1.0):
            scale = rng.uniform(*r.light_intensity_scale, m.nlight + 1)
            m.light_diffuse[:] = self._nominal_light_diffuse * scale[:-1, None]
            m.vis.headlight.diffuse = self._nominal_headlight * scale[-1]
        if r.camera_pos_jitter_m > 0.0:
            ids = self._camera_ids
            m.cam_pos[ids] = self._nominal_cam_pos[ids] + rng.uniform(
                -r.camera_pos_jitter_m, r.camera_pos_jitter_m, (len(ids), 3)
            )
        if r.camera_rot_jitter_rad > 0.0:
            for cam_id in self._camera_ids:
                axis = rng.normal(size=3)
                angle = rng.uniform(-r.camera_rot_jitter_rad, r.camera_rot_jitter_rad)
                quat = self._nominal_cam_quat[cam_id].copy()
                # Rotate about an axis of the camera's parent frame: q <- exp(angle * axis) * q.
                delta = np.zeros(4)
                mujoco.mju_axisAngle2Quat(delta, axis / np.linalg.norm(axis), angle)
                mujoco.mju_mulQuat(m.cam_quat[cam_id], delta, quat)


class ScriptedExpert:
    """Shared plumbing of the scripted experts: seeded action noise, tool-frame actions, the state source.

    An expert acts from the world-frame state vector alone (no simulator access): ``reset()`` at each
    episode start, then ``expert(obs) -> action``, or ``expert(obs, info)`` with image observations or the
    relative frame (the state is then ``info["state"]``). Build one matched to an env config with
    ``from_config``.

    Args:
        noise_std: standard deviation of the Gaussian noise added to every action component (before the
            clip to [-1, 1]); 0 gives the clean script.
        seed: seed of the expert's own noise generator (it keeps running across episodes).
        action_scale_m: the env's ``action_scale_m`` [m]; None takes the task config's default.
        rotation: the env's ``rotation``: the expert keeps the orientation (zero rotation + noise).
    """

    config_cls: ClassVar[type[PandaConfig]]
    """The task's config class (defaults)."""
    has_gripper: ClassVar[bool] = True
    """The task's action ends with a gripper command."""
    world_state_in_info: bool = False
    """The env's observations are not world-frame states (``relative_frame``): read ``info["state"]``."""

    def __init__(
        self, noise_std: float = 0.1, seed: int = 0, action_scale_m: float | None = None, rotation: bool = False
    ) -> None:
        if not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std!r}")
        self.noise_std = noise_std
        self.action_scale_m = self.config_cls().action_scale_m if action_scale_m is None else action_scale_m
        self.action_dim = 3 + (3 if rotation else 0) + (1 if self.has_gripper else 0)
        self._rng = np.random.default_rng(seed)
        self.reset()

    @classmethod
    def from_config(cls, config: PandaConfig, noise_std: float = 0.1, seed: int = 0) -> Self:
        """An expert matched to an env config (action scale, action size, observation frame)."""
        if not isinstance(config, cls.config_cls):
            raise TypeError(f"{cls.__name__} needs a {cls.config_cls.__name__}, got {type(config).__name__}")
        expert = cls(noise_std, seed, config.action_scale_m, config.rotation, **cls._config_kwargs(config))
        expert.world_state_in_info = config.relative_frame
        return expert

    @classmethod
    def _config_kwargs(cls, config: Any) -> dict[str, Any]:
        """Extra constructor arguments taken from the config."""
        return {}

    def reset(self) -> None:
        """Start a new episode."""

    def _state(self, obs: np.ndarray | Mapping[str, np.ndarray], info: Mapping[str, Any] | None) -> np.ndarray:
        return state_vector(obs, info, self.world_state_in_info)

    def _action(self, move_world_m: np.ndarray, tcp_quat: np.ndarray, gripper: float | None = None) -> np.ndarray:
        """The action that moves the tool by ``move_world_m`` (world frame) and commands the gripper."""
        action = np.zeros(self.action_dim)
        action[:3] = quat_to_matrix(tcp_quat).T @ move_world_m / self.action_scale_m
        if gripper is not None:
            action[-1] = gripper
        if self.noise_std > 0:
            action += self._rng.normal(0.0, self.noise_std, self.action_dim)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
