"""Minari HDF5 import: T + 1 observations per episode, Box and Dict spaces, clear errors."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from data.episode_store import EpisodeStore
from data.minari import import_minari, minari_schema, read_minari_hdf5
from data.schema import DataValidationError, EpisodeMetadata, Source

META = EpisodeMetadata(task="pointmaze", robot="point", source=Source.DEMO)


def episode(steps: int, seed: int, dict_obs: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    obs = rng.standard_normal((steps + 1, 4))  # float64, as Minari stores Box observations
    ep = {
        "actions": rng.uniform(-1, 1, (steps, 2)).astype(np.float32),
        "rewards": rng.standard_normal(steps),
        "terminations": np.arange(steps) == steps - 1 if seed % 2 else np.zeros(steps, bool),
        "truncations": np.zeros(steps, bool) if seed % 2 else np.arange(steps) == steps - 1,
    }
    if dict_obs:
        ep["observations"] = {"observation": obs, "achieved_goal": obs[:, :2], "desired_goal": obs[:, 2:]}
    else:
        ep["observations"] = obs
    return ep


def write_tree(group: h5py.Group, tree: dict) -> None:
    for key, value in tree.items():
        if isinstance(value, dict):
            write_tree(group.create_group(key), value)
        else:
            group.create_dataset(key, data=value)


def write_minari(path: Path, episodes: list[dict], seeds: bool = True) -> Path:
    with h5py.File(path, "w") as f:
        for i, ep in enumerate(episodes):
            g = f.create_group(f"episode_{i}")
            if seeds:
                g.attrs["seed"] = 100 + i
            g.attrs["total_steps"] = len(ep["actions"])
            write_tree(g, ep)
            g.create_dataset("infos/success", data=np.zeros(len(ep["actions"]), bool))
    return path


def test_import_box_observations(tmp_path: Path) -> None:
    episodes = [episode(n, i) for i, n in enumerate([5, 1, 12])]
    path = write_minari(tmp_path / "main_data.hdf5", episodes)
    store = EpisodeStore.create(tmp_path / "s", minari_schema(path))
    assert store.schema.observation["state"].shape == (4,)
    assert import_minari(path, store, META) == [0, 1, 2]
    for i, ep in enumerate(episodes):
        got = store.episode(i).load(["observation/state", "action", "reward", "terminated", "truncated"])
        np.testing.assert_allclose(got["observation/state"], ep["observations"], rtol=1e-6)  # T + 1 rows
        np.testing.assert_array_equal(got["action"], ep["actions"])
        np.testing.assert_array_equal(got["terminated"], ep["terminations"])
        np.testing.assert_array_equal(got["truncated"], ep["truncations"])
        assert store.metadata(i).seed == 100 + i
        assert store.metadata(i).extra == {"minari_source": "main_data.hdf5", "minari_episode_id": i}
    assert store.validate(deep=True) == 3


def test_import_dict_observations_in_id_order(tmp_path: Path) -> None:
    episodes = [episode(3, i, dict_obs=True) for i in range(11)]  # episode_10 sorts after episode_9
    path = write_minari(tmp_path / "main_data.hdf5", episodes, seeds=False)
    assert [ep.id for ep in read_minari_hdf5(path)] == list(range(11))
    store = EpisodeStore.create(tmp_path / "s", minari_schema(path))
    assert sorted(store.schema.observation) == ["achieved_goal", "desired_goal", "observation"]
    import_minari(path, store, META)
    got = store.episode(10).load(["observation/desired_goal"])["observation/desired_goal"]
    np.testing.assert_allclose(got, episodes[10]["observations"]["desired_goal"], rtol=1e-6)
    assert store.metadata(10).seed is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda ep: ep.update(observations=ep["observations"][:-1]),
            r"key /episode_1/observations has shape \(5, 4\); expected 6 rows",
        ),
        (lambda ep: ep.pop("terminations"), r"key /episode_1/terminations is missing; found keys \['actions'"),
        (
            lambda ep: ep.update(rewards=ep["rewards"][:, None]),
            r"key /episode_1/rewards has shape \(5, 1\); expected a 1-D",
        ),
        (
            lambda ep: ep.update(actions=ep["actions"].astype("S4")),
            r"key /episode_1/actions has dtype \|S4; expected bool",
        ),
        (
            lambda ep: ep.update(truncations=np.full(5, 3)),
            r"key /episode_1/truncations: expected bool \(or 0/1\) flags",
        ),
        (
            lambda ep: ep.update(observations={"a": {"b": np.zeros((6, 1))}}),
            r"key /episode_1/observations/a is a group; nested Dict observations are not supported",
        ),
    ],
    ids=["obs-rows", "missing-key", "reward-shape", "action-dtype", "flag-values", "nested-dict"],
)
def test_bad_episodes_name_file_key_and_expectation(tmp_path: Path, mutate, message: str) -> None:
    bad = episode(5, 1)
    mutate(bad)
    path = write_minari(tmp_path / "bad.hdf5", [episode(2, 0), bad])
    with pytest.raises(DataValidationError, match=message) as err:
        list(read_minari_hdf5(path))
    assert str(path) in str(err.value)


def test_truncated_or_empty_file(tmp_path: Path) -> None:
    path = write_minari(tmp_path / "main_data.hdf5", [episode(400, i) for i in range(4)])
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(DataValidationError, match=r"main_data\.hdf5: cannot be opened as HDF5"):
        list(read_minari_hdf5(path))
    with h5py.File(tmp_path / "empty.hdf5", "w") as f:
        f.create_dataset("observations", data=np.zeros(3))
    with pytest.raises(
        DataValidationError, match=r"empty\.hdf5: no episode_<id> groups; found keys \['observations'\]"
    ):
        list(read_minari_hdf5(tmp_path / "empty.hdf5"))
