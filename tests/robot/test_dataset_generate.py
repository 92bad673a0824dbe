"""`robot dataset generate` mechanics on a tiny Hopper budget: levels, D4RL keys, flags, metadata, replay."""

import json

import h5py
import numpy as np
import pytest

import envs
from data.d4rl import load_d4rl_hdf5
from data.episode_store import EpisodeStore
from robot.dataset_generate import GenerateConfig, choose_medium, generate, replay_episodes
from robot.dataset_replay import replay_episode

TINY = ("agent.hidden_dims=64,64", "agent.num_critics=2", "agent.batch_size=64", "random_steps=500",
        "learning_starts=500", "log_every=500")


@pytest.fixture(scope="module")
def hopper(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    config = GenerateConfig(task="hopper", train_steps=2400, dataset_steps=400, checkpoint_every=800, eval_episodes=3,
                            seed=0, out=str(out), train_overrides=TINY)
    return out, generate(config)


def test_every_level_is_written_in_both_formats(hopper):
    out, summary = hopper
    assert set(summary["levels"]) == {"random", "medium", "expert", "medium-replay"}
    for level in summary["levels"]:
        assert (out / f"hopper-{level}.hdf5").is_file() and (out / f"hopper-{level}" / "zarr.json").is_file()
    assert json.loads((out / "hopper-summary.json").read_text())["expert_step"] == 2400
    from robot.run_dir import load_config  # the SAC run folder of a config-less task loads back (resume)

    config = load_config(out / "hopper-sac")
    assert config.task == "hopper" and config.env is None and config.total_env_steps == 2400


def test_d4rl_keys_shapes_and_episode_flags(hopper):
    out, summary = hopper
    for level in ("random", "medium", "expert", "medium-replay"):
        data = load_d4rl_hdf5(out / f"hopper-{level}.hdf5")
        n = len(data["observations"])
        assert data["observations"].shape == (n, 11) and data["actions"].shape == (n, 3)
        assert data["next_observations"].shape == (n, 11) and data["rewards"].shape == (n,)
        assert np.abs(data["actions"]).max() <= 1.0
        expected = summary["medium_step"] if level == "medium-replay" else 400
        assert n == expected, level
        ends = data["terminals"] | data["timeouts"]
        assert not (data["terminals"] & data["timeouts"]).any()
        assert ends[-1]  # the budget cut or a time limit ends the last episode
        # within an episode the next observation is the following row's observation
        inside = ~ends[:-1]
        np.testing.assert_array_equal(data["next_observations"][:-1][inside], data["observations"][1:][inside])
        with h5py.File(out / f"hopper-{level}.hdf5") as f:
            assert f["metadata/policy_level"][()].decode() == level
            assert f["metadata/algorithm"][()].decode() == "SAC" and int(f["metadata/seed"][()]) == 0
            assert int(f["metadata/dataset_steps"][()]) == n
            if level != "medium-replay":  # D4RL's MuJoCo state of every row
                assert f["infos/qpos"].shape == (n, 6) and f["infos/qvel"].shape == (n, 6)


def test_random_data_comes_from_uniform_actions(hopper):
    data = load_d4rl_hdf5(hopper[0] / "hopper-random.hdf5")
    assert data["actions"].std() == pytest.approx(2 / np.sqrt(12), rel=0.15)


def test_expert_beats_random_and_medium_sits_between_by_the_rule(hopper):
    _out, summary = hopper
    assert summary["expert_return"] > summary["random_return"] + 50
    returns = {int(k): v for k, v in summary["checkpoint_returns"].items()}
    assert summary["medium_step"] == choose_medium(returns, summary["random_return"], 2400, 1 / 3)
    assert summary["medium_step"] != 2400


def test_store_metadata_and_replay_of_medium_replay(hopper):
    out, summary = hopper
    with EpisodeStore.open(out / "hopper-medium-replay") as store:
        meta = store.metadata(0)
        assert meta.task == "hopper" and meta.seed is not None
        assert meta.extra["policy_level"] == "medium-replay" and meta.extra["policy_steps"] == summary["medium_step"]
        assert sum(store.metadata(i).length for i in range(len(store))) == summary["medium_step"]
        # episode boundaries and seeds rebuilt from the replay buffer reproduce training exactly
        for i in (0, len(store) - 1):
            report = replay_episode(store, i)
            assert report.summary()["joint_pos"]["max"] == 0.0 and not report.ended_early


def test_panda_data_logs_arm_joints_and_replays_exactly(tmp_path):
    generate(GenerateConfig(task="reach", levels=("random",), dataset_steps=60, eval_episodes=1, out=str(tmp_path)))
    with EpisodeStore.open(tmp_path / "reach-random") as store:
        assert [store.metadata(i).length for i in range(len(store))] == [50, 10]
        assert "info/joint_pos_6" in list(store.episode(0).keys())
        summary = replay_episode(store, 0).summary()
        assert summary["joint_pos"]["max"] == 0.0 and summary["tcp_pos"]["max"] == 0.0
    with h5py.File(tmp_path / "reach-random.hdf5") as f:
        assert f["infos/qpos"].shape[0] == 60 and f["metadata/task"][()].decode() == "reach"


def test_choose_medium_is_a_third_of_the_way_from_random():
    returns = {1: 10.0, 2: 40.0, 3: 80.0, 4: 100.0}
    assert choose_medium(returns, random_return=10.0, expert_step=4, fraction=1 / 3) == 2  # target 40
    assert choose_medium(returns, random_return=-50.0, expert_step=4, fraction=1 / 3) == 1  # target 0
    assert choose_medium({7: 5.0}, 0.0, 7, 1 / 3) == 7  # a lone checkpoint is both


def test_replay_buffer_boundaries_follow_resets_and_terminals():
    space = envs.make("hopper").action_space
    obs = np.arange(6, dtype=np.float32)[:, None].repeat(2, 1)
    next_obs = obs + 1
    next_obs[2] = [50, 50]  # episode 1 ends after row 2 (time-out: row 3 starts from a reset)
    terminated = np.array([0, 0, 0, 0, 1, 0], np.float32)  # episode 2 ends by termination at row 4
    buffer = {"obs": obs, "next_obs": next_obs, "action": np.zeros((6, 3), np.float32),
              "reward": np.ones(6, np.float32), "terminated": terminated, "size": 6, "cursor": 6, "capacity": 10}
    episodes = replay_episodes(buffer, space, train_seed=0)
    assert [len(e.actions) for e in episodes] == [3, 2, 1]
    assert [bool(e.truncated[-1]) for e in episodes] == [True, False, True]
    assert [bool(e.terminated[-1]) for e in episodes] == [False, True, False]
    np.testing.assert_array_equal(episodes[0].observations[-1], [50, 50])
    assert len({e.seed for e in episodes}) == 3


def test_locomotion_tasks_are_registered_without_config_or_expert():
    assert {"hopper", "halfcheetah", "walker2d"} <= set(envs.task_names())
    assert envs.make("walker2d").observation_space.shape == (17,)
    with pytest.raises(TypeError, match="task 'hopper' takes no config"):
        envs.make("hopper", config=object())
    with pytest.raises(ValueError, match="task 'halfcheetah' has no scripted expert"):
        envs.make_expert("halfcheetah", noise_std=0.0, seed=0)


def test_bad_options_are_refused(tmp_path):
    with pytest.raises(ValueError, match="levels: expected some of random, medium, expert, medium-replay"):
        GenerateConfig(levels=("good",))
    with pytest.raises(ValueError, match="train_overrides: expected KEY=VALUE"):
        GenerateConfig(train_overrides=("agent.utd_ratio",))
    (tmp_path / "reach-random.hdf5").write_bytes(b"")
    with pytest.raises(FileExistsError, match="reach-random.hdf5: already exists"):
        generate(GenerateConfig(task="reach", levels=("random",), dataset_steps=10, out=str(tmp_path)))
