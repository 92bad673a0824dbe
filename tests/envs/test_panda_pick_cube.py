from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the tasks)
from envs import experts
from envs.panda_pick_cube import OBS_DIM, OBS_LAYOUT, PandaPickCubeConfig, PandaPickCubeEnv

GYM_ID = "robot/PandaPickCube-v0"
REFERENCE = Path(__file__).parent / "data" / "pick_cube_reference.npz"


@pytest.fixture(scope="module")
def env():
    env = PandaPickCubeEnv()
    yield env
    env.close()


@pytest.mark.parametrize("rotation", [False, True], ids=["xyz", "xyz+rot"])
def test_passes_gymnasium_check_env(rotation):
    env = gym.make(GYM_ID, config=PandaPickCubeConfig(rotation=rotation))
    check_env(env.unwrapped, skip_render_check=True)
    assert env.action_space.shape == ((7,) if rotation else (4,))
    assert env.observation_space.shape == (OBS_DIM,)


def test_gym_make_wraps_a_100_step_time_limit():
    env = gym.make(GYM_ID)
    assert env.spec.max_episode_steps == 100
    assert isinstance(env.unwrapped, PandaPickCubeEnv)


def test_observation_layout_covers_the_vector_once():
    covered = np.zeros(OBS_DIM, dtype=int)
    for field in OBS_LAYOUT.values():
        covered[field] += 1
    assert np.all(covered == 1)


def test_reset_places_arm_at_home_and_cube_in_its_region(env):
    cfg = env.config
    for seed in range(5):
        obs, info = env.reset(seed=seed)
        assert info == {"is_success": False}
        np.testing.assert_allclose(env.robot.q, cfg.home_qpos_rad)
        cube = obs[OBS_LAYOUT["cube_pos"]]
        assert np.all(np.abs(cube[:2] - cfg.cube_center_xy_m) <= np.array(cfg.cube_xy_half_range_m) + 1e-6)
        assert cube[2] == pytest.approx(0.0225, abs=1e-6)
        assert obs[OBS_LAYOUT["tcp_quat"]][0] >= 0.0
        assert obs[OBS_LAYOUT["gripper_width"]][0] == pytest.approx(0.08, abs=1e-6)
        # Gripper pointing down; the controller holds the current pose.
        assert env.robot.site_xmat_world.reshape(3, 3)[2, 2] == pytest.approx(-1.0, abs=1e-3)
        np.testing.assert_allclose(env.controller.target_pos_world, obs[OBS_LAYOUT["tcp_pos"]], atol=1e-6)


def test_same_seed_and_actions_give_identical_observations(env):
    actions = np.random.default_rng(1).uniform(-1, 1, (12, 4)).astype(np.float32)

    def rollout(seed):
        obs, _ = env.reset(seed=seed)
        trajectory = [obs]
        for action in actions:
            trajectory.append(env.step(action)[0])
        return np.array(trajectory)

    first = rollout(7)
    rollout(8)  # a different episode in between must not leak into the next one
    np.testing.assert_array_equal(rollout(7), first)
    other = env.reset(seed=8)[0]
    assert not np.allclose(other[OBS_LAYOUT["cube_pos"]], first[0][OBS_LAYOUT["cube_pos"]])


def test_success_terminates_with_reward_one():
    env = gym.make(GYM_ID)
    expert = experts.PickCubeExpert(noise_std=0.0, seed=0)
    obs, _ = env.reset(seed=3)
    for _ in range(100):
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert reward == 1.0 and info["is_success"]
    lift = obs[OBS_LAYOUT["cube_pos"]][2] - 0.0225
    assert lift >= env.unwrapped.config.lift_threshold_m


def test_time_limit_truncates_without_terminating():
    env = gym.make(GYM_ID)
    env.reset(seed=0)
    hold = np.zeros(4, dtype=np.float32)
    for step in range(1, 101):
        _, reward, terminated, truncated, info = env.step(hold)
        assert not terminated and reward == 0.0 and info["is_success"] is False
        assert truncated == (step == 100)


def test_gripper_command_has_a_dead_band_and_toggle_penalty():
    env = PandaPickCubeEnv(PandaPickCubeConfig(gripper_toggle_penalty=0.1))
    env.reset(seed=0)
    width = OBS_LAYOUT["gripper_width"]

    def step(g):
        obs, reward, *_ = env.step(np.array([0, 0, 0, g], dtype=np.float32))
        return obs[width][0], reward

    assert step(0.4) == (pytest.approx(0.08, abs=1e-4), 0.0)  # in the dead band: stays open
    w1, r1 = step(0.6)  # closes: one toggle
    assert w1 < 0.075 and r1 == pytest.approx(-0.1)
    w2, r2 = step(-0.4)  # dead band: keeps closing
    assert w2 < w1 and r2 == 0.0
    w3, r3 = step(-0.6)  # opens: another toggle
    assert w3 > w2 and r3 == pytest.approx(-0.1)


def test_tool_target_is_clipped_to_the_workspace():
    env = PandaPickCubeEnv()
    env.reset(seed=0)
    for _ in range(15):
        obs, *_ = env.step(np.array([0.0, 0.0, -1.0, -1.0], dtype=np.float32))  # tool -z is world up
    high = env.config.workspace_high_m[2]
    assert env.controller.target_pos_world[2] == pytest.approx(high)
    assert obs[OBS_LAYOUT["tcp_pos"]][2] == pytest.approx(high, abs=5e-3)


def test_actions_are_in_the_tool_frame():
    env = PandaPickCubeEnv()
    obs0, _ = env.reset(seed=0)
    obs, *_ = env.step(np.array([0.0, 0.0, 1.0, -1.0], dtype=np.float32))  # tool +z = down at home
    moved = obs[OBS_LAYOUT["tcp_pos"]] - obs0[OBS_LAYOUT["tcp_pos"]]
    # Mostly straight down; the J^T impedance (no task-inertia decoupling) lets x, y lag by a few mm.
    assert moved[2] < -0.01 and np.all(np.abs(moved[:2]) < 0.2 * abs(moved[2]))


def test_dense_reward_is_a_cost_until_success():
    env = PandaPickCubeEnv(PandaPickCubeConfig(dense_reward=True))
    expert = experts.PickCubeExpert(noise_std=0.0)
    obs, _ = env.reset(seed=1)
    rewards = []
    for _ in range(100):
        obs, reward, terminated, *_ = env.step(expert(obs))
        rewards.append(reward)
        if terminated:
            break
    # every step before success costs (progress - 1) in [-1, 0), so succeeding beats hovering near success
    assert all(-1.0 <= r < 0.0 for r in rewards[:-1])
    assert rewards[-1] == 1.0 and -1.0 < rewards[0] < rewards[-2] < 0.0


def test_bad_actions_and_configs_are_rejected(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(7, dtype=np.float32))
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0, 0, 0], dtype=np.float32))
    with pytest.raises(ValueError, match="positive integer"):
        PandaPickCubeConfig(policy_hz=7.0)
    with pytest.raises(ValueError, match="render_mode"):
        PandaPickCubeEnv(render_mode="human")
    assert env.render() is None  # no render_mode: nothing to draw


@pytest.mark.parametrize(("noise_std", "min_success"), [(0.0, 0.95), (0.1, 0.85)], ids=["clean", "noisy"])
def test_expert_succeeds_quickly(env, noise_std, min_success):
    expert = experts.PickCubeExpert(noise_std=noise_std, seed=0)
    successes, lengths = 0, []
    for seed in range(20):
        obs, _ = env.reset(seed=100 + seed)
        expert.reset()
        length = 0
        terminated = False
        while not terminated and length < 100:
            obs, _, terminated, _, info = env.step(expert(obs))
            length += 1
        successes += info["is_success"]
        lengths.append(length)
    assert successes / 20 >= min_success
    assert np.median(lengths) < 50


@pytest.mark.parametrize(
    ("episode", "config"),
    [
        ("random", PandaPickCubeConfig()),
        ("expert", PandaPickCubeConfig(rotation=True, dense_reward=True, gripper_toggle_penalty=0.1)),
    ],
    ids=["random-default", "expert-rotation-dense-penalty"],
)
def test_replays_the_rollouts_recorded_before_the_task_suite(episode, config):
    """pick-cube is unchanged by the move onto the shared Panda base (envs.panda_base).

    The file holds two seeded episodes recorded with the single-task env before the refactor: 60 uniform
    random 4-D actions from seed 7 (default config), and a noisy expert (noise 0.1, seed 0) with 7-D
    actions, dense reward and toggle penalty from seed 3, with their observations and rewards. On the
    recording machine the replay is bit-identical; the tolerance only absorbs last-bit differences of
    other CPUs, BLAS builds or a numerically equivalent controller rewrite.
    """
    ref = np.load(REFERENCE)
    env = PandaPickCubeEnv(config)
    seed = 7 if episode == "random" else 3
    observations = [env.reset(seed=seed)[0]]
    rewards, terminated = [], []
    for action in ref[f"{episode}_actions"]:
        obs, reward, term, _, _ = env.step(action)
        observations.append(obs)
        rewards.append(reward)
        terminated.append(term)
    observations = np.array(observations)
    # recorded before `cube_from_tcp` (columns 21:24) was added to the observation
    np.testing.assert_allclose(observations[:, :21], ref[f"{episode}_obs"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(observations[:, 21:24], observations[:, 14:17] - observations[:, 0:3], atol=1e-6)
    expected_rewards = ref[f"{episode}_reward"].copy()
    if config.dense_reward:  # recorded when shaping was a bonus in [0, 1); it is now that minus 1
        expected_rewards[~ref[f"{episode}_terminated"]] -= 1.0
    np.testing.assert_allclose(rewards, expected_rewards, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(terminated, ref[f"{episode}_terminated"])
    if episode == "expert":  # the expert, fed the recorded observations, repeats its recorded actions
        expert = experts.PickCubeExpert.from_config(config, noise_std=0.1, seed=0)
        actions = [expert(obs) for obs in ref["expert_obs"][:-1]]
        np.testing.assert_allclose(actions, ref["expert_actions"], rtol=0, atol=1e-5)
