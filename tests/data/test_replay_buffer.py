"""Replay buffer and mixed sampling: exact ratios, exact save/load, terminated vs truncated."""

import numpy as np
import pytest

from data.replay_buffer import MixedSampler, ReplayBuffer


def filled(n, value, capacity=100, seed=0):
    buf = ReplayBuffer(obs_dim=3, action_dim=2, capacity=capacity, seed=seed)
    for i in range(n):
        buf.add(np.full(3, value + i), np.zeros(2), float(i), np.full(3, value + i + 1), terminated=(i % 5 == 4))
    return buf


def test_ring_overwrites_oldest():
    buf = filled(12, 0.0, capacity=10)
    assert len(buf) == 10
    assert set(buf.obs[:, 0]) == set(range(2, 12))


def test_mixed_sampler_gives_exact_ratio_in_every_batch_of_a_block():
    online, demo = filled(50, 0.0), filled(50, 1000.0)
    sampler = MixedSampler({"online": online, "demo": demo}, {"online": 0.5, "demo": 0.5}, seed=0)
    block = sampler.sample(batch_size=8, num_batches=4)
    assert block["obs"].shape == (32, 3)
    for k in range(4):
        batch = block["obs"][k * 8 : (k + 1) * 8, 0]
        assert (batch >= 1000).sum() == 4  # half demo rows in *each* minibatch


def test_mixed_sampler_gives_empty_sources_share_to_others():
    online, demo = filled(10, 0.0), ReplayBuffer(3, 2, 10)
    sampler = MixedSampler({"online": online, "demo": demo}, {"online": 0.5, "demo": 0.5})
    assert sampler.counts(8) == {"online": 8}


def test_mixed_sampler_rejects_bad_ratios():
    with pytest.raises(ValueError, match="summing to 1"):
        MixedSampler({"a": filled(2, 0)}, {"a": 0.7})


def test_terminated_stored_separately_from_episode_end():
    buf = filled(10, 0.0)
    assert buf.terminated[:10].tolist() == [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]


def test_save_load_is_exact_and_sampling_continues_identically(tmp_path):
    buf = filled(30, 0.0, seed=3)
    buf.sample(4)
    buf.save(tmp_path / "replay.npz")
    clone = ReplayBuffer(3, 2, 100, seed=123)
    clone.load(tmp_path / "replay.npz")
    assert len(clone) == len(buf) and clone.cursor == buf.cursor
    for key in ("obs", "action", "reward", "next_obs", "terminated"):
        np.testing.assert_array_equal(getattr(clone, key), getattr(buf, key))
    np.testing.assert_array_equal(clone.sample(16)["obs"], buf.sample(16)["obs"])
    assert not list(tmp_path.glob("*.tmp*"))


def test_load_rejects_mismatched_capacity(tmp_path):
    filled(5, 0.0).save(tmp_path / "r.npz")
    with pytest.raises(ValueError, match="capacity mismatch"):
        ReplayBuffer(3, 2, 50).load(tmp_path / "r.npz")
