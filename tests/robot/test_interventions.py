"""Interventions: routing into both buffers, counts in metrics, the scripted person's schedules, teleop devices
in control, teleop recording."""

import itertools

import gymnasium as gym
import numpy as np
import pytest

import envs
from data.episode_store import EpisodeStore
from data.schema import Source
from hardware.teleop import KeyboardTeleop, KeyEvent, QueueKeySource
from robot.config import apply_overrides
from robot.core.metrics import read_metrics
from robot.interventions import (
    EXECUTED_ACTION_KEY,
    INTERVENTION_KEY,
    InterventionConfig,
    InterventionWrapper,
    ScriptedIntervention,
    make_intervention_source,
    record_teleop_episodes,
)
from robot.presets import default_config
from robot.run_dir import create_run_dir, save_config
from robot.train import Trainer


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def train_reach_with_scripted_person(tmp_path, steps: int, **interventions) -> tuple[Trainer, dict]:
    """A tiny reach run, no demos, where the scripted expert takes over after 5 steps of each episode."""
    config = apply_overrides(default_config("reach"), {
        "total_env_steps": steps, "learning_starts": steps // 2, "random_steps": 0, "eval_every": steps,
        "eval_episodes": 1, "checkpoint_every": steps, "log_every": 50, "num_demos": 0,
        "agent.hidden_dims": "16,16", "agent.batch_size": 16, "agent.num_critics": 2, "run_root": str(tmp_path),
        "interventions.device": "scripted", "interventions.schedule": "late", "interventions.explore_steps": 5,
        **{f"interventions.{k}": v for k, v in interventions.items()},
    })
    run_dir = create_run_dir(config.run_root, config.task)
    save_config(run_dir, config)
    trainer = Trainer(config, run_dir)
    return trainer, trainer.run()


def test_trainer_routes_intervention_transitions_to_both_buffers_and_logs_counts(tmp_path):
    trainer, summary = train_reach_with_scripted_person(tmp_path, 150, takeover_steps=10)
    run_dir = trainer.run_dir
    counts = trainer.interventions.counts()
    # Every step is in the online buffer; exactly the person's steps are in the demo buffer (no demos here).
    assert len(trainer.online) == 150
    assert 0 < counts["interventions"] == len(trainer.demos) < 150
    # One takeover per episode that lasted past explore_steps, at most takeover_steps each.
    assert 1 <= counts["takeovers"] <= summary["episodes"] + 1
    assert counts["interventions"] <= 10 * counts["takeovers"]
    # The demo rows are the online rows the person produced, in order, with the executed (expert) actions.
    n_demo, j = len(trainer.demos), 0
    for i in range(n_demo):
        while not np.array_equal(trainer.online.obs[j], trainer.demos.obs[i]):
            j += 1
        assert np.array_equal(trainer.online.action[j], trainer.demos.action[i])
        j += 1
    rows = [r for r in read_metrics(run_dir) if "train/interventions" in r]
    assert rows and rows[-1]["train/interventions"] == counts["interventions"]
    assert rows[-1]["train/takeovers"] == counts["takeovers"]
    assert summary["interventions"] == counts["interventions"]


def test_to_demo_buffer_false_keeps_the_persons_steps_online_only(tmp_path):
    trainer, _ = train_reach_with_scripted_person(tmp_path, 80, to_demo_buffer=False)
    assert trainer.interventions.counts()["interventions"] > 0
    assert len(trainer.online) == 80 and len(trainer.demos) == 0  # and batches came from the online buffer alone


class _MaskingEnv(gym.Wrapper):
    """An env whose own info carries keys named like the intervention flag (LeRobot #3273)."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, {**info, INTERVENTION_KEY: False, EXECUTED_ACTION_KEY: "env's"}


def test_intervention_flag_cannot_be_masked_by_the_envs_info_and_keyboard_takes_over():
    env = _MaskingEnv(envs.make("pick-cube"))
    clock = ManualClock()
    keys = QueueKeySource()
    keyboard = KeyboardTeleop(source=keys, clock=clock)
    wrapped = InterventionWrapper(env, make_intervention_source(
        InterventionConfig(device="keyboard"), env, "pick-cube", None, 0, device=keyboard))
    wrapped.reset(seed=0)
    policy_action = np.array([0.0, 0.0, -1.0, -1.0], np.float32)
    _, _, _, _, info = wrapped.step(policy_action)  # nobody touches the keyboard: the policy acts
    assert info[INTERVENTION_KEY] is False and np.array_equal(info[EXECUTED_ACTION_KEY], policy_action)
    keys.push("w")
    keys.push("c")
    clock.now += 0.1
    _, _, _, _, info = wrapped.step(policy_action)
    assert info[INTERVENTION_KEY] is True
    assert np.array_equal(info[EXECUTED_ACTION_KEY], [1.0, 0.0, 0.0, 1.0])  # +x and close the gripper
    keys.push(KeyEvent("w", pressed=False))
    keys.push(KeyEvent("c", pressed=False))
    clock.now += 0.1
    _, _, _, _, info = wrapped.step(policy_action)
    assert info[INTERVENTION_KEY] is False
    keys.push("r")
    clock.now += 0.1
    wrapped.step(policy_action)
    assert wrapped.counts() == {"interventions": 2, "takeovers": 2}
    wrapped.close()
    assert not keyboard.is_connected


def test_scripted_stand_in_takes_over_when_the_policy_is_stuck_and_its_state_round_trips():
    config = InterventionConfig(device="scripted", schedule="stuck", stuck_window=5, takeover_steps=4,
                                max_takeovers_per_episode=2, expert_noise=0.1)
    env = envs.make("reach")
    wrapped = InterventionWrapper(env, ScriptedIntervention(config, "reach", None, seed=3))
    wrapped.reset(seed=1)
    flags = [wrapped.step(np.zeros(3, np.float32))[4][INTERVENTION_KEY] for _ in range(20)]
    # A policy that never moves: the expert takes over after the window, for takeover_steps, at most twice.
    assert flags[:5] == [False] * 5 and flags[5:9] == [True] * 4
    assert sum(flags) == 8 and wrapped.counts()["takeovers"] == 2
    state = wrapped.state_dict()
    other = InterventionWrapper(envs.make("reach"), ScriptedIntervention(config, "reach", None, seed=99))
    other.load_state_dict(state)  # a resumed run resets the episode it saved at again
    other.reset(seed=1)
    assert other.state_dict() == state
    env.close()
    other.close()


def test_spacemouse_without_the_hardware_extra_names_the_extra():
    try:
        import pyspacemouse  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pyspacemouse is installed here")
    env = envs.make("reach")
    with pytest.raises(ValueError, match=r"interventions.device spacemouse: .*robot-stack\[hardware\]"):
        make_intervention_source(InterventionConfig(device="spacemouse"), env, "reach", None, 0)
    env.close()


def test_teleop_recording_stores_the_typed_actions_as_demo_episodes(tmp_path):
    """A scripted typist presses the keys a person would (toward the target) into the real keyboard device."""
    clock = ManualClock()
    keys = QueueKeySource()
    held: set[str] = set()
    expert = envs.make_expert("reach", noise_std=0.0, seed=0)

    def typist(obs, info):
        clock.now += 0.1
        action = expert(obs)
        wanted = {k for axis, (pos, neg) in enumerate((("w", "s"), ("a", "d"), ("r", "f")))
                  for k, on in ((pos, action[axis] > 0.3), (neg, action[axis] < -0.3)) if on}
        for key in held - wanted:
            keys.push(KeyEvent(key, pressed=False))
        for key in wanted:
            keys.push(key)
        held.clear()
        held.update(wanted)

    out = tmp_path / "teleop"
    keyboard = KeyboardTeleop(source=keys, clock=clock)
    indices = record_teleop_episodes("reach", keyboard, 2, out, seed=0, realtime=False, on_step=typist,
                                     max_attempts=6)
    assert indices == [0, 1] and not keyboard.is_connected
    with EpisodeStore.open(out) as store:
        for i in indices:
            meta = store.metadata(i)
            assert meta.source is Source.DEMO and meta.success and meta.extra["policy"] == "teleop"
            steps = store.episode(i).load(["action", "intervention"])
            typed = steps["intervention"]
            assert typed.any()
            # Actions are key twists (each axis -1, 0 or +1) while typing, and the zero hold otherwise.
            assert set(np.unique(steps["action"][typed])) <= {-1.0, 0.0, 1.0}
            assert not steps["action"][~typed].any()
        total = sum(store.metadata(i).length for i in indices)
    # What `robot train reach --demo_store OUT` loads into its demo buffer: every recorded step.
    from data.replay_buffer import ReplayBuffer
    from robot.runtime.learner import fill_demo_buffer
    from robot.train import TrainConfig

    buffer = ReplayBuffer(20, 3, 10_000)
    config = TrainConfig(task="reach", demo_store=str(out))
    fill_demo_buffer(buffer, config, {"state": ((20,), np.float32)}, lambda a: a)
    assert len(buffer) == total


def test_collect_demos_teleop_without_a_terminal_is_one_clear_error(tmp_path, capsys):
    from robot.cli import main

    out = tmp_path / "demos"
    assert main(["collect-demos", "reach", "-n", "1", "--teleop", "keyboard", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--teleop keyboard" in err and "terminal" in err
    assert not out.exists()  # nothing created before the device was available


def _corrective(**overrides) -> InterventionConfig:
    return InterventionConfig(**{"device": "scripted", "schedule": "corrective", "progress_window": 5,
                                 "takeover_steps": 4, "max_takeovers_per_episode": 2, "takeover_prob": 1.0,
                                 "prob_half_life_steps": 0, **overrides})


def _flags(config: InterventionConfig, policy_action, steps: int, seed: int = 0) -> tuple[list, InterventionWrapper]:
    """Per-step intervention flags of one peg-insert episode (the expert needs ~30 steps: no burst ends it)."""
    wrapped = InterventionWrapper(envs.make("peg-insert"), ScriptedIntervention(config, "peg-insert", None, seed))
    wrapped.reset(seed=1)
    flags = []
    for _ in range(steps):
        _, _, terminated, truncated, info = wrapped.step(np.asarray(policy_action, np.float32))
        flags.append(info[INTERVENTION_KEY])
        assert not (terminated or truncated)
    return flags, wrapped


def test_corrective_person_takes_over_a_stuck_policy_for_bursts_of_takeover_steps():
    flags, wrapped = _flags(_corrective(), np.zeros(3), 30)
    # The first look sets the best distance; after 5 more steps without progress the person steps in for 4
    # steps, hands back, watches a fresh window from the corrected state, steps in once more, then the
    # episode's budget of 2 takeovers is spent.
    # (The tool coasts a step or two after the hand-back, which counts as progress, so the second
    # window's start is only bounded.)
    runs = [(flag, len(list(group))) for flag, group in itertools.groupby(flags)]
    assert runs[:2] == [(False, 5), (True, 4)]
    assert runs[2][0] is False and 5 <= runs[2][1] <= 8 and runs[3] == (True, 4) and runs[4][0] is False
    assert len(runs) == 5 and wrapped.counts() == {"interventions": 8, "takeovers": 2}
    wrapped.close()


def test_corrective_person_catches_a_policy_drifting_away_before_the_window_ends():
    # Straight up at 2 cm per step: the tip leaves its best distance by 3 cm within 2 steps, long before a
    # 10-step window without progress would end; the expert's action is what runs.
    flags, wrapped = _flags(_corrective(progress_window=10), [0.0, 0.0, -1.0], 6)
    first = flags.index(True)
    assert 1 <= first <= 3 and flags[first:first + 3] == [True] * 3
    wrapped.close()


def test_corrective_willingness_halves_with_training_and_never_stops():
    config = _corrective(takeover_prob=0.8, prob_half_life_steps=2_000, max_takeovers_per_episode=100,
                         takeover_steps=2, progress_window=3)
    source = ScriptedIntervention(config, "peg-insert", None, seed=0)
    assert [source.takeover_probability(s) for s in (0, 2_000, 6_000)] == pytest.approx([0.8, 0.4, 0.1])
    env = envs.make("peg-insert")
    obs, info = env.reset(seed=0)
    env.close()
    # A policy that never moves, 100-step episodes: the person steps in less and less often, block by block.
    per_block = []
    for _ in range(4):
        count = 0
        for _ in range(20):
            source.reset()
            count += sum(source.propose(obs, info, np.zeros(3)) is not None for _ in range(100))
        per_block.append(count)
    assert per_block[0] > per_block[1] > per_block[2] > per_block[3] > 0


def test_corrective_person_is_deterministic_given_the_seed_and_its_coin_is_checkpointed():
    config = _corrective(takeover_prob=0.5, max_takeovers_per_episode=50, takeover_steps=1, progress_window=2)
    env = envs.make("peg-insert")
    obs, info = env.reset(seed=0)
    env.close()

    def run(source: ScriptedIntervention) -> list[bool]:
        source.reset()
        return [source.propose(obs, info, np.zeros(3)) is not None for _ in range(100)]

    a, b, c = (ScriptedIntervention(config, "peg-insert", None, seed) for seed in (5, 5, 6))
    first = run(a)
    assert first == run(b) and first != run(c) and 0 < sum(first) < 50
    state = a.state_dict()
    expected = run(a)
    restored = ScriptedIntervention(config, "peg-insert", None, seed=99)
    restored.load_state_dict({**state, "episode": state["episode"] + 1})  # saved right after an episode's reset
    assert run(restored) == expected


def test_corrective_settings_are_checked():
    with pytest.raises(ValueError, match="interventions.takeover_prob"):
        InterventionConfig(takeover_prob=1.5)
    with pytest.raises(ValueError, match="interventions.progress_window"):
        InterventionConfig(progress_window=0)
