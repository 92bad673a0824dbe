"""Replaying logged episodes in simulation: exact for our own recordings, divergence when actions differ."""

import dataclasses

import numpy as np
import pytest

import envs
from data.episode_store import EpisodeStore
from data.schema import DataValidationError, EpisodeMetadata, FieldSpec, Source, StoreSchema
from envs.panda_pick_cube import PandaPickCubeConfig
from robot.config import to_dict
from robot.dataset_replay import ReplayMismatchError, replay_episode
from robot.demo_store import write_demos
from robot.demos import collect_demos, episode_seed


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return collect_demos("pick-cube", 1, noise_std=0.1, seed=0)[0]


def demo_store(path, episode):
    write_demos(path, envs.get_task("pick-cube"), [episode], noise_std=0.1)
    return EpisodeStore.open(path)


def image_store(path, steps=8, seed=0):
    """A pick-cube episode with a 32 x 48 front camera, recorded by the scripted expert."""
    config = PandaPickCubeConfig(image_obs=True, cameras=("front",), image_size=(32, 48), image_shadows=False)
    env = envs.make("pick-cube", config)
    expert = envs.make_expert("pick-cube", noise_std=0.0, seed=seed, config=config)
    reset_seed = episode_seed(seed, 3, 0)
    obs, info = env.reset(seed=reset_seed)
    schema = StoreSchema(observation={"state": FieldSpec((14,), "float32"), "front": FieldSpec((32, 48, 3), "uint8")},
                         action=FieldSpec((4,), "float32"), frames_per_shard=4)
    meta = EpisodeMetadata(task="pick-cube", robot="panda_sim", source=Source.DEMO, seed=reset_seed,
                           extra={"env_config": to_dict(config)})
    with EpisodeStore.create(path, schema) as store, store.begin_episode(meta) as writer:
        for _ in range(steps):
            action = np.asarray(expert(obs, info), np.float32)
            next_obs, reward, terminated, truncated, info = env.step(action)
            writer.append({"observation": obs, "action": action, "reward": reward, "terminated": terminated,
                           "truncated": truncated})
            obs = next_obs
        writer.commit(obs)
    env.close()
    return EpisodeStore.open(path)


def test_own_recording_replays_exactly(demo, tmp_path):
    report = replay_episode(demo_store(tmp_path / "s", demo), 0)
    assert report.steps == report.logged_steps == len(demo) and not report.ended_early
    assert report.initial_error == 0.0
    summary = report.summary()
    assert set(summary) == {"tcp_pos", "observation"}
    assert summary["tcp_pos"] == {"mean": 0.0, "max": 0.0, "final": 0.0}
    assert report.replayed_return == pytest.approx(report.logged_return)


def test_changed_actions_show_as_growing_divergence(demo, tmp_path):
    rng = np.random.default_rng(0)
    noisy = dataclasses.replace(demo, action=np.clip(demo.action + rng.normal(0, 0.5, demo.action.shape), -1, 1)
                                .astype(np.float32))
    # the logged observations are the original ones; the replay executes the changed actions
    report = replay_episode(demo_store(tmp_path / "s", noisy), 0)
    tcp = report.per_step["tcp_pos"]
    assert len(tcp) == report.steps and tcp.max() > 0.005  # metres
    assert report.summary()["tcp_pos"]["final"] == pytest.approx(tcp[-1])


def test_wrong_seed_is_an_initial_state_mismatch(demo, tmp_path):
    store = demo_store(tmp_path / "s", dataclasses.replace(demo, seed=demo.seed + 1))
    with pytest.raises(ReplayMismatchError, match=r"episode 0: reset with seed \d+ gives an initial state .* away"):
        replay_episode(store, 0)


def test_unknown_seed_or_task_is_refused(demo, tmp_path):
    store = demo_store(tmp_path / "s", demo)
    meta_path = store.path / "episodes/000000/zarr.json"
    text = meta_path.read_text()
    meta_path.write_text(text.replace(f'"seed": {demo.seed}', '"seed": null'))
    with pytest.raises(DataValidationError, match="metadata seed is None; replay needs the reset seed"):
        replay_episode(EpisodeStore.open(store.path), 0)
    meta_path.write_text(text.replace('"task": "pick-cube"', '"task": "real-kitchen"'))
    with pytest.raises(DataValidationError, match="metadata task 'real-kitchen' is not a simulated task"):
        replay_episode(EpisodeStore.open(store.path), 0)


def test_side_by_side_video_of_logged_and_replayed_frames(tmp_path):
    from data.lerobot import read_video

    store = image_store(tmp_path / "img")
    report = replay_episode(store, 0, video_path=tmp_path / "side.mp4")
    assert report.summary()["tcp_pos"]["max"] == 0.0
    frames = read_video(tmp_path / "side.mp4", fps=10)
    assert frames.shape == (9, 32, 96, 3)  # T + 1 frames, logged | replayed
    logged = store.episode(0).load(["observation/front"])["observation/front"]
    left, right = frames[..., :48, :].astype(int), frames[..., 48:, :].astype(int)
    assert np.abs(left - logged).mean() < 8 and np.abs(left - right).mean() < 8
    with pytest.raises(DataValidationError, match=r"camera 'wrist' is not among the store's image observations"):
        replay_episode(store, 0, video_path=tmp_path / "x.mp4", camera="wrist")
