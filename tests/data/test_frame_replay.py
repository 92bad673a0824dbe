"""FrameReplayBuffer: next observations by index, n-step returns, bootstrap flags, storage, exact resume,
episode-store import and mixed sampling.

Every observation encodes (episode, step) (state[0], state[1] and the image's first pixel), so a batch
row tells which transition it is and what its next observation must be.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data.episode_store import EpisodeStore
from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import MixedSampler, ReplayBuffer
from data.schema import EpisodeMetadata, FieldSpec, Source, StoreSchema

SHAPES = {"state": ((3,), np.float32), "front": ((4, 5, 3), np.uint8)}


def frame(ep: int, t: int) -> dict[str, np.ndarray]:
    image = np.zeros((4, 5, 3), np.uint8)
    image[0, 0] = (ep % 256, t % 256, 7)
    image[1:] = (ep * 31 + t) % 256
    return {"state": np.array([ep, t, 0.5], np.float32), "front": image}


def episode_arrays(ep: int, steps: int) -> dict[str, object]:
    frames = [frame(ep, t) for t in range(steps + 1)]
    return {
        "observations": {k: np.stack([f[k] for f in frames]) for k in SHAPES},
        "action": np.array([[ep, t] for t in range(steps)], np.float32),
        "reward": np.array([ep * 100 + t for t in range(steps)], np.float32),
    }


def add_online(buf: FrameReplayBuffer, ep: int, steps: int, end: str) -> None:
    """`steps` transitions of episode `ep` through `add`; end is "terminated", "truncated" or "open"."""
    for t in range(steps):
        last = t == steps - 1
        buf.add(frame(ep, t), [ep, t], ep * 100 + t, frame(ep, t + 1),
                terminated=last and end == "terminated", truncated=last and end == "truncated")


def rows(batch: dict) -> list[tuple[int, int]]:
    state = np.asarray(batch["obs"]["state"])
    return [(int(e), int(t)) for e, t in state[:, :2]]


def check_rows_are_true_transitions(batch: dict) -> None:
    """Row (ep, t) has action (ep, t) and next_obs (ep, t + horizon); a 1-step row has reward 100 ep + t."""
    for b, (ep, t) in enumerate(rows(batch)):
        horizon = int(batch["horizon"][b])
        for key, value in frame(ep, t + horizon).items():
            np.testing.assert_array_equal(np.asarray(batch["next_obs"][key][b]), value, err_msg=f"({ep}, {t}) {key}")
        np.testing.assert_array_equal(np.asarray(batch["action"][b]), [ep, t])
        if horizon == 1:
            assert float(batch["reward"][b]) == ep * 100 + t


def test_next_obs_by_index_is_the_true_next_obs_across_episodes_and_ring_wraparound():
    """A reference model: the ring keeps the last `capacity` frames written; a transition survives while
    both its frames do. Checked after each of 40 random episodes (online ones that terminate, truncate
    or are abandoned mid-way, and bulk ones, some longer than the ring)."""
    capacity = 13
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=capacity, seed=0)
    rng = np.random.default_rng(1)
    frames: list[tuple[int, int]] = []  # every frame written, in order
    starts: list[int] = []  # positions in `frames` that start a transition
    for ep in range(40):
        steps = int(rng.integers(1, 8)) if ep % 7 else 17  # some episodes longer than the ring
        how = ["terminated", "truncated", "open", "bulk"][int(rng.integers(0, 4))]
        if how == "bulk":
            buf.add_episode(**episode_arrays(ep, steps))
        else:
            add_online(buf, ep, steps, how)
        starts += [len(frames) + t for t in range(steps)]
        frames += [(ep, t) for t in range(steps + 1)]
        expected = {frames[i] for i in starts if i >= len(frames) - capacity}
        assert len(buf) == len(expected)
        batch = buf.sample(400)
        assert set(rows(batch)) == expected  # 400 draws over <= 12 transitions: all appear
        check_rows_are_true_transitions(batch)


def test_storing_each_frame_once_takes_about_half_the_memory_and_keeps_uint8():
    shapes = {"state": ((24,), np.float32), "front": ((64, 64, 3), np.uint8), "wrist": ((64, 64, 3), np.uint8)}
    buf = FrameReplayBuffer(shapes, action_dim=7, capacity=100)
    frame_bytes = 24 * 4 + 2 * 64 * 64 * 3
    separate_next_obs = 100 * (2 * frame_bytes + 7 * 4 + 4 + 1 + 1)  # obs, next_obs, action, reward, flags
    assert 0.45 < buf.nbytes / separate_next_obs < 0.55
    assert buf.obs["front"].dtype == np.uint8
    obs = {k: np.full(s, 9, d) for k, (s, d) in shapes.items()}
    buf.add(obs, np.zeros(7), 0.0, obs, terminated=False, truncated=True)
    batch = buf.sample(4)
    assert batch["obs"]["front"].dtype == np.uint8 and batch["next_obs"]["wrist"].dtype == np.uint8
    assert batch["obs"]["state"].dtype == np.float32
    for key in ("action", "reward", "terminated", "horizon"):
        assert batch[key].dtype == np.float32


def test_n_step_reward_horizon_and_terminated_worked_out_by_hand():
    """n = 3, gamma = 0.5. Episode 0 (rewards 1, 2, 4) terminates at its last step; episode 1 (rewards
    1, 2, 4, 8) is truncated; episode 2 (reward 16) terminates at once; episode 3 (rewards 1, 2) is still
    being recorded. Windows never reach into the following episode."""
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=32, n_step=3, gamma=0.5, seed=0)
    episodes = ((0, [1, 2, 4], "terminated"), (1, [1, 2, 4, 8], "truncated"), (2, [16], "terminated"),
                (3, [1, 2], "open"))
    for ep, rewards, end in episodes:
        for t, r in enumerate(rewards):
            last = t == len(rewards) - 1
            buf.add(frame(ep, t), [ep, t], r, frame(ep, t + 1),
                    terminated=last and end == "terminated", truncated=last and end == "truncated")
    # (ep, t): (reward, horizon, terminated, step of next_obs)
    expected = {
        (0, 0): (1 + 0.5 * 2 + 0.25 * 4, 3, 1, 3),  # the terminal step lies inside the window
        (0, 1): (2 + 0.5 * 4, 2, 1, 3),
        (0, 2): (4, 1, 1, 3),
        (1, 0): (1 + 0.5 * 2 + 0.25 * 4, 3, 0, 3),  # full window, bootstraps from obs 3
        (1, 1): (2 + 0.5 * 4 + 0.25 * 8, 3, 0, 4),
        (1, 2): (4 + 0.5 * 8, 2, 0, 4),  # cut by the truncation: bootstraps from the final obs
        (1, 3): (8, 1, 0, 4),
        (2, 0): (16, 1, 1, 1),
        (3, 0): (1 + 0.5 * 2, 2, 0, 2),  # cut at the newest stored step
        (3, 1): (2, 1, 0, 2),
    }
    batch = buf.sample(500)
    seen = set()
    for b, key in enumerate(rows(batch)):
        reward, horizon, terminated, next_step = expected[key]
        seen.add(key)
        assert batch["reward"][b] == pytest.approx(reward), key
        assert (batch["horizon"][b], batch["terminated"][b]) == (horizon, terminated), key
        np.testing.assert_array_equal(batch["next_obs"]["front"][b], frame(key[0], next_step)["front"])
    assert seen == set(expected)


def test_terminated_cuts_the_bootstrap_and_truncated_keeps_its_own_final_observation():
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=16, seed=0)
    add_online(buf, 0, 2, "terminated")
    add_online(buf, 1, 2, "truncated")
    add_online(buf, 2, 2, "open")
    batch = buf.sample(200)
    for b, (ep, t) in enumerate(rows(batch)):
        assert batch["terminated"][b] == float(ep == 0 and t == 1)
    check_rows_are_true_transitions(batch)  # (1, 1) -> frame (1, 2), not the first frame of episode 2
    assert len(buf) == 6


def test_an_episode_after_a_truncation_starts_fresh_even_from_the_same_observation():
    """An env may reset to exactly the state it was truncated in; the two episodes must not be joined."""
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=8, n_step=2, gamma=0.5)
    buf.add(frame(0, 0), [0, 0], 0.0, frame(0, 1), terminated=False, truncated=True)
    buf.add(frame(0, 1), [0, 1], 1.0, frame(0, 2), terminated=False, truncated=False)
    batch = buf.sample(100)
    assert set(zip(rows(batch), batch["horizon"].tolist(), strict=True)) == {((0, 0), 1.0), ((0, 1), 1.0)}
    check_rows_are_true_transitions(batch)


def test_add_rejects_bad_observations_with_the_key_and_expected_shape():
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=8)
    good = frame(0, 0)
    with pytest.raises(ValueError, match=r"obs\['front'\].*\(4, 5, 3\) uint8"):
        buf.add({**good, "front": np.zeros((4, 5), np.uint8)}, [0, 0], 0.0, good, False, False)
    with pytest.raises(ValueError, match=r"next_obs: expected a dict with keys \['front', 'state'\]"):
        buf.add(good, [0, 0], 0.0, {"state": good["state"]}, False, False)
    with pytest.raises(ValueError, match="only the last step"):
        buf.add_episode(**episode_arrays(0, 3), terminated=[True, False, True])
    with pytest.raises(ValueError, match="empty"):
        buf.sample(2)


def fill_mixed(buf: FrameReplayBuffer) -> None:
    for ep in range(6):
        if ep % 2:
            buf.add_episode(**episode_arrays(ep, 4), truncated=[False, False, False, True])
        else:
            add_online(buf, ep, 5, "terminated" if ep % 4 else "open")


def test_device_resident_buffer_gathers_tensors_on_its_device_equal_to_the_numpy_buffer():
    host = FrameReplayBuffer(SHAPES, action_dim=2, capacity=20, seed=4, n_step=2)
    dev = FrameReplayBuffer(SHAPES, action_dim=2, capacity=20, seed=4, n_step=2, device="cpu")
    fill_mixed(host)
    fill_mixed(dev)
    a, b = host.sample(64), dev.sample(64)
    assert isinstance(b["obs"]["front"], torch.Tensor) and b["obs"]["front"].dtype == torch.uint8
    assert dev.obs["front"].device == torch.device("cpu") and b["reward"].device == torch.device("cpu")
    for key in ("action", "reward", "terminated", "horizon"):
        np.testing.assert_array_equal(b[key].numpy(), a[key])
    for group in ("obs", "next_obs"):
        for key in SHAPES:
            np.testing.assert_array_equal(b[group][key].numpy(), a[group][key])
    assert dev.nbytes == host.nbytes


@pytest.mark.parametrize("device", [None, "cpu"], ids=["numpy", "torch"])
def test_save_load_is_exact_and_continues_the_open_episode(tmp_path, device):
    buf = FrameReplayBuffer(SHAPES, action_dim=2, capacity=20, seed=3, n_step=3, gamma=0.9, device=device)
    fill_mixed(buf)  # wraps the ring
    add_online(buf, 6, 3, "open")
    buf.sample(5)
    buf.save(tmp_path / "replay.npz")
    clone = FrameReplayBuffer(SHAPES, action_dim=2, capacity=20, seed=99, n_step=3, gamma=0.9)
    clone.load(tmp_path / "replay.npz")
    assert len(clone) == len(buf)
    for b in (buf, clone):  # the open episode 6 goes on in both: its obs (6, 3) is already stored
        b.add(frame(6, 3), [6, 3], 603, frame(6, 4), terminated=False, truncated=False)
    mine, theirs = buf.sample(256), clone.sample(256)
    for key in ("action", "reward", "terminated", "horizon"):
        np.testing.assert_array_equal(np.asarray(theirs[key]), np.asarray(mine[key]))
    np.testing.assert_array_equal(theirs["next_obs"]["front"], np.asarray(mine["next_obs"]["front"]))
    horizon = {key: theirs["horizon"][b] for b, key in enumerate(rows(theirs))}
    assert horizon[(6, 1)] == 3  # the window runs on into the step added after loading
    check_rows_are_true_transitions(theirs)
    assert not list(tmp_path.glob("*.tmp*"))
    with pytest.raises(ValueError, match="n_step mismatch"):
        FrameReplayBuffer(SHAPES, action_dim=2, capacity=20, n_step=1, gamma=0.9).load(tmp_path / "replay.npz")


def test_from_episode_store_round_trip(tmp_path):
    schema = StoreSchema(
        observation={"state": FieldSpec((3,), "float32"), "front": FieldSpec((4, 5, 3), "uint8")},
        action=FieldSpec((2,), "float32"),
        frames_per_shard=4,
    )
    ends = {0: "terminated", 1: "truncated", 2: "open"}
    with EpisodeStore.create(tmp_path / "store", schema) as store:
        for ep, steps in ((0, 3), (1, 6), (2, 2)):
            data = episode_arrays(ep, steps)
            source = Source.DEMO if ep < 2 else Source.INTERVENTION
            with store.begin_episode(EpisodeMetadata(task="t", robot="r", source=source)) as writer:
                last = np.arange(steps) == steps - 1
                writer.extend({
                    "observation": {k: v[:-1] for k, v in data["observations"].items()},
                    "action": data["action"], "reward": data["reward"],
                    "terminated": last & (ends[ep] == "terminated"), "truncated": last & (ends[ep] == "truncated"),
                })
                writer.commit({k: v[-1] for k, v in data["observations"].items()})
    store = EpisodeStore.open(tmp_path / "store")
    buf = FrameReplayBuffer.from_episode_store(store, source="demo", seed=0)
    assert (len(buf), buf.capacity) == (9, 11)
    batch = buf.sample(300)
    assert set(rows(batch)) == {(0, t) for t in range(3)} | {(1, t) for t in range(6)}
    check_rows_are_true_transitions(batch)
    terminal = {key for b, key in enumerate(rows(batch)) if batch["terminated"][b]}
    assert terminal == {(0, 2)}
    assert buf.extend_from_store(store, source=Source.INTERVENTION) == 1
    # The ring was full: episode 2's 3 frames overwrite slots 0-2, so every transition of episode 0 is gone.
    assert len(buf) == 8
    batch = buf.sample(300)
    assert set(rows(batch)) == {(1, t) for t in range(6)} | {(2, 0), (2, 1)}
    check_rows_are_true_transitions(batch)


@pytest.mark.parametrize("device", [None, "cpu"], ids=["numpy", "torch"])
def test_mixed_sampler_over_frame_buffers_gives_exact_counts_in_every_batch(device):
    names = ["online", "demo", "intervention", "synthetic"]
    sources = {}
    for i, name in enumerate(names):  # source i holds episodes 100 * i ...
        sources[name] = FrameReplayBuffer(SHAPES, action_dim=2, capacity=40, seed=i, device=device)
        for ep in range(3):
            add_online(sources[name], 100 * i + ep, 4, "truncated")
    ratios = {"online": 0.5, "demo": 0.25, "intervention": 0.125, "synthetic": 0.125}
    sampler = MixedSampler(sources, ratios, seed=0)
    block = sampler.sample(batch_size=16, num_batches=3)
    assert block["next_obs"]["front"].shape == (48, 4, 5, 3) and block["horizon"].shape == (48,)
    for k in range(3):
        eps = np.asarray(block["obs"]["state"][k * 16 : (k + 1) * 16, 0]) // 100
        assert np.bincount(eps.astype(int), minlength=4).tolist() == [8, 4, 2, 2]
    check_rows_are_true_transitions(block)


def test_mixed_sampler_refuses_to_mix_flat_and_frame_buffers():
    frames = FrameReplayBuffer(SHAPES, action_dim=2, capacity=10)
    add_online(frames, 0, 3, "terminated")
    flat = ReplayBuffer(obs_dim=3, action_dim=2, capacity=10)
    flat.add(np.zeros(3), np.zeros(2), 0.0, np.zeros(3), terminated=False)
    sampler = MixedSampler({"online": flat, "demo": frames}, {"online": 0.5, "demo": 0.5})
    with pytest.raises(ValueError, match="source 'demo' gives batch keys"):
        sampler.sample(8)
