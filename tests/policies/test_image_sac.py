"""Image SAC: shared encoder trained by the critic only, separate critic heads, reproducible UTD,
checkpoints, and learning from pixels on a tiny seeded task (beats a random policy on CPU)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import MixedSampler
from policies.encoders import EncoderConfig
from policies.image_sac import ImageAgentConfig, ImageSACAgent, obs_spec_of
from policies.sac import SACConfig

SIZE = 16


class DotTargetEnv(gym.Env):
    """One-step task seen only in pixels: a 3x3 dot marks a target point t in [-0.75, 0.75]^2 on a
    16x16 image; reward -|a - t|_1 / 2 for action a, then the episode terminates. A random policy
    earns about -0.55; reading the dot's position from the image is the only way to do better."""

    observation_space = gym.spaces.Dict({
        "cam": gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8),
        "state": gym.spaces.Box(-1.0, 1.0, (2,), np.float32),
    })
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.cell = self.np_random.integers(2, SIZE - 2, size=2)  # dot centre (row, col)
        self.target = (self.cell - (SIZE - 1) / 2) / ((SIZE - 1) / 2 - 1.5) * 0.75
        img = np.zeros((SIZE, SIZE, 3), np.uint8)
        r, c = self.cell
        img[r - 1 : r + 2, c - 1 : c + 2] = (255, 200, 100)
        return {"cam": img, "state": np.zeros(2, np.float32)}, {}

    def step(self, action):
        reward = -float(np.abs(np.asarray(action) - self.target).sum()) / 2
        obs = {"cam": np.zeros((SIZE, SIZE, 3), np.uint8), "state": np.zeros(2, np.float32)}
        return obs, reward, True, False, {}


def tiny_agent(seed=0, num_critics=2, num_subsample=2, utd=1, batch=32, pad=1, grasp=False, action_dim=2):
    torch.manual_seed(seed)
    config = SACConfig(hidden_dims=(64, 64), num_critics=num_critics, num_subsample=num_subsample,
                       utd_ratio=utd, batch_size=batch, discount=0.9)
    image = ImageAgentConfig(
        encoder=EncoderConfig(small_channels=(16, 16), small_downsample_layers=1, latent_dim=32, proprio_dim=8,
                              num_spatial_embeddings=4, dropout=0.0),
        augment_pad=pad,
    )
    image.grasp.enabled = grasp
    return ImageSACAgent(obs_spec_of(DotTargetEnv.observation_space), action_dim, config, image,
                         torch.device("cpu"), seed=seed)


def random_block(rows, seed=0, action_dim=2):
    rng = np.random.default_rng(seed)

    def obs():
        return {"cam": rng.integers(0, 256, (rows, SIZE, SIZE, 3), dtype=np.uint8),
                "state": rng.normal(size=(rows, 2)).astype(np.float32)}

    return {"obs": obs(), "next_obs": obs(), "action": rng.uniform(-1, 1, (rows, action_dim)).astype(np.float32),
            "reward": rng.normal(size=rows).astype(np.float32),
            "terminated": (rng.uniform(size=rows) < 0.1).astype(np.float32),
            "horizon": np.ones(rows, np.float32)}


def params(agent):
    tensors, _ = agent.state_tensors()
    return {k: v.clone() for k, v in tensors.items()}


def test_actor_loss_does_not_reach_the_encoder_but_critic_loss_does():
    agent = tiny_agent()
    batch = agent.prepare(random_block(32))
    agent.encoder.zero_grad()
    loss, _ = agent.actor_loss(batch)
    loss.backward()
    assert all(p.grad is None for p in agent.encoder.parameters())  # stop-gradient
    assert any(p.grad is not None for p in agent.actor.parameters())

    members = torch.arange(2)
    critic_loss, _ = agent.critic_loss(batch, members)
    critic_loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())


def test_encoder_weights_sit_in_the_critic_updater_only():
    agent = tiny_agent()
    encoder_ids = {id(p) for p in agent.encoder.parameters()}
    assert encoder_ids <= {id(p) for p in agent.critic_updater.params}
    assert not encoder_ids & {id(p) for p in agent.actor_updater.params}
    # One actor update leaves the encoder untouched.
    before = [p.clone() for p in agent.encoder.parameters()]
    agent.update_actor(agent.prepare(random_block(32)))
    assert all(torch.equal(a, b) for a, b in zip(before, agent.encoder.parameters(), strict=True))


def test_each_critic_member_has_its_own_output_head():
    # hil-serl #33: a head shared by all members makes the ensemble nearly one critic.
    agent = tiny_agent(num_critics=10, num_subsample=2)
    head = agent.critic.head.weight  # (E, hidden, 1)
    assert head.shape[0] == 10
    loss, _ = agent.critic_loss(agent.prepare(random_block(32)), torch.arange(2))
    loss.backward()
    grads = agent.critic.head.weight.grad
    assert not torch.allclose(grads[0], grads[1])


def test_target_encoder_follows_by_polyak_averaging():
    agent = tiny_agent()
    online = dict(agent.encoder.named_parameters())
    target_before = {k: v.clone() for k, v in agent.target_encoder.named_parameters()}
    agent.update(random_block(32))
    tau = agent.config.tau
    for name, p in agent.target_encoder.named_parameters():
        expected = (1 - tau) * target_before[name] + tau * online[name]
        torch.testing.assert_close(p, expected)


def test_same_seed_gives_identical_parameters_after_utd_updates():
    def run():
        agent = tiny_agent(seed=3, num_critics=4, num_subsample=2, utd=3, pad=2)
        for i in range(3):
            agent.update(random_block(3 * 32, seed=i))
        return params(agent)

    a, b = run(), run()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_utd_block_size_is_checked():
    agent = tiny_agent(utd=2)
    with pytest.raises(ValueError, match="expected utd_ratio\\*batch_size = 64 rows, got 32"):
        agent.update(random_block(32))


def test_checkpoint_round_trip_restores_everything_including_augmentation_rng():
    # LeRobot #2877: temperature lost on resume. Everything that shapes the next update is saved.
    agent = tiny_agent(seed=1)
    agent.update(random_block(32, seed=0))
    tensors, layout = agent.state_tensors()
    assert {"log_alpha", "augment_rng"} <= set(tensors)
    assert any(k.startswith("target_encoder.") for k in tensors)
    restored = tiny_agent(seed=9)
    restored.load_state_tensors({k: v.clone() for k, v in tensors.items()}, layout)
    torch.manual_seed(5)
    agent.update(random_block(32, seed=1))
    torch.manual_seed(5)
    restored.update(random_block(32, seed=1))
    a, b = params(agent), params(restored)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_act_takes_single_env_observations_and_rejects_flat_vectors():
    agent = tiny_agent()
    obs, _ = DotTargetEnv().reset(seed=0)
    action = agent.act(obs)
    assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)
    assert np.array_equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))
    with pytest.raises(TypeError, match="expected an observation dict"):
        agent.act(np.zeros(4, np.float32))
    bad = {**obs, "cam": obs["cam"].astype(np.float32) / 255}
    with pytest.raises(ValueError, match="camera 'cam': expected uint8"):
        agent.act(bad)


def evaluate(policy, episodes=64):
    env = DotTargetEnv()
    total = 0.0
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + i)
        total += env.step(policy(obs))[1]
    return total / episodes


def test_image_agent_learns_the_dot_task_beyond_a_random_policy():
    env = DotTargetEnv()
    agent = tiny_agent(seed=0, batch=64, pad=1)
    buffer = FrameReplayBuffer(obs_spec_of(env.observation_space), 2, capacity=4_000, seed=0)
    sampler = MixedSampler({"online": buffer}, {"online": 1.0}, seed=0)
    rng = np.random.default_rng(0)
    for step in range(800):
        obs, _ = env.reset(seed=step)
        action = rng.uniform(-1, 1, 2).astype(np.float32) if step < 200 else agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs, action, reward, next_obs, terminated, truncated)
        if step >= 100:
            agent.update(sampler.sample(64))
    random_return = evaluate(lambda _o: rng.uniform(-1, 1, 2))
    learned_return = evaluate(lambda o: agent.act(o, deterministic=True))
    print(f"dot task return: learned {learned_return:.3f}, random {random_return:.3f}")
    assert learned_return > -0.3 and learned_return > random_return + 0.2, (learned_return, random_return)


def test_robot_train_with_camera_observations_trains_the_image_agent_and_eval_loads_it(tmp_path):
    from robot.cli import main
    from robot.core.checkpoint import latest_checkpoint, load_state

    argv = ["train", "pick-cube", "--env.image_obs", "true", "--env.cameras", "front,wrist",
            "--env.image_size", "32,32", "--env.image_shadows", "false", "--image.encoder.small_channels", "8,8",
            "--image.encoder.latent_dim", "16", "--image.grasp.enabled", "true", "--total_env_steps", "60",
            "--learning_starts", "30", "--random_steps", "20", "--eval_every", "60", "--eval_episodes", "1",
            "--checkpoint_every", "60", "--log_every", "30", "--num_demos", "1", "--agent.hidden_dims", "32,32",
            "--agent.batch_size", "16", "--agent.utd_ratio", "2", "--run_root", str(tmp_path)]
    assert main(argv) == 0
    run_dir = next(tmp_path.glob("*pick-cube*"))
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    tensors, _ = load_state(ckpt, "agent")
    assert any(k.startswith("encoder.backbones.front.") for k in tensors)
    assert any(k.startswith("encoder.backbones.wrist.") for k in tensors)
    assert any(k.startswith("grasp_critic.") for k in tensors)
    assert (ckpt / "replay_online.npz").is_file()
    assert main(["eval", str(run_dir), "--episodes", "1"]) == 0


def test_prepare_moves_numpy_and_tensors_to_the_agent_device_with_fixed_dtypes():
    # serl.md 4 / LeRobot: device and dtype mismatches. Images stay uint8 until the encoder normalises
    # them; everything else becomes float32 on the agent's device, whatever the caller passes.
    agent = tiny_agent()
    block = random_block(32)
    block["obs"]["state"] = block["obs"]["state"].astype(np.float64)
    block["next_obs"]["cam"] = torch.from_numpy(block["next_obs"]["cam"])
    block["terminated"] = block["terminated"].astype(bool)
    out = agent.prepare(block)
    assert out["obs"]["cam"].dtype == torch.uint8 and out["next_obs"]["cam"].dtype == torch.uint8
    assert out["obs"]["state"].dtype == torch.float32 and out["terminated"].dtype == torch.float32
    assert {t.device for t in [*out["obs"].values(), *out["next_obs"].values(), out["action"]]} == {agent.device}
    agent.update(block)  # and the update runs on it


def test_n_step_horizon_discounts_the_bootstrap():
    from policies.sac import bootstrap_discount

    batch = {"horizon": torch.tensor([1.0, 3.0])}
    torch.testing.assert_close(bootstrap_discount(batch, 0.9), torch.tensor([0.9, 0.729]))
    assert bootstrap_discount({}, 0.9) == 0.9
