"""LeRobot v3.0 export / import: layout, round trip (state exact, video within codec tolerance), bad files."""

import json

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("av")

from data.episode_store import EpisodeStore  # noqa: E402
from data.lerobot import export_lerobot, import_lerobot, lerobot_schema, read_video, write_video  # noqa: E402
from data.schema import DataValidationError, EpisodeMetadata, FieldSpec, Source, StoreSchema  # noqa: E402

H, W = 32, 48


def smooth_frames(n: int, phase: int) -> np.ndarray:
    """Moving gradients: what a camera sees is smooth, and yuv420p video keeps smooth images close."""
    yy, xx = np.mgrid[0:H, 0:W]
    t = np.arange(n)[:, None, None] + phase
    red = (xx[None] * 4 + t * 5) % 256
    green = (yy[None] * 6 + t * 3) % 256
    blue = np.broadcast_to(((xx + yy) * 2)[None], red.shape) % 256
    return np.stack([red, green, blue], -1).astype(np.uint8)


@pytest.fixture
def store(tmp_path):
    schema = StoreSchema(
        observation={"state": FieldSpec((5,), "float32"), "front": FieldSpec((H, W, 3), "uint8")},
        action=FieldSpec((3,), "float32"),
        frames_per_shard=8,
    )
    rng = np.random.default_rng(0)
    with EpisodeStore.create(tmp_path / "store", schema) as st:
        for i, (steps, terminal) in enumerate([(7, True), (12, False), (5, False)]):
            meta = EpisodeMetadata(task="pick-cube", robot="panda_sim", source=Source.DEMO, seed=100 + i,
                                   extra={"operator": "test"})
            with st.begin_episode(meta) as w:
                terminated = np.zeros(steps, bool)
                truncated = np.zeros(steps, bool)
                (terminated if terminal else truncated)[-1] = True
                frames = smooth_frames(steps + 1, 10 * i)
                w.extend({
                    "observation": {"state": rng.normal(size=(steps, 5)).astype(np.float32), "front": frames[:-1]},
                    "action": rng.uniform(-1, 1, (steps, 3)).astype(np.float32),
                    "reward": rng.normal(size=steps).astype(np.float32),
                    "terminated": terminated, "truncated": truncated,
                    "intervention": np.arange(steps) % 3 == 0,
                    "language_instruction": ["lift the cube" if i == 1 else ""] * steps,
                    "info": {"grasped": np.arange(steps) % 2 == 1},
                })
                w.commit({"state": rng.normal(size=5).astype(np.float32), "front": frames[-1]}, success=terminal)
    return EpisodeStore.open(tmp_path / "store")


def test_export_writes_the_v3_layout(store, tmp_path):
    root = export_lerobot(store, tmp_path / "lr", fps=10)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == 3 and info["total_frames"] == 24 and info["total_tasks"] == 2
    assert info["features"]["observation.images.front"]["dtype"] == "video"
    assert info["features"]["observation.images.front"]["shape"] == [H, W, 3]
    assert info["features"]["observation.state"] == {"dtype": "float32", "shape": [5], "names": None}
    frames = pq.read_table(root / "data/chunk-000/file-000.parquet")
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index", "action", "next.reward",
                "next.done", "observation.state"):
        assert key in frames.column_names
    assert frames.num_rows == 24
    assert frames.column("index").to_pylist() == list(range(24))
    assert frames.column("frame_index").to_pylist()[7:10] == [0, 1, 2]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in episodes] == [7, 12, 5]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in episodes] == [(0, 7), (7, 19), (19, 24)]
    key = "videos/observation.images.front"
    # episodes' frames are concatenated; each episode keeps its final observation one frame after to_timestamp
    assert [e[f"{key}/from_timestamp"] for e in episodes] == pytest.approx([0.0, 0.8, 2.1])
    assert [e[f"{key}/to_timestamp"] for e in episodes] == pytest.approx([0.7, 2.0, 2.6])
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pylist()
    assert {t["task"] for t in tasks} == {"pick-cube", "lift the cube"}
    import pandas as pd  # LeRobot reads it with pandas (the test extra installs it): the task text is the index
    assert pd.read_parquet(root / "meta/tasks.parquet").loc["lift the cube", "task_index"] == 1
    video = read_video(root / "videos/observation.images.front/chunk-000/file-000.mp4", 10)
    assert video.shape == (27, H, W, 3)
    assert "observation.state" in json.loads((root / "meta/stats.json").read_text())


def test_round_trip_state_exact_images_within_codec_tolerance(store, tmp_path):
    root = export_lerobot(store, tmp_path / "lr", fps=10)
    with EpisodeStore.create(tmp_path / "back", lerobot_schema(root)) as back:
        assert import_lerobot(root, back) == [0, 1, 2]
        for i in range(3):
            a, b = store.episode(i), back.episode(i)
            assert b.metadata.task == a.metadata.task and b.metadata.seed == a.metadata.seed
            assert b.metadata.success == a.metadata.success and b.metadata.extra == a.metadata.extra
            da, db = a.load(), b.load()
            for key in ("observation/state", "action", "reward", "terminated", "truncated", "intervention",
                        "language_instruction", "info/grasped"):
                np.testing.assert_array_equal(da[key], db[key], err_msg=key)
            assert db["observation/front"].shape == da["observation/front"].shape
            err = np.abs(da["observation/front"].astype(int) - db["observation/front"].astype(int))
            assert err.mean() < 6.0, err.mean()


def test_import_of_a_foreign_dataset_copies_the_last_observation(store, tmp_path):
    """A LeRobot dataset made by LeRobot itself has no robot_stack columns and no final frame."""
    root = export_lerobot(store, tmp_path / "lr", fps=10)
    ep_file = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(ep_file)
    pq.write_table(table.select([c for c in table.column_names if not c.startswith("robot_stack/")]), ep_file)
    with EpisodeStore.create(tmp_path / "back", lerobot_schema(root)) as back:
        import_lerobot(root, back)
        ep = back.episode(1)
        assert ep.metadata.task == "lift the cube" and ep.metadata.extra["lerobot_episode_index"] == 1
        state = ep.load(["observation/state"])["observation/state"]
        np.testing.assert_array_equal(state[-1], state[-2])
        logged = store.episode(1).load(["observation/state"])["observation/state"]
        np.testing.assert_array_equal(state[:-1], logged[:-1])


def _damage(root, what):
    data = root / "data/chunk-000/file-000.parquet"
    if what == "truncated":
        raw = data.read_bytes()
        data.write_bytes(raw[: len(raw) // 2])
    elif what == "missing-key":
        table = pq.read_table(data)
        pq.write_table(table.drop(["action"]), data)
    elif what == "wrong-shape":
        table = pq.read_table(data)
        bad = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(table.num_rows * 4, np.float32)), 4)
        pq.write_table(table.set_column(table.column_names.index("action"), "action", bad), data)
    elif what == "wrong-dtype":
        table = pq.read_table(data)
        bad = pa.array(["x"] * table.num_rows)
        pq.write_table(table.set_column(table.column_names.index("next.done"), "next.done", bad), data)
    elif what == "truncated-video":
        video = root / "videos/observation.images.front/chunk-000/file-000.mp4"
        raw = video.read_bytes()
        video.write_bytes(raw[: len(raw) // 3])
    return data


@pytest.mark.parametrize(
    ("what", "expected"),
    [
        ("truncated", r"file-000\.parquet: cannot be read as parquet"),
        ("missing-key", r"file-000\.parquet: key 'action' is missing"),
        ("wrong-shape", r"file-000\.parquet: key 'action' row 0 has 4 values; expected float32 values of shape \(3,\)"),
        ("wrong-dtype", r"file-000\.parquet: key 'next.done' .*expected bool"),
        ("truncated-video", r"file-000\.mp4: "),
    ],
)
def test_bad_files_give_one_clear_error(store, tmp_path, what, expected):
    root = export_lerobot(store, tmp_path / "lr", fps=10)
    _damage(root, what)
    with EpisodeStore.create(tmp_path / "back", lerobot_schema(root)) as back, \
            pytest.raises(DataValidationError, match=expected):
        import_lerobot(root, back)


def test_bad_info_json_names_the_key(store, tmp_path):
    root = export_lerobot(store, tmp_path / "lr", fps=10)
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v2.1"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DataValidationError, match=r"info\.json: key 'codebase_version' is 'v2.1'; expected 'v3.0'"):
        lerobot_schema(root)
    (root / "meta/info.json").write_text('{"codebase_version": "v3.0", "fps": 10, "feat')
    with pytest.raises(DataValidationError, match=r"info\.json: cannot read JSON"):
        lerobot_schema(root)


def test_odd_frame_size_is_refused(tmp_path):
    with pytest.raises(DataValidationError, match=r"frames are 31 x 48; expected even height and width"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 31, 48, 3), np.uint8), fps=10)


def test_a_missing_extra_is_named(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "av", None)  # import av now raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'robot-stack\[lerobot\]'"):
        write_video(tmp_path / "x.mp4", np.zeros((2, 32, 48, 3), np.uint8), fps=10)
