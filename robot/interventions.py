"""Human-in-the-loop interventions: a person (or a scripted stand-in) takes over the action.

HIL-SERL's recipe: while the person steers (SpaceMouse, keyboard), the env executes the person's action
instead of the policy's, and every such transition is stored twice: in the online buffer like any other
step, and in the demo buffer, which the learner samples at a fixed share of each batch. Early guidance
("let it explore 20-30 steps, then guide", then taper off) cuts the steps to success.

Pieces:
- `InterventionConfig`: which device, and for the scripted stand-in when it takes over.
- `TeleopIntervention`: a `hardware.teleop` device (keyboard; SpaceMouse via the `hardware` extra) in
  control while its `intervention_active` is set (SERL's rule: |twist| > 0.001 or a button).
- `ScriptedIntervention`: the task's scripted expert plays the person in tests and benchmarks. Its default
  'corrective' schedule imitates how HIL-SERL's operators intervene: only when the policy is stuck (no
  progress toward the goal for a window of steps) or drifting away from it, for a short burst, with a
  willingness to step in that decays over training, so the person's data covers recoveries from the
  policy's own states and the intervention rate falls as the policy improves. 'stuck' (the tool barely
  moved) and 'late' (after a fixed number of steps) are simpler schedules.
- `InterventionWrapper`: a gymnasium wrapper that asks the source each step and executes its action;
  `info["intervention"]` and `info["intervene_action"]` (SERL's key: the action actually executed) are
  written *after* the env's own info, so no key of the env can mask the flag (LeRobot #3273 lost it
  to a dict-merge order).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np

INTERVENTION_KEY = "intervention"
"""info key: True when the step's executed action came from the person (or the scripted stand-in)."""
EXECUTED_ACTION_KEY = "intervene_action"
"""info key: the action the env executed this step, in the env's action space (SERL's name)."""


class InterventionDevice(enum.Enum):
    NONE = "none"
    KEYBOARD = "keyboard"
    SPACEMOUSE = "spacemouse"
    SCRIPTED = "scripted"


class InterventionSchedule(enum.Enum):
    CORRECTIVE = "corrective"
    """Take over for a burst when the policy made no progress toward the goal for `progress_window` steps or
    drifted `drift_m` beyond its best distance, with probability `takeover_prob` halving every
    `prob_half_life_steps` env steps (tasks without a goal distance: the tool stopped moving, as 'stuck')."""
    STUCK = "stuck"
    """Take over when the tool moved less than `stuck_distance_m` over the last `stuck_window` steps."""
    LATE = "late"
    """Take over after `explore_steps` steps of an episode (HIL-SERL: explore first, then guide)."""


@dataclass
class InterventionConfig:
    """Who may take over the action during training, and (scripted stand-in) when."""

    device: InterventionDevice = InterventionDevice.NONE
    """'none', 'keyboard' (terminal), 'spacemouse' (needs the hardware extra) or 'scripted' (the task's expert)."""
    schedule: InterventionSchedule = InterventionSchedule.CORRECTIVE
    """Scripted only: 'corrective' (stuck or drifting, decaying with training), 'stuck' (the tool stopped
    moving) or 'late' (after explore_steps of an episode)."""
    progress_window: int = 10
    """Scripted 'corrective': steps without progress toward the goal before the person considers stepping in."""
    progress_m: float = 0.005
    """Scripted 'corrective': the goal distance must fall this much below its best to count as progress [m]."""
    drift_m: float = 0.03
    """Scripted 'corrective': the goal distance rising this far above its best is drifting away [m]."""
    takeover_prob: float = 0.5
    """Scripted 'corrective': chance that the person steps in when the policy is stuck or drifting, at the
    start of training; when they let it go, they watch another progress_window steps. 0.5: the policy also
    lives through its own failures in about half of the early episodes (with 1.0 it hardly ever did, and
    learned less on peg-insert: BENCHMARKS.md, interventions)."""
    prob_half_life_steps: int = 5_000
    """Scripted 'corrective': env steps over which takeover_prob halves (a person intervening less and less
    over training, never a hard stop); 0 keeps it constant."""
    stuck_window: int = 10
    """Scripted 'stuck': steps over which the tool's displacement is measured."""
    stuck_distance_m: float = 0.005
    """Scripted 'stuck': the tool moved less than this over the window [m]."""
    explore_steps: int = 20
    """Scripted 'late': steps the policy acts alone before the expert takes over."""
    takeover_steps: int = 0
    """Scripted: steps one takeover lasts; 0 (default): to the end of the episode, i.e. the person guides the
    episode to success once they step in (HIL-SERL: let the policy explore, then guide, so that early
    episodes reach reward). Short bursts that hand back a half-corrected state taught less on peg-insert
    (BENCHMARKS.md, interventions)."""
    max_takeovers_per_episode: int = 1
    """Scripted: takeovers allowed in one episode."""
    every_episodes: int = 1
    """Scripted: intervene only in every n-th episode (1: every episode)."""
    until_step: int = 0
    """Scripted: no new takeover after this many env steps (a hard stop); 0 never stops."""
    expert_noise: float = 0.0
    """Scripted: std of the expert's action noise."""
    hold_s: float = 0.0
    """Teleop: keep control this long after the person's last motion [s] (SERL 0.5, HIL-SERL 0)."""
    to_demo_buffer: bool = True
    """Store the person's transitions in the demo buffer as well as the online one (HIL-SERL). False keeps
    them online only, so a few full demos are not outnumbered in the demo half of each batch."""

    def __post_init__(self) -> None:
        for key in ("stuck_window", "explore_steps", "every_episodes", "progress_window"):
            if getattr(self, key) < 1:
                raise ValueError(f"interventions.{key}: expected >= 1, got {getattr(self, key)}")
        for key in ("takeover_steps", "max_takeovers_per_episode", "until_step", "stuck_distance_m",
                    "expert_noise", "hold_s", "progress_m", "drift_m", "prob_half_life_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"interventions.{key}: expected >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.takeover_prob <= 1.0:
            raise ValueError(f"interventions.takeover_prob: expected a probability in [0, 1], got {self.takeover_prob}")

    @property
    def enabled(self) -> bool:
        return InterventionDevice(self.device) is not InterventionDevice.NONE

    @property
    def fills_demo_buffer(self) -> bool:
        """Whether the person's transitions land in the demo buffer (so it is sampled even without demos)."""
        return self.enabled and self.to_demo_buffer


class InterventionSource(Protocol):
    """Where the person's actions come from; the wrapper calls `reset` per episode and `propose` per step."""

    def reset(self) -> None: ...

    def propose(self, obs: Any, info: dict[str, Any], policy_action: np.ndarray) -> np.ndarray | None:
        """The person's action (env action space) when they are in control, else None."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Teleop devices
# ---------------------------------------------------------------------------------------------
def action_layout(env: gym.Env) -> tuple[int, bool, bool]:
    """(action size, has a rotation part, ends with a gripper command) of a Panda task env."""
    size = int(env.action_space.shape[0])
    base = env.unwrapped
    rotation = bool(getattr(getattr(base, "config", None), "rotation", False))
    gripper = bool(getattr(base, "has_gripper_action", False))
    expected = 3 + 3 * rotation + gripper
    if size != expected:
        raise ValueError(
            f"teleop: the env's action has {size} values, expected {expected} "
            f"(xyz{' + rotation' if rotation else ''}{' + gripper' if gripper else ''})"
        )
    return size, rotation, gripper


def command_to_action(command, rotation: bool, gripper: bool) -> np.ndarray:
    """TeleopCommand -> env action [dx, dy, dz, (rx, ry, rz), (gripper)]: both are tool-frame, unitless."""
    parts = [command.twist_ee[:3]]
    if rotation:
        parts.append(command.twist_ee[3:6])
    if gripper:
        parts.append([float(int(command.gripper))])  # +1 close, -1 open, 0 keeps the current state
    return np.concatenate(parts).astype(np.float32)


class TeleopIntervention:
    """A teleop device in control while the person moves it (or presses a gripper key/button)."""

    def __init__(self, device, env: gym.Env) -> None:
        _, self.rotation, self.gripper = action_layout(env)
        self.device = device
        if not device.is_connected:
            device.connect()

    def reset(self) -> None:
        pass

    def propose(self, obs: Any, info: dict[str, Any], policy_action: np.ndarray) -> np.ndarray | None:
        command = self.device.read()
        return command_to_action(command, self.rotation, self.gripper) if command.intervention_active else None

    def close(self) -> None:
        self.device.disconnect()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# Scripted stand-in for the person
# ---------------------------------------------------------------------------------------------
def reach_goal_distance(state: np.ndarray, env_config: Any) -> float:
    """The tool centre point's distance to the target."""
    from envs.panda_reach import OBS_LAYOUT

    return float(np.linalg.norm(state[OBS_LAYOUT["target_from_tcp"]]))


def peg_goal_distance(state: np.ndarray, env_config: Any) -> float:
    """The peg tip's distance to where success needs it: insert_depth_m below the hole's mouth."""
    from envs.panda_base import quat_to_matrix
    from envs.panda_peg_insert import OBS_LAYOUT, PEG_TIP_FROM_TCP_M, PandaPegInsertConfig

    depth = (env_config or PandaPegInsertConfig()).insert_depth_m
    tip = state[OBS_LAYOUT["tcp_pos"]] + quat_to_matrix(state[OBS_LAYOUT["tcp_quat"]])[:, 2] * PEG_TIP_FROM_TCP_M
    goal = state[OBS_LAYOUT["hole_pos"]] - np.array([0.0, 0.0, depth])
    return float(np.linalg.norm(tip - goal))


GOAL_DISTANCE = {"reach": reach_goal_distance, "peg-insert": peg_goal_distance}
"""Task -> (world-frame state, env config) -> distance to the goal [m]: what the watching person judges
progress by. Tasks not listed fall back to the tool's motion (the 'stuck' test)."""


class ScriptedIntervention:
    """The task's scripted expert takes over on a schedule; deterministic given the seed.

    Its state (episode and step counters, the expert's noise generator, the takeover coin) is saved in
    training checkpoints, so a resumed run intervenes exactly where an uninterrupted one would.
    """

    def __init__(self, config: InterventionConfig, task: str, env_config: Any, seed: int) -> None:
        import envs
        from envs.panda_base import PROPRIO_LAYOUT

        self.config = config
        self.env_config = env_config
        self.expert = envs.make_expert(task, noise_std=config.expert_noise, seed=seed, config=env_config)
        self.goal_distance = GOAL_DISTANCE.get(envs.get_task(task).name)
        self._coin = np.random.default_rng([seed, 11])  # whether the person steps in (corrective)
        self._tcp = PROPRIO_LAYOUT["tcp_pos"]
        self.episode = -1  # reset() starts episode 0
        self.total_steps = 0
        self._new_episode_state()

    def _new_episode_state(self) -> None:
        self.steps_in_episode = 0
        self.takeovers_in_episode = 0
        self.remaining = 0  # steps left in the current takeover; -1: to the end of the episode
        window = max(self.config.stuck_window, self.config.progress_window)
        self._positions: deque[np.ndarray] = deque(maxlen=window + 1)
        self._watch()

    def _watch(self) -> None:
        """Start judging progress afresh (episode start, after a takeover, after letting the policy go on)."""
        self._best = float("inf")
        self._since_progress = 0
        self._positions.clear()

    def reset(self) -> None:
        self.episode += 1
        self._new_episode_state()
        self.expert.reset()

    def takeover_probability(self, env_steps: int | None = None) -> float:
        """Chance that the person steps in when the policy is stuck or drifting ('corrective'), after
        `env_steps` (default: the steps seen so far): halves every prob_half_life_steps, never reaches 0."""
        cfg = self.config
        steps = self.total_steps if env_steps is None else env_steps
        if not cfg.prob_half_life_steps:
            return cfg.takeover_prob
        return cfg.takeover_prob * 0.5 ** (steps / cfg.prob_half_life_steps)

    def _observe(self, state: np.ndarray) -> None:
        self._positions.append(state[self._tcp].copy())
        if self.goal_distance is None:
            return
        distance = self.goal_distance(state, self.env_config)
        self._distance = distance
        if distance < self._best - self.config.progress_m:  # the first look after _watch() always counts
            self._best, self._since_progress = distance, 0
        else:
            self._since_progress += 1

    def _tool_stuck(self, window: int) -> bool:
        if len(self._positions) <= window:
            return False
        moved = np.linalg.norm(self._positions[-1] - self._positions[-1 - window])
        return float(moved) < self.config.stuck_distance_m

    def _should_take_over(self) -> bool:
        cfg = self.config
        if self.takeovers_in_episode >= cfg.max_takeovers_per_episode or self.episode % cfg.every_episodes:
            return False
        if cfg.until_step and self.total_steps >= cfg.until_step:
            return False
        schedule = InterventionSchedule(cfg.schedule)
        if schedule is InterventionSchedule.LATE:
            return self.steps_in_episode >= cfg.explore_steps
        if schedule is InterventionSchedule.STUCK:
            return self._tool_stuck(cfg.stuck_window)
        if self.goal_distance is None:
            troubled = self._tool_stuck(cfg.progress_window)
        else:
            troubled = (self._since_progress >= cfg.progress_window
                        or self._distance > self._best + cfg.drift_m)
        if not troubled:
            return False
        if self._coin.random() < self.takeover_probability():
            return True
        self._watch()  # the person lets it try on, and judges again after another window
        return False

    def propose(self, obs: Any, info: dict[str, Any], policy_action: np.ndarray) -> np.ndarray | None:
        from envs.panda_base import state_vector

        self._observe(state_vector(obs, info, getattr(self.expert, "world_state_in_info", False)))
        if self.remaining == 0 and self._should_take_over():
            self.takeovers_in_episode += 1
            self.remaining = self.config.takeover_steps or -1
            self.expert.reset()  # the expert re-derives its phase from the state it is handed
        action = None
        if self.remaining != 0:
            action = np.asarray(self.expert(obs, info), dtype=np.float32)
            if self.remaining > 0:
                self.remaining -= 1
            if self.remaining == 0:
                self._watch()  # the policy gets a full window from the corrected state
        self.steps_in_episode += 1
        self.total_steps += 1
        return action

    def close(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Counters and generators (checkpointed at episode ends, so no per-episode state)."""
        return {"episode": self.episode, "total_steps": self.total_steps,
                "expert_rng": self.expert._rng.bit_generator.state, "coin_rng": self._coin.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state saved right after an episode's reset; the resumed run resets that episode again."""
        self.episode, self.total_steps = state["episode"] - 1, state["total_steps"]
        self.expert._rng.bit_generator.state = state["expert_rng"]
        if "coin_rng" in state:  # checkpoints written before the corrective schedule have none
            self._coin.bit_generator.state = state["coin_rng"]

    def continue_from(self, episodes: int, env_steps: int) -> None:
        """Pick up the schedule after a restart with `episodes` finished and `env_steps` taken (async actors)."""
        self.episode, self.total_steps = episodes - 1, env_steps


def make_intervention_source(
    config: InterventionConfig, env: gym.Env, task: str, env_config: Any, seed: int, device=None
) -> InterventionSource | None:
    """The source `config.device` names; `device` injects an already built teleop device (tests, GUIs)."""
    kind = InterventionDevice(config.device)
    if kind is InterventionDevice.NONE:
        return None
    if kind is InterventionDevice.SCRIPTED:
        return ScriptedIntervention(config, task, env_config, seed)
    from hardware.errors import HardwareError

    try:  # a missing extra, terminal or device is a bad setting: one line naming it (the CLI prints ValueErrors)
        if device is None:
            device = make_teleop_device(kind.value, config.hold_s)
        return TeleopIntervention(device, env)
    except (ImportError, HardwareError) as err:
        raise ValueError(f"interventions.device {kind.value}: {err}") from err


# ---------------------------------------------------------------------------------------------
# The wrapper
# ---------------------------------------------------------------------------------------------
class InterventionWrapper(gym.Wrapper):
    """Executes the person's action instead of the policy's while they are in control, and counts it.

    `interventions`: steps executed from the person; `takeovers`: times control passed to the person.
    """

    def __init__(self, env: gym.Env, source: InterventionSource) -> None:
        super().__init__(env)
        self.source = source
        self.interventions = 0
        self.takeovers = 0
        self.episode_interventions = 0
        self._active = False
        self._obs: Any = None
        self._info: dict[str, Any] = {}

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        self.source.reset()
        self._obs, self._info, self._active, self.episode_interventions = obs, info, False, 0
        return obs, info

    def step(self, action):
        human = self.source.propose(self._obs, self._info, np.asarray(action))
        executed = np.asarray(action if human is None else human, dtype=np.float32)
        executed = np.clip(executed, self.action_space.low, self.action_space.high)
        obs, reward, terminated, truncated, info = self.env.step(executed)
        active = human is not None
        if active:
            self.interventions += 1
            self.episode_interventions += 1
            self.takeovers += int(not self._active)
        self._active = active
        # Written last: the env's own info can never mask whether the person acted.
        info = {**info, INTERVENTION_KEY: active, EXECUTED_ACTION_KEY: executed}
        self._obs, self._info = obs, info
        return obs, reward, terminated, truncated, info

    def counts(self) -> dict[str, int]:
        return {"interventions": self.interventions, "takeovers": self.takeovers}

    def state_dict(self) -> dict[str, Any]:
        source_state = self.source.state_dict() if hasattr(self.source, "state_dict") else {}
        return {**self.counts(), "source": source_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.interventions, self.takeovers = state["interventions"], state["takeovers"]
        if hasattr(self.source, "load_state_dict"):
            self.source.load_state_dict(state["source"])

    def close(self) -> None:
        self.source.close()
        super().close()


# ---------------------------------------------------------------------------------------------
# Recording demos through teleop
# ---------------------------------------------------------------------------------------------
def make_teleop_device(kind: str, hold_s: float = 0.0):
    """'keyboard' (this terminal) or 'spacemouse' (the `hardware` extra), not yet connected."""
    if kind == "keyboard":
        from hardware.teleop import KeyboardTeleop, KeyboardTeleopConfig

        return KeyboardTeleop(KeyboardTeleopConfig(intervention_hold_s=hold_s))
    if kind == "spacemouse":
        from hardware.teleop import SpaceMouseConfig, SpaceMouseTeleop

        return SpaceMouseTeleop(SpaceMouseConfig(intervention_hold_s=hold_s))
    raise ValueError(f"teleop device: expected 'keyboard' or 'spacemouse', got {kind!r}")


def record_teleop_episodes(
    task: str,
    device,
    num_episodes: int,
    out,
    seed: int = 0,
    env_config: Any = None,
    keep_failed: bool = False,
    max_attempts: int | None = None,
    realtime: bool = True,
    on_step=None,
) -> list[int]:
    """Record `num_episodes` episodes driven by a teleop device into the episode store `out`; returns their indices.

    Each step executes the person's command while they are active and the zero action (hold) otherwise;
    the per-step `intervention` flag says which. Episodes are committed as source "demo" (crash-safe: an
    interrupted session keeps every finished episode). Failed episodes are dropped unless `keep_failed`.
    `realtime` paces the loop at the env's control rate (a person needs it; tests pass False).
    `on_step(obs, info)` runs before each device read (a viewer redraws there; tests type keys there).
    """
    import time
    from pathlib import Path

    import envs
    from data.schema import EpisodeMetadata, Source
    from robot.demos import episode_seed
    from robot.runtime.actor import STATE_KEY, open_actor_store
    from robot.runtime.learner import observation_shapes

    if not device.is_connected:  # first: a missing terminal or device fails before anything is created
        device.connect()
    env = store = None
    committed: list[int] = []
    max_attempts = max_attempts or 5 * num_episodes
    try:
        env = envs.make(task, env_config)
        _, rotation, gripper = action_layout(env)
        period_s = 1.0 / float(getattr(getattr(env.unwrapped, "config", None), "policy_hz", 10.0))
        store = open_actor_store(Path(out), observation_shapes(env.observation_space), env.action_space.shape[0])
        for attempt in range(max_attempts):
            if len(committed) >= num_episodes:
                break
            ep_seed = episode_seed(seed, 3, attempt)
            obs, info = env.reset(seed=ep_seed)
            meta = EpisodeMetadata(task=envs.get_task(task).name, robot="panda_sim", source=Source.DEMO, seed=ep_seed,
                                   extra={"policy": "teleop", "device": repr(device)})
            success, next_tick = False, time.monotonic()
            with store.begin_episode(meta) as writer:
                while True:
                    if on_step is not None:
                        on_step(obs, info)
                    command = device.read()
                    human = bool(command.intervention_active)
                    action = command_to_action(command, rotation, gripper) if human else np.zeros(
                        env.action_space.shape, np.float32)
                    next_obs, reward, terminated, truncated, info = env.step(action)
                    writer.append({"observation": {STATE_KEY: np.asarray(obs, np.float32)}, "action": action,
                                   "reward": float(reward), "terminated": bool(terminated),
                                   "truncated": bool(truncated), "intervention": human})
                    success = success or bool(info.get("is_success", False))
                    obs = next_obs
                    if realtime:
                        next_tick += period_s
                        time.sleep(max(0.0, next_tick - time.monotonic()))
                    if terminated or truncated:
                        break
                if success or keep_failed:
                    committed.append(writer.commit({STATE_KEY: np.asarray(obs, np.float32)}, success=success))
                else:
                    writer.abort()
    finally:
        device.disconnect()
        if store is not None:
            store.close()
        if env is not None:
            env.close()
    return committed
