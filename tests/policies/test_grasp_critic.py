"""Grasp critic (HIL-SERL): discrete gripper index, double-DQN target by hand, the toggle penalty
reaching its reward, and the hybrid image agent acting with it."""

import numpy as np
import torch

import envs
from data.frame_replay import FrameReplayBuffer
from policies.grasp_critic import GraspCritic, double_dqn_target, grasp_command, grasp_index, grasp_loss
from policies.image_sac import obs_spec_of
from tests.policies.test_image_sac import DotTargetEnv, random_block, tiny_agent


def test_gripper_index_uses_the_env_thresholds():
    a = torch.tensor([-1.0, -0.5, -0.49, 0.0, 0.49, 0.5, 1.0])
    assert grasp_index(a).tolist() == [0, 0, 1, 1, 1, 2, 2]
    assert grasp_command(torch.arange(3)).tolist() == [-1.0, 0.0, 1.0]


def test_double_dqn_target_by_hand():
    reward = torch.tensor([1.0, -0.1, 0.5])
    terminated = torch.tensor([0.0, 0.0, 1.0])
    discount = torch.tensor([0.9, 0.81, 0.9])  # gamma ** horizon (row 2: a 2-step transition)
    next_online = torch.tensor([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0], [0.0, 0.0, 9.0]])
    next_target = torch.tensor([[5.0, 1.0, 7.0], [2.0, 4.0, 6.0], [1.0, 1.0, 1.0]])
    # Row 0: online argmax = 1 -> target value 1.0 (not the target's own max 7.0): 1 + 0.9 * 1.0.
    # Row 1: online argmax = 0 -> 2.0: -0.1 + 0.81 * 2.0. Row 2: terminal -> reward only.
    expected = torch.tensor([1.0 + 0.9 * 1.0, -0.1 + 0.81 * 2.0, 0.5])
    torch.testing.assert_close(double_dqn_target(reward, terminated, discount, next_online, next_target), expected)
    q = torch.tensor([[1.0, 2.0, 3.0], [0.0, 1.0, 0.0], [4.0, 4.0, 4.0]])
    index = torch.tensor([2, 1, 0])
    expected_loss = ((3.0 - expected[0]) ** 2 + (1.0 - expected[1]) ** 2 + (4.0 - expected[2]) ** 2) / 3
    torch.testing.assert_close(grasp_loss(q, index, expected), expected_loss)


def test_toggle_penalty_reaches_the_grasp_target():
    """The env subtracts its toggle penalty from the reward; the buffer stores that reward, and the
    grasp critic's target is built from it in every critic step (LeRobot dropped it, serl.md 3.1)."""
    config = envs.get_task("pick-cube").config_cls(gripper_toggle_penalty=0.25)
    env = envs.make("pick-cube", config)
    obs, _ = env.reset(seed=0)
    buffer = FrameReplayBuffer({"state": ((obs.shape[0],), np.float32)}, 4, capacity=16)
    rewards = []
    for gripper in (0.0, 1.0, 1.0, -1.0):  # stay, close (toggle), hold, open (toggle)
        action = np.array([0.0, 0.0, 0.0, gripper], np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add({"state": obs}, action, reward, {"state": next_obs}, terminated, truncated)
        rewards.append(reward)
        obs = next_obs
    env.close()
    # Far from the cube the task reward is constant, so toggles show as exactly the penalty.
    assert np.allclose([rewards[1] - rewards[0], rewards[2] - rewards[0], rewards[3] - rewards[0]],
                       [-0.25, 0.0, -0.25])
    batch = buffer.sample(64, np.random.default_rng(0))
    net = GraspCritic(obs.shape[0], (16,))
    with torch.no_grad():
        nxt = torch.as_tensor(batch["next_obs"]["state"])
        target = double_dqn_target(torch.as_tensor(batch["reward"]), torch.as_tensor(batch["terminated"]), 0.9,
                                   net(nxt), net(nxt))
        by_hand = torch.as_tensor(batch["reward"]) + 0.9 * net(nxt).max(-1).values
    torch.testing.assert_close(target, by_hand)
    # The penalised rewards are among the rows the target was built from.
    assert set(np.round(batch["reward"], 5)) == set(np.round(np.float32(rewards), 5))
    assert min(batch["reward"]) == np.float32(rewards[1])


def test_hybrid_agent_learns_gripper_through_the_critic_step_and_acts_with_it():
    agent = tiny_agent(grasp=True, action_dim=3)
    assert agent.actor.head.out_features == 2 * 2  # arm part only: mean and log-std of 2 dims
    assert agent.target_entropy == -1.5  # -|A|/2 of the full action (HIL-SERL)
    grasp_ids = {id(p) for p in agent.grasp_critic.parameters()}
    assert grasp_ids <= {id(p) for p in agent.critic_updater.params}
    before = [p.clone() for p in agent.grasp_critic.parameters()]
    metrics = agent.update(random_block(32, action_dim=3))
    assert "train/grasp_critic_loss" in metrics
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.grasp_critic.parameters(), strict=True))
    # The grasp loss does not reach the encoder (stop-gradient like the actor).
    batch = agent.prepare(random_block(32, action_dim=3))
    agent.critic_loss(batch, torch.arange(2))
    feats, next_online, next_target = agent._grasp_features
    assert not feats.requires_grad and not next_online.requires_grad
    obs, _ = DotTargetEnv().reset(seed=0)
    action = agent.act(obs, deterministic=True)
    assert action.shape == (3,) and action[-1] in (-1.0, 0.0, 1.0)
    assert obs_spec_of(DotTargetEnv.observation_space)["cam"][0] == (16, 16, 3)
