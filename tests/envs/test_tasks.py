"""What every Panda task shares: spaces, conventions, seeding, experts, randomisation, stable-baselines3."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.panda_base import PROPRIO_DIM, PROPRIO_LAYOUT, PandaEnv, RandomizationConfig, quat_to_matrix

TASKS = ["reach", "pick-cube", "peg-insert", "stack-cubes"]
# (action dim, state dim) with the default config; the gripper is commanded only where objects are grasped.
SHAPES = {"reach": (3, 20), "pick-cube": (4, 24), "peg-insert": (3, 20), "stack-cubes": (4, 35)}
# Clean-expert episodes per task in the success test (the stack episodes are the longest).
EXPERT_EPISODES = {"reach": 15, "pick-cube": 15, "peg-insert": 15, "stack-cubes": 10}


def run_episode(env, expert, seed, max_steps=None):
    """One episode with the expert; returns (success, steps, last info)."""
    obs, info = env.reset(seed=seed)
    expert.reset()
    max_steps = max_steps or env.spec.max_episode_steps
    steps = 0
    while steps < max_steps:
        obs, _, terminated, truncated, info = env.step(expert(obs, info))
        steps += 1
        if terminated or truncated:
            break
    return bool(info["is_success"]), steps, info


@pytest.mark.parametrize("name", TASKS)
def test_spaces_pass_gymnasium_check_env(name):
    config = envs.get_task(name).config_cls()
    env = envs.make(name, config)
    check_env(env.unwrapped, skip_render_check=True)
    action_dim, state_dim = SHAPES[name]
    assert env.action_space.shape == (action_dim,) and env.observation_space.shape == (state_dim,)
    layout = env.unwrapped.obs_layout
    assert list(layout)[:5] == list(PROPRIO_LAYOUT) and max(s.stop for s in layout.values()) == state_dim
    covered = np.zeros(state_dim, dtype=int)
    for part in layout.values():
        covered[part] += 1
    assert np.all(covered == 1)
    rotated = envs.make(name, dataclasses.replace(config, rotation=True))
    assert rotated.action_space.shape == (action_dim + 3,)


@pytest.mark.parametrize("name", TASKS)
def test_same_seed_same_episode_and_resets_clear_the_past(name):
    env = envs.make(name)
    actions = np.random.default_rng(0).uniform(-1, 1, (8, *env.action_space.shape)).astype(np.float32)

    def rollout(seed):
        trajectory = [env.reset(seed=seed)[0]]
        trajectory += [env.step(a)[0] for a in actions]
        return np.array(trajectory)

    first = rollout(5)
    other = rollout(6)
    np.testing.assert_array_equal(rollout(5), first)
    assert not np.array_equal(first[0], other[0])  # the objects moved


@pytest.mark.parametrize("name", TASKS)
def test_clean_expert_succeeds_at_least_90_percent(name):
    env = envs.make(name)
    expert = envs.make_expert(name, noise_std=0.0, seed=0)
    n = EXPERT_EPISODES[name]
    results = [run_episode(env, expert, seed=1000 + i) for i in range(n)]
    successes = sum(success for success, _, _ in results)
    assert successes >= 0.9 * n, f"{name}: {successes}/{n} successes"
    # Only success terminates, and it ends the episode before the time limit.
    assert all(steps < env.spec.max_episode_steps for success, steps, _ in results if success)


@pytest.mark.parametrize("name", TASKS)
def test_time_out_truncates_and_never_terminates(name):
    env = envs.make(name)
    env.reset(seed=0)
    hold = np.zeros(env.action_space.shape, dtype=np.float32)
    for step in range(1, env.spec.max_episode_steps + 1):
        _, reward, terminated, truncated, info = env.step(hold)
        assert not terminated and reward == 0.0 and info["is_success"] is False
        assert truncated == (step == env.spec.max_episode_steps)


@pytest.mark.parametrize("name", TASKS)
def test_actions_move_the_tool_in_its_own_frame(name):
    env = envs.make(name)
    obs0, _ = env.reset(seed=0)
    action = np.zeros(env.action_space.shape, dtype=np.float32)
    action[0] = 1.0  # tool +x
    obs, *_ = env.step(action)
    rot_world_tool = quat_to_matrix(obs0[PROPRIO_LAYOUT["tcp_quat"]].astype(float))
    moved_tool = rot_world_tool.T @ (obs[:3] - obs0[:3])
    # (peg-insert's 3 mm error clip makes it the slowest: ~2 mm in the first step)
    assert moved_tool[0] > 0.0015 and np.all(np.abs(moved_tool[1:]) < 0.3 * moved_tool[0])


@pytest.mark.parametrize("name", TASKS)
def test_dense_reward_is_a_cost_below_success(name):
    config = dataclasses.replace(envs.get_task(name).config_cls(), dense_reward=True)
    env = envs.make(name, config)
    expert = envs.make_expert(name, noise_std=0.0, seed=0, config=config)
    obs, info = env.reset(seed=2)
    rewards = []
    for _ in range(env.spec.max_episode_steps):
        obs, reward, terminated, _, info = env.step(expert(obs, info))
        rewards.append(reward)
        if terminated:
            break
    assert terminated and rewards[-1] == 1.0
    # progress - 1 in [-1, 0) before success: ending the episode by succeeding is always worth more
    assert all(-1.0 <= r < 0.0 for r in rewards[:-1]) and max(rewards[:-1]) > rewards[0]


@pytest.mark.parametrize("name", ["pick-cube", "stack-cubes"])
def test_gripper_toggle_penalty_is_charged_once_per_effective_toggle(name):
    config = dataclasses.replace(envs.get_task(name).config_cls(), gripper_toggle_penalty=0.1)
    env = envs.make(name, config)
    env.reset(seed=0)
    rewards = []
    for g in (0.4, 0.6, 0.9, -0.4, -0.6, -0.9):  # dead band, close, keep, dead band, open, keep
        action = np.zeros(env.action_space.shape, dtype=np.float32)
        action[-1] = g
        rewards.append(env.step(action)[1])
    assert rewards == pytest.approx([0.0, -0.1, 0.0, 0.0, -0.1, 0.0])


@pytest.mark.parametrize("name", TASKS)
def test_relative_frame_puts_the_reset_pose_at_the_origin(name):
    world = envs.make(name)
    relative = envs.make(name, dataclasses.replace(envs.get_task(name).config_cls(), relative_frame=True))
    obs_w0, _ = world.reset(seed=3)
    obs_r, _ = relative.reset(seed=3)
    layout = world.unwrapped.obs_layout
    np.testing.assert_allclose(obs_r[layout["tcp_pos"]], 0.0, atol=1e-6)
    np.testing.assert_allclose(obs_r[layout["tcp_quat"]], [1, 0, 0, 0], atol=1e-6)
    pos0 = obs_w0[layout["tcp_pos"]]
    rot0 = quat_to_matrix(obs_w0[layout["tcp_quat"]].astype(float))
    for field in world.unwrapped.position_fields:
        np.testing.assert_allclose(obs_r[layout[field]], rot0.T @ (obs_w0[layout[field]] - pos0), atol=1e-5)
    # Same action, same motion (actions are tool-frame deltas either way); velocities in the tool frame.
    action = np.zeros(world.action_space.shape, dtype=np.float32)
    action[:3] = (0.5, -0.3, 0.2)
    obs_w, *_ = world.step(action)
    obs_r, *_ = relative.step(action)
    rot = quat_to_matrix(obs_w[layout["tcp_quat"]].astype(float))
    np.testing.assert_allclose(obs_r[layout["tcp_pos"]], rot0.T @ (obs_w[layout["tcp_pos"]] - pos0), atol=1e-5)
    np.testing.assert_allclose(obs_r[layout["tcp_linvel"]], rot.T @ obs_w[layout["tcp_linvel"]], atol=1e-5)
    rot_relative = quat_to_matrix(obs_r[layout["tcp_quat"]].astype(float))
    np.testing.assert_allclose(rot_relative, rot0.T @ rot, atol=1e-5)


@pytest.mark.parametrize("name", TASKS)
def test_experts_read_the_world_state_from_info_in_the_relative_frame(name):
    config = dataclasses.replace(envs.get_task(name).config_cls(), relative_frame=True)
    env = envs.make(name, config)
    expert = envs.make_expert(name, noise_std=0.0, seed=0, config=config)
    obs, info = env.reset(seed=1001)
    np.testing.assert_array_equal(info["state"], envs.make(name).reset(seed=1001)[0])
    with pytest.raises(ValueError, match=r"expert\(obs, info\)"):
        expert(obs)
    success, _, _ = run_episode(env, expert, seed=1001)
    assert success


@pytest.mark.parametrize("name", TASKS)
def test_randomisation_changes_the_scene_and_is_seeded(name):
    options = RandomizationConfig(
        object_color_jitter=0.2,
        friction_scale=(0.5, 1.5),
        light_pos_jitter_m=0.3,
        light_intensity_scale=(0.6, 1.4),
        camera_pos_jitter_m=0.02,
        camera_rot_jitter_rad=0.05,
    )
    config = dataclasses.replace(envs.get_task(name).config_cls(), randomize=options)
    env: PandaEnv = envs.make(name, config).unwrapped
    plain: PandaEnv = envs.make(name).unwrapped

    def scene(e, seed):
        obs, _ = e.reset(seed=seed)
        m = e.model
        return obs, [m.geom_rgba.copy(), m.geom_friction.copy(), m.light_pos.copy(), m.light_diffuse.copy(),
                     m.cam_pos.copy(), m.cam_quat.copy()]  # fmt: skip

    obs_a, a = scene(env, 1)
    obs_b, b = scene(env, 2)
    obs_p, p = scene(plain, 1)
    assert all(not np.array_equal(x, y) for x, y in zip(a, p, strict=True)), "every option changes the model"
    assert all(not np.array_equal(x, y) for x, y in zip(a, b, strict=True)), "and differs per episode"
    np.testing.assert_array_equal(obs_a, obs_p)  # drawn after the object poses: same objects as without
    _, again = scene(env, 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, again, strict=True))
    np.testing.assert_allclose(np.linalg.norm(env.model.cam_quat, axis=1), 1.0)


def test_randomisation_options_are_checked():
    with pytest.raises(ValueError, match="friction_scale"):
        RandomizationConfig(friction_scale=(1.5, 0.5))
    with pytest.raises(ValueError, match="camera_pos_jitter_m"):
        RandomizationConfig(camera_pos_jitter_m=-0.1)


def test_bad_configs_name_the_field():
    config_cls = envs.get_task("reach").config_cls
    with pytest.raises(ValueError, match="positive integer"):
        config_cls(policy_hz=7.0)
    with pytest.raises(ValueError, match="cameras"):
        config_cls(cameras=("side",))
    with pytest.raises(ValueError, match="image_size"):
        config_cls(image_size=(1000, 128))


@pytest.mark.parametrize("name", TASKS)
def test_sb3_sac_with_mlp_policy_runs(name):
    import torch
    from stable_baselines3 import SAC

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: extra threads only contend for the cores
    try:
        env = envs.make(name)
        model = SAC(
            "MlpPolicy",
            env,
            learning_starts=40,
            batch_size=16,
            buffer_size=200,
            policy_kwargs={"net_arch": [16, 16]},
            seed=0,
            device="cpu",
        )
        model.learn(total_timesteps=60)
    finally:
        torch.set_num_threads(threads)
    assert model.num_timesteps == 60
    action, _ = model.predict(env.reset(seed=0)[0], deterministic=True)
    assert env.action_space.contains(action)


def test_proprio_part_is_what_a_real_arm_measures():
    for name in TASKS:
        env = envs.make(name).unwrapped
        assert env.proprio_dim == (PROPRIO_DIM + 3 if name == "peg-insert" else PROPRIO_DIM)
    assert isinstance(envs.make("reach").observation_space, gym.spaces.Box)
