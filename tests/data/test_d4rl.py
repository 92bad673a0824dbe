"""D4RL HDF5: loading with clear errors, q-learning transitions, store import/export, normalized scores."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data.d4rl import (
    d4rl_episodes,
    d4rl_schema,
    export_d4rl_hdf5,
    import_d4rl,
    load_d4rl_hdf5,
    qlearning_transitions,
    rebuild_timeouts,
)
from data.episode_store import EpisodeStore
from data.schema import DataValidationError, EpisodeMetadata, Source
from data.scores import D4RL_REF_SCORES, normalized_score, unnormalized_score

META = EpisodeMetadata(task="hopper-medium-v2", robot="hopper", source=Source.DEMO)


def d4rl_arrays(n: int = 20, seed: int = 0, ends: dict[int, str] | None = None) -> dict[str, np.ndarray]:
    """N rows; `ends` maps row -> "terminal" | "timeout"."""
    rng = np.random.default_rng(seed)
    terminals, timeouts = np.zeros(n, bool), np.zeros(n, bool)
    default = {4: "terminal", 11: "timeout", 15: "terminal"}
    for row, kind in (default if ends is None else ends).items():
        (terminals if kind == "terminal" else timeouts)[row] = True
    return {
        "observations": rng.standard_normal((n, 11)).astype(np.float32),
        "actions": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
        "rewards": rng.standard_normal(n).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def write_h5(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
        f.create_dataset("infos/qpos", data=np.zeros((len(arrays["observations"]), 6)))
        f.create_dataset("metadata/algorithm", data="SAC")
    return path


def naive_qlearning(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row-by-row restatement of D4RL's qlearning_dataset loop (use_timeouts, terminate_on_end=False)."""
    out = {k: [] for k in ("observations", "actions", "next_observations", "rewards", "terminals")}
    for i in range(len(data["observations"]) - 1):
        if data["timeouts"][i]:
            continue
        out["observations"].append(data["observations"][i])
        out["actions"].append(data["actions"][i])
        out["next_observations"].append(data["observations"][i + 1])
        out["rewards"].append(data["rewards"][i])
        out["terminals"].append(bool(data["terminals"][i]))
    return {k: np.array(v) for k, v in out.items()}


# -------------------------------------------------------------------------------------- loading
def test_load_standard_file(tmp_path: Path) -> None:
    arrays = d4rl_arrays()
    arrays["rewards"] = arrays["rewards"][:, None]  # old files: (N, 1)
    arrays["terminals"] = arrays["terminals"].astype(np.float32)  # some files: 0.0 / 1.0
    data = load_d4rl_hdf5(write_h5(tmp_path / "hopper.hdf5", arrays))
    assert sorted(data) == ["actions", "observations", "rewards", "terminals", "timeouts"]
    assert data["rewards"].shape == (20,) and data["terminals"].dtype == bool
    np.testing.assert_array_equal(data["terminals"], d4rl_arrays()["terminals"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.pop("actions"), r"key /actions is missing; found keys \['infos', 'metadata', 'observations'"),
        (lambda a: a.update(actions=a["actions"][:-1]), r"key /actions has shape \(19, 3\); expected 20 rows"),
        (
            lambda a: a.update(rewards=np.zeros((20, 2))),
            r"key /rewards has shape \(20, 2\); expected \(N,\) or \(N, 1\)",
        ),
        (
            lambda a: a.update(observations=a["observations"][:, 0]),
            r"key /observations has shape \(20,\); expected a 2-D",
        ),
        (
            lambda a: a.update(observations=a["observations"].astype("S8")),
            r"key /observations has dtype \|S8; expected float",
        ),
        (
            lambda a: a.update(terminals=np.full(20, 2)),
            r"key /terminals: expected bool \(or 0/1\) flags, got values like \[2",
        ),
        (lambda a: a.pop("timeouts"), r"key /timeouts is missing.*pass max_episode_steps"),
        (
            lambda a: a.update(next_observations=np.zeros((20, 4))),
            r"next_observations has shape \(20, 4\); expected \(20, 11\)",
        ),
    ],
    ids=[
        "missing-key",
        "short-actions",
        "reward-shape",
        "obs-1d",
        "obs-dtype",
        "flag-values",
        "no-timeouts",
        "next-obs",
    ],
)
def test_bad_files_name_file_key_and_expectation(tmp_path: Path, mutate, message: str) -> None:
    arrays = d4rl_arrays()
    mutate(arrays)
    path = write_h5(tmp_path / "bad.hdf5", arrays)
    with pytest.raises(DataValidationError, match=message) as err:
        load_d4rl_hdf5(path)
    assert str(path) in str(err.value)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    path = write_h5(tmp_path / "cut.hdf5", d4rl_arrays(2000))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataValidationError, match=r"cut\.hdf5: cannot be opened as HDF5.*truncated"):
        load_d4rl_hdf5(path)
    with pytest.raises(DataValidationError, match=r"nope\.hdf5: file not found"):
        load_d4rl_hdf5(tmp_path / "nope.hdf5")


def test_rebuild_timeouts_for_old_files(tmp_path: Path) -> None:
    terminals = np.zeros(10, bool)
    terminals[1] = True  # episode 0-1 ends early; then 2-4, 5-7 hit the limit of 3 steps
    np.testing.assert_array_equal(np.flatnonzero(rebuild_timeouts(terminals, 3)), [4, 7])
    arrays = d4rl_arrays(10, ends={1: "terminal"})
    arrays.pop("timeouts")
    data = load_d4rl_hdf5(write_h5(tmp_path / "old.hdf5", arrays), max_episode_steps=3)
    np.testing.assert_array_equal(np.flatnonzero(data["timeouts"]), [4, 7])


# ------------------------------------------------------------------------------------ transitions
@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    flags=st.lists(st.sampled_from(["", "", "", "terminal", "timeout", "both"]), min_size=30, max_size=30),
)
def test_qlearning_matches_the_row_by_row_definition(n: int, flags: list[str]) -> None:
    data = d4rl_arrays(n, ends={})
    data["terminals"] = np.array([f in ("terminal", "both") for f in flags[:n]])
    data["timeouts"] = np.array([f in ("timeout", "both") for f in flags[:n]])
    got, expected = qlearning_transitions(data), naive_qlearning(data)
    assert len(got["observations"]) == len(expected["observations"])
    for key, value in expected.items():
        if len(value):
            np.testing.assert_array_equal(got[key], value, err_msg=key)
    # Episodes keep every transition qlearning keeps, with the same (s, a, r, s') where s' is in-episode.
    episodes = d4rl_episodes(data)
    kept = {row for ep in episodes for row in range(ep["rows"][0], ep["rows"][0] + len(ep["actions"]))}
    assert kept >= {i for i in range(n - 1) if not data["timeouts"][i]}
    assert all(not data["timeouts"][row] for row in kept)


def test_qlearning_keeps_time_out_rows_on_request() -> None:
    data = d4rl_arrays()
    assert len(qlearning_transitions(data)["rewards"]) == 18  # rows 0..18 minus the time-out at 11
    assert len(qlearning_transitions(data, terminate_on_end=True)["rewards"]) == 19


# ------------------------------------------------------------------------------------- the store
def test_import_splits_episodes_like_d4rl(tmp_path: Path) -> None:
    data = d4rl_arrays()  # terminal at 4, time-out at 11, terminal at 15, unfinished 16..19
    store = EpisodeStore.create(tmp_path / "s", d4rl_schema(data))
    assert import_d4rl(data, store, META) == [0, 1, 2, 3]
    lengths = [store.metadata(i).length for i in range(4)]
    assert lengths == [5, 6, 4, 3]  # rows 0-4 | 5-10 (11 dropped) | 12-15 | 16-18 (19 = final obs)
    ep1 = store.episode(1).load(["observation/state", "action", "truncated", "terminated"])
    np.testing.assert_array_equal(ep1["observation/state"], data["observations"][5:12])
    np.testing.assert_array_equal(ep1["action"], data["actions"][5:11])
    assert ep1["truncated"].tolist() == [False] * 5 + [True] and not ep1["terminated"].any()
    assert store.metadata(0).extra["d4rl_rows"] == [0, 4]
    assert "copied" in store.metadata(0).extra["d4rl_final_observation"]
    assert store.validate(deep=True) == 4


def test_store_export_import_round_trip(tmp_path: Path) -> None:
    data = d4rl_arrays(40, seed=3, ends={6: "terminal", 19: "timeout", 30: "terminal", 39: "timeout"})
    a = EpisodeStore.create(tmp_path / "a", d4rl_schema(data))
    import_d4rl(write_h5(tmp_path / "src.hdf5", data), a, META)
    export_d4rl_hdf5(a, tmp_path / "out.hdf5")
    exported = load_d4rl_hdf5(tmp_path / "out.hdf5")
    assert "next_observations" in exported
    b = EpisodeStore.create(tmp_path / "b", d4rl_schema(exported))
    import_d4rl(tmp_path / "out.hdf5", b, META)
    assert len(a) == len(b) == 4
    keys = ["observation/state", "action", "reward", "terminated", "truncated"]
    for i in range(len(a)):
        ea, eb = a.episode(i).load(keys), b.episode(i).load(keys)
        for key in keys:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=f"episode {i} {key}")
    # The exported file's q-learning transitions are exactly the store's, in order: the extra
    # time-out rows that carry final observations are the rows qlearning drops.
    q = qlearning_transitions(exported)
    tr = a.load_transitions()
    assert len(q["rewards"]) == len(tr)
    np.testing.assert_array_equal(q["rewards"], tr.reward)
    np.testing.assert_array_equal(q["actions"], tr.action)
    inside = ~tr.terminated  # a terminal's s' is the next episode's first row, as in D4RL
    np.testing.assert_array_equal(q["next_observations"][inside], tr.observation["state"][tr.next_obs_index][inside])


def test_export_arrays_writes_atomically(tmp_path: Path) -> None:
    data = d4rl_arrays()
    export_d4rl_hdf5(data, tmp_path / "x.hdf5")
    loaded = load_d4rl_hdf5(tmp_path / "x.hdf5")
    for key, value in data.items():
        np.testing.assert_array_equal(loaded[key], value)
    bad = dict(data, terminals=data["terminals"].astype(int))
    with pytest.raises(DataValidationError, match="terminals has dtype int64; expected bool"):
        export_d4rl_hdf5(bad, tmp_path / "y.hdf5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.hdf5"]


def test_export_needs_a_flat_observation(tmp_path: Path) -> None:
    from data.schema import FieldSpec, StoreSchema

    schema = StoreSchema({"cam": FieldSpec((4, 4, 3), "uint8")}, FieldSpec((2,), "float32"))
    store = EpisodeStore.create(tmp_path / "s", schema)
    with pytest.raises(ValueError, match=r"observations \['cam'\]; name the flat \(1-D\) one"):
        export_d4rl_hdf5(store, tmp_path / "x.hdf5")


# ----------------------------------------------------------------------------------------- scores
def test_normalized_scores_from_the_reference_table() -> None:
    assert normalized_score("hopper-medium-v2", 3234.3) == pytest.approx(1.0)
    assert normalized_score("hopper-medium-replay-v2", -20.272305) == pytest.approx(0.0)
    assert normalized_score("antmaze-umaze-v0", 0.7) == pytest.approx(0.7)
    assert normalized_score("ant-expert-v2", 3879.7) == pytest.approx(1.0)  # not antmaze's constants
    assert normalized_score("maze2d-large-v1", 273.99) == pytest.approx(1.0)
    halfway = (12135.0 - 280.178953) / 2
    assert normalized_score("halfcheetah-medium-expert-v2", halfway) == pytest.approx(0.5)
    returns = np.array([0.0, 4.0, 2.0])
    np.testing.assert_allclose(normalized_score("kitchen-mixed-v0", returns), [0.0, 1.0, 0.5])
    for name in ("door-human-v1", "walker2d-random-v2", "relocate-expert-v1", "pen-cloned-v1", "hammer-human-v0"):
        assert unnormalized_score(name, normalized_score(name, 123.0)) == pytest.approx(123.0)
    assert len(D4RL_REF_SCORES) == 13


@pytest.mark.parametrize("name", ["Hopper-v4", "humanoid-medium-v2", "maze2d-umaze-dense-v1", "maze2d-open-v0"])
def test_unknown_env_lists_the_known_ones(name: str) -> None:
    with pytest.raises(KeyError, match=rf"unknown D4RL env '{name}'.*'antmaze', 'door'"):
        normalized_score(name, 1.0)
