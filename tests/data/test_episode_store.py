"""Episode store: round trips, atomic visibility, validation errors, readers beside a writer."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.episode_store import EpisodeStore
from data.schema import (
    SCHEMA_VERSION,
    Codec,
    DataValidationError,
    EpisodeMetadata,
    FieldSpec,
    Source,
    StoreError,
    StoreSchema,
)
from data.zarr_layout import ArrayReader

SCHEMA = StoreSchema(
    observation={"front": FieldSpec((8, 10, 3), "uint8"), "state": FieldSpec((5,), "float32")},
    action=FieldSpec((3,), "float32"),
    frames_per_shard=4,
)
META = EpisodeMetadata(task="pick_cube", robot="panda_sim", source=Source.DEMO, seed=7, config_hash="abc")


def make_episode(steps: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "observation/front": rng.integers(0, 256, (steps + 1, 8, 10, 3), dtype=np.uint8),
        "observation/state": rng.standard_normal((steps + 1, 5)).astype(np.float32),
        "action": rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
        "reward": rng.standard_normal(steps).astype(np.float32),
        "terminated": np.arange(steps) == steps - 1,
        "truncated": np.zeros(steps, dtype=bool),
        "timestamp_s": np.arange(steps) * 0.1,
        "intervention": rng.random(steps) < 0.3,
        "language_instruction": np.array(["pick the cube"] * steps),
        "language_correction": np.array(["" if t % 3 else f"lower {t}" for t in range(steps)]),
    }


def step(data: dict[str, np.ndarray], t: int, **info: object) -> dict[str, object]:
    out = {
        "observation": {"front": data["observation/front"][t], "state": data["observation/state"][t]},
        "action": data["action"][t],
        "reward": float(data["reward"][t]),
        "terminated": bool(data["terminated"][t]),
        "truncated": bool(data["truncated"][t]),
        "timestamp_s": float(data["timestamp_s"][t]),
        "intervention": bool(data["intervention"][t]),
        "language_instruction": str(data["language_instruction"][t]),
        "language_correction": str(data["language_correction"][t]),
    }
    if info:
        out["info"] = info
    return out


def final(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"front": data["observation/front"][-1], "state": data["observation/state"][-1]}


def record(store: EpisodeStore, data: dict[str, np.ndarray], meta: EpisodeMetadata = META, **commit) -> int:
    with store.begin_episode(meta) as writer:
        for t in range(len(data["action"])):
            writer.append(step(data, t, grip_force_n=float(t) * 0.5, contact=t % 2 == 0))
        return writer.commit(final(data), **commit)


def assert_same(store: EpisodeStore, index: int, data: dict[str, np.ndarray]) -> None:
    got = store.episode(index).load(data.keys())
    for key, expected in data.items():
        np.testing.assert_array_equal(got[key], expected, err_msg=key)


@pytest.fixture
def store(tmp_path: Path) -> EpisodeStore:
    with EpisodeStore.create(tmp_path / "demos", SCHEMA) as s:
        yield s


# ------------------------------------------------------------------------------------- round trips
def test_record_and_read_back_every_field(store: EpisodeStore) -> None:
    data = make_episode(11)
    index = record(store, data, success=True)
    assert index == 0 and len(store) == 1
    assert_same(store, 0, data)
    ep = store.episode(0)
    assert len(ep) == 11
    assert ep.metadata.success is True and ep.metadata.length == 11 and ep.metadata.seed == 7
    assert ep.metadata.committed_unix_s >= ep.metadata.started_unix_s
    info = ep.load(["info/grip_force_n", "info/contact"])
    np.testing.assert_array_equal(info["info/grip_force_n"], np.arange(11) * 0.5)
    assert info["info/contact"].dtype == bool
    # The zarr API sees the same data: the store is a plain zarr v3 hierarchy.
    root = zarr.open_group(store.path, mode="r")
    np.testing.assert_array_equal(root["episodes/000000/observation/front"][...], data["observation/front"])
    assert store.validate(deep=True) == 1


def test_reader_opened_separately_sees_committed_episodes(store: EpisodeStore) -> None:
    for seed in range(3):
        record(store, make_episode(3 + seed * 4, seed), meta=EpisodeMetadata("t", "r", Source.ONLINE, seed=seed))
    reader = EpisodeStore.open(store.path)
    assert len(reader) == 3
    for seed in range(3):
        assert_same(reader, seed, make_episode(3 + seed * 4, seed))
    assert [e.index for e in reader.episodes(source="online")] == [0, 1, 2]
    assert reader.episodes(source=Source.DEMO) == []


def test_episode_is_invisible_until_commit(store: EpisodeStore) -> None:
    data = make_episode(9)
    reader = EpisodeStore.open(store.path)
    writer = store.begin_episode(META)
    for t in range(9):
        writer.append(step(data, t))
    assert reader.refresh() == 0 and len(EpisodeStore.open(store.path)) == 0
    writer.commit(final(data))
    assert len(reader) == 0, "a reader keeps its snapshot until refresh()"
    assert reader.refresh() == 1
    assert_same(reader, 0, data)


def test_abort_and_exception_leave_the_store_unchanged(store: EpisodeStore) -> None:
    data = make_episode(6)
    writer = store.begin_episode(META)
    writer.append(step(data, 0))
    writer.abort()
    with pytest.raises(RuntimeError, match="boom"), store.begin_episode(META) as writer:
        writer.append(step(data, 0))
        raise RuntimeError("boom")
    assert len(store) == 0
    assert os.listdir(store.path / "staging") == ["zarr.json"]
    with pytest.raises(StoreError, match="without commit"), store.begin_episode(META) as writer:
        writer.append(step(data, 0))
    record(store, data)
    assert len(store) == 1


def test_filters_and_flat_transitions(store: EpisodeStore) -> None:
    lengths = [1, 4, 7]
    sources = [Source.DEMO, Source.ONLINE, Source.DEMO]
    for i, (n, src) in enumerate(zip(lengths, sources, strict=True)):
        record(store, make_episode(n, i), meta=EpisodeMetadata("t", "r", src, seed=i), success=i != 1)
    assert [e.index for e in store.episodes(source="demo")] == [0, 2]
    assert [e.index for e in store.episodes(success=False)] == [1]
    tr = store.load_transitions()
    assert len(tr) == sum(lengths)
    np.testing.assert_array_equal(tr.episode_starts, [0, 1, 5, 12])
    assert tr.observation["front"].shape == (sum(lengths) + 3, 8, 10, 3)
    for i, n in enumerate(lengths):
        data = make_episode(n, i)
        sel = tr.episode_index == i
        np.testing.assert_array_equal(tr.action[sel], data["action"])
        np.testing.assert_array_equal(tr.observation["state"][tr.obs_index[sel]], data["observation/state"][:-1])
        np.testing.assert_array_equal(tr.observation["front"][tr.next_obs_index[sel]], data["observation/front"][1:])
        np.testing.assert_array_equal(tr.terminated[sel], data["terminated"])
    only_demo = store.load_transitions(["state"], episodes=[2])
    assert set(only_demo.observation) == {"state"} and len(only_demo) == 7


def test_random_access_reads_match_zarr(store: EpisodeStore) -> None:
    episodes = [make_episode(n, n) for n in (2, 9, 5)]
    for data in episodes:
        record(store, data)
    rng = np.random.default_rng(0)
    ep = rng.integers(0, 3, 64)
    t = np.array([rng.integers(0, len(episodes[e]["action"]) + 1) for e in ep])  # T is the final obs
    out = store.read_steps(ep, t, ["observation/front", "observation/state"])
    for b in range(64):
        arr = store.episode(int(ep[b])).array("observation/front")
        np.testing.assert_array_equal(out["observation/front"][b], arr[int(t[b])])
        np.testing.assert_array_equal(out["observation/state"][b], episodes[ep[b]]["observation/state"][t[b]])
    with pytest.raises(IndexError, match="action"):
        store.read_steps(np.array([0]), np.array([2]), ["action"])  # 2 steps: no action row 2


def test_extend_equals_append(tmp_path: Path) -> None:
    data = make_episode(10, 3)
    a = EpisodeStore.create(tmp_path / "a", SCHEMA)
    record(a, data)
    b = EpisodeStore.create(tmp_path / "b", SCHEMA)
    with b.begin_episode(META) as writer:
        block = {k: v for k, v in data.items() if not k.startswith("observation/")}
        block["observation"] = {"front": data["observation/front"][:-1], "state": data["observation/state"][:-1]}
        block["info"] = {"grip_force_n": np.arange(10) * 0.5, "contact": np.arange(10) % 2 == 0}
        writer.extend({k: v for k, v in block.items()})
        writer.commit(final(data))
    assert_same(b, 0, data)
    for key in ("info/grip_force_n", "info/contact"):
        np.testing.assert_array_equal(a.episode(0).load([key])[key], b.episode(0).load([key])[key])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    lengths=st.lists(st.integers(1, 13), min_size=1, max_size=3),
    frames_per_shard=st.integers(1, 5),
    codec=st.sampled_from(list(Codec)),
    blocks=st.integers(1, 4),
)
def test_round_trip_any_length_shard_size_and_codec(
    tmp_path_factory: pytest.TempPathFactory, lengths: list[int], frames_per_shard: int, codec: Codec, blocks: int
) -> None:
    schema = StoreSchema(
        SCHEMA.observation, SCHEMA.action, codec=codec, codec_level=1, frames_per_shard=frames_per_shard
    )
    store = EpisodeStore.create(tmp_path_factory.mktemp("h") / "s", schema)
    for i, n in enumerate(lengths):
        data = make_episode(n, i)
        with store.begin_episode(META) as writer:  # mix extend blocks and single appends
            cuts = np.linspace(0, n, blocks + 1).astype(int)
            for a, b in zip(cuts[:-1], cuts[1:], strict=True):
                if b - a == 1:
                    writer.append(step(data, int(a)))
                elif b > a:
                    block = {k: v[a:b] for k, v in data.items() if not k.startswith("observation/")}
                    block["observation"] = {
                        "front": data["observation/front"][a:b],
                        "state": data["observation/state"][a:b],
                    }
                    writer.extend(block)
            writer.commit(final(data))
        assert_same(store, i, data)
    assert store.validate(deep=True) == len(lengths)
    store.close()


def test_fast_reader_handles_multi_chunk_vectors(store: EpisodeStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("data.zarr_layout.VECTOR_CHUNK_ROWS", 4)
    data = make_episode(10)
    record(store, data)
    reader = ArrayReader(store.path / "episodes" / "000000" / "observation" / "state")
    np.testing.assert_array_equal(reader.read_all(), data["observation/state"])
    np.testing.assert_array_equal(reader.read_rows(np.array([10, 0, 5, 5])), data["observation/state"][[10, 0, 5, 5]])
    assert store.validate(deep=True) == 1


# ---------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["observation"].pop("state"), r"'observation': expected a dict with keys \['front', 'state'\]"),
        (
            lambda s: s.update(action=np.zeros(4)),
            r"'action': expected shape \(3,\) float32, got an array of shape \(4,\) float64",
        ),
        (
            lambda s: s["observation"].update(front=np.zeros((8, 10, 3))),
            r"'observation/front': expected shape \(8, 10, 3\) uint8",
        ),
        (
            lambda s: s["observation"].update(front=np.zeros((10, 8, 3), np.uint8)),
            r"observation/front.*got an array of shape \(10, 8, 3\) uint8",
        ),
        (lambda s: s.update(terminated=1), r"'terminated': expected a bool, got 1 \(int\)"),
        (lambda s: s.update(reward="1"), r"'reward': expected a number \(float32\), got '1' \(str\)"),
        (lambda s: s.pop("truncated"), r"missing keys \['truncated'\]"),
        (lambda s: s.update(obs=1), r"unknown keys \['obs'\]"),
        (lambda s: s.update(language_instruction=3), r"'language_instruction': expected a str"),
        (lambda s: s.update(info={"f": np.zeros(2)}), r"'info/f': expected a number or bool of shape \(\)"),
        (lambda s: s.update(info={"../x": 1.0}), r"'info' key: expected a name"),
    ],
    ids=[
        "missing-obs",
        "action-shape",
        "image-dtype",
        "image-shape",
        "flag-int",
        "reward-str",
        "missing-key",
        "unknown-key",
        "instruction",
        "info-shape",
        "info-name",
    ],
)
def test_bad_steps_name_the_key_and_the_expectation(store: EpisodeStore, mutate, message: str) -> None:
    data = make_episode(2)
    with store.begin_episode(META) as writer:
        good = step(data, 0)
        mutate(good)
        with pytest.raises(DataValidationError, match=message) as err:
            writer.append(good)
        assert str(store.path) in str(err.value) and "step 0" in str(err.value)
        writer.abort()


def test_float64_state_is_accepted_and_stored_as_float32(store: EpisodeStore) -> None:
    data = make_episode(2)
    with store.begin_episode(META) as writer:
        s = step(data, 0)
        s["observation"]["state"] = s["observation"]["state"].astype(np.float64)
        writer.append(s)
        writer.commit(final(data))
    assert store.episode(0).load(["observation/state"])["observation/state"].dtype == np.float32


def test_caller_may_reuse_its_buffers_after_append(store: EpisodeStore) -> None:
    data = make_episode(3)
    state, image = np.zeros(5, np.float32), np.zeros((8, 10, 3), np.uint8)
    with store.begin_episode(META) as writer:
        for t in range(3):
            state[:], image[:] = data["observation/state"][t], data["observation/front"][t]
            writer.append({**step(data, t), "observation": {"front": image, "state": state}})
        state[:], image[:] = -1, 0  # a recorder overwrites its buffers for the next step
        writer.commit(final(data))
    assert_same(store, 0, data)


def test_episode_rules(store: EpisodeStore) -> None:
    data = make_episode(3)
    with store.begin_episode(META) as writer:
        with pytest.raises(DataValidationError, match="0 steps"):
            writer.commit(final(data))
        writer.append(step(data, 0, force=1.0))
        with pytest.raises(DataValidationError, match=r"same keys as the first step \['force'\]"):
            writer.append(step(data, 1, torque=1.0))
        ended = step(data, 1, force=2.0)
        ended["truncated"] = True
        writer.append(ended)
        with pytest.raises(DataValidationError, match="already ended at step 1"):
            writer.append(step(data, 2, force=3.0))
        with pytest.raises(DataValidationError, match="final_observation"):
            writer.commit({"front": data["observation/front"][0]})
        writer.abort()
    with pytest.raises(StoreError, match="already committed or aborted"):
        writer.append(step(data, 0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"observation": {}}, "at least one observation"),
        ({"observation": {"a/b": FieldSpec((1,), "float32")}}, "expected a name"),
        ({"codec_level": 30}, r"codec_level: expected 1\.\.22"),
        ({"frames_per_shard": 0}, "frames_per_shard"),
    ],
)
def test_bad_schema(kwargs: dict, message: str) -> None:
    base = {"observation": {"s": FieldSpec((2,), "float32")}, "action": FieldSpec((1,), "float32")}
    with pytest.raises(DataValidationError, match=message):
        StoreSchema(**{**base, **kwargs})
    with pytest.raises(DataValidationError, match="FieldSpec.dtype: expected a bool, integer or float"):
        FieldSpec((2,), "U4")
    with pytest.raises(DataValidationError, match="EpisodeMetadata.source: expected one of"):
        EpisodeMetadata("t", "r", "teleop")


# ------------------------------------------------------------------------- store-level guarantees
def test_create_open_and_lock_errors(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with pytest.raises(StoreError, match="no episode store here"):
        EpisodeStore.open(path)
    store = EpisodeStore.create(path, SCHEMA)
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(path, SCHEMA)
    with pytest.raises(StoreError, match=f"another writer holds .*pid {os.getpid()}"):
        EpisodeStore.open(path, mode="a")
    reader = EpisodeStore.open(path, mode="r")
    with pytest.raises(StoreError, match="read-only"):
        reader.begin_episode(META)
    store.close()
    EpisodeStore.open(path, mode="a").close()  # the lock is released on close
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary directory left"


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    EpisodeStore.create(tmp_path / "s", SCHEMA).close()
    meta_path = tmp_path / "s" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["robot_stack_episode_store"]["schema_version"] = SCHEMA_VERSION + 1
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataValidationError, match=f"schema_version {SCHEMA_VERSION + 1} is newer"):
        EpisodeStore.open(tmp_path / "s")


def test_stale_staging_is_invisible_and_removed_by_next_writer(store: EpisodeStore) -> None:
    record(store, make_episode(3))
    writer = store.begin_episode(META)  # simulate a crash: the process goes away mid-episode
    data = make_episode(9)
    for t in range(9):
        writer.append(step(data, t))
    writer._executor.shutdown(wait=True)
    store._writers.clear()
    store.close()
    assert len(os.listdir(store.path / "staging")) == 2
    reader = EpisodeStore.open(store.path)
    assert len(reader) == 1 and reader.validate() == 1
    with EpisodeStore.open(store.path, mode="a") as writer_store:
        assert os.listdir(writer_store.path / "staging") == ["zarr.json"]
        assert len(writer_store) == 1


def test_validate_reports_damage(store: EpisodeStore) -> None:
    for i in range(3):
        record(store, make_episode(6, i))
    ep0, ep1 = store.path / "episodes" / "000000", store.path / "episodes" / "000001"
    (ep0 / "observation" / "front" / "c.1.0.0.0").unlink()
    meta = json.loads((ep1 / "action" / "zarr.json").read_text())
    meta["shape"] = [5, 3]
    (ep1 / "action" / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(DataValidationError) as err:
        EpisodeStore.open(store.path).validate()
    text = str(err.value)
    assert "2 problem(s)" in text
    assert "000000/observation/front: chunk files missing: ['c.1.0.0.0']" in text
    assert "000001/action: shape: expected (6, 3), got (5, 3)" in text


def test_deep_validate_catches_flipped_bits(store: EpisodeStore) -> None:
    record(store, make_episode(6))
    shard = store.path / "episodes" / "000000" / "observation" / "front" / "c.0.0.0.0"
    raw = bytearray(shard.read_bytes())
    raw[20] ^= 0xFF
    shard.write_bytes(bytes(raw))
    assert EpisodeStore.open(store.path).validate() == 1  # shallow checks cannot see it
    with pytest.raises(DataValidationError, match="000000/observation/front: data cannot be read"):
        EpisodeStore.open(store.path).validate(deep=True)


def test_gap_in_indices_is_reported_and_refused_for_writing(store: EpisodeStore) -> None:
    for i in range(3):
        record(store, make_episode(2, i))
    store.close()
    shutil.rmtree(store.path / "episodes" / "000001")
    reader = EpisodeStore.open(store.path)
    assert len(reader) == 1  # only the contiguous prefix is visible
    with pytest.raises(DataValidationError, match="episode 000001 is missing"):
        reader.validate()
    with pytest.raises(DataValidationError, match="episode 000001 is missing"):
        EpisodeStore.open(store.path, mode="a")


def test_reader_beside_a_writer_thread(store: EpisodeStore) -> None:
    """Readers open and validate while episodes are being committed, and never see a partial one."""
    import threading

    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def read_loop() -> None:
        while not stop.is_set():
            try:
                reader = EpisodeStore.open(store.path)
                seen.append(reader.validate(deep=True))
            except BaseException as exc:  # reported below
                errors.append(exc)
                return

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for i in range(8):
            record(store, make_episode(5, i))
    finally:
        stop.set()
        thread.join()
    assert not errors, errors
    assert seen == sorted(seen) and seen[-1] <= 8
