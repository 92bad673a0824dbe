"""`robot dataset ...`: info, validate, convert (all pairs we support), export-video, replay, generate; bad input."""

import json

import h5py
import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

import envs  # noqa: E402
from data.d4rl import load_d4rl_hdf5  # noqa: E402
from data.episode_store import EpisodeStore  # noqa: E402
from data.lerobot import read_video  # noqa: E402
from robot.cli import main  # noqa: E402
from robot.demo_store import write_demos  # noqa: E402
from robot.demos import collect_demos  # noqa: E402
from tests.robot.test_dataset_replay import image_store  # noqa: E402


def run(capsys, *argv):
    code = main(["dataset", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def demos():
    return collect_demos("pick-cube", 2, noise_std=0.1, seed=0)


@pytest.fixture
def store(tmp_path, demos):
    write_demos(tmp_path / "demos", envs.get_task("pick-cube"), demos, noise_std=0.1)
    return tmp_path / "demos"


def test_info_reports_episodes_steps_keys_sources_success_and_size(capsys, store, demos):
    code, out, _ = run(capsys, "info", store, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["format"] == "store" and info["episodes"] == 2 and info["steps"] == sum(len(d) for d in demos)
    assert info["keys"]["observation/state"] == {"shape": [24], "dtype": "float32"}
    assert info["sources"] == {"demo": 2} and info["success_rate"] == 1.0 and info["size_bytes"] > 0
    code, out, _ = run(capsys, "info", store)
    assert code == 0 and "observation/state" in out and "size on disk" in out


def test_validate_passes_a_good_store_and_lists_problems_of_a_damaged_one(capsys, store):
    code, out, _ = run(capsys, "validate", store)
    assert code == 0 and "2 episodes checked" in out
    chunk = next((store / "episodes/000001/action").glob("c*"))
    chunk.write_bytes(chunk.read_bytes()[:5])
    code, _, err = run(capsys, "validate", store)
    assert code == 1 and "000001/action" in err


def test_convert_store_d4rl_lerobot_and_back(capsys, store, tmp_path, demos):
    assert run(capsys, "convert", store, tmp_path / "d.hdf5")[0] == 0
    data = load_d4rl_hdf5(tmp_path / "d.hdf5")
    assert data["observations"].shape[1] == 24
    assert run(capsys, "convert", tmp_path / "d.hdf5", tmp_path / "from_d4rl", "--task", "pick-cube")[0] == 0
    assert run(capsys, "convert", store, tmp_path / "lr", "--to", "lerobot")[0] == 0
    assert (tmp_path / "lr/meta/info.json").is_file()
    assert run(capsys, "validate", tmp_path / "lr")[0] == 0
    assert run(capsys, "convert", tmp_path / "lr", tmp_path / "back")[0] == 0
    with EpisodeStore.open(store) as a, EpisodeStore.open(tmp_path / "back") as b, \
            EpisodeStore.open(tmp_path / "from_d4rl") as c:
        assert len(b) == len(c) == 2
        for i in range(2):
            np.testing.assert_array_equal(a.episode(i).load(["observation/state"])["observation/state"],
                                          b.episode(i).load(["observation/state"])["observation/state"])
            assert b.metadata(i).seed == a.metadata(i).seed  # metadata survives LeRobot
            np.testing.assert_array_equal(a.episode(i).load(["action"])["action"],
                                          c.episode(i).load(["action"])["action"])
    # LeRobot -> D4RL goes through a temporary store
    assert run(capsys, "convert", tmp_path / "lr", tmp_path / "lr.hdf5")[0] == 0
    np.testing.assert_array_equal(load_d4rl_hdf5(tmp_path / "lr.hdf5")["actions"], data["actions"])


def test_convert_minari_file(capsys, tmp_path):
    with h5py.File(tmp_path / "main_data.hdf5", "w") as f:
        for i, steps in enumerate((4, 6)):
            g = f.create_group(f"episode_{i}")
            g.attrs["seed"] = 10 + i
            g.create_dataset("observations", data=np.arange((steps + 1) * 3, dtype=np.float64).reshape(-1, 3))
            g.create_dataset("actions", data=np.zeros((steps, 2), np.float32))
            g.create_dataset("rewards", data=np.ones(steps))
            g.create_dataset("terminations", data=np.arange(steps) == steps - 1)
            g.create_dataset("truncations", data=np.zeros(steps, bool))
    code, out, _ = run(capsys, "convert", tmp_path / "main_data.hdf5", tmp_path / "m", "--task", "toy")
    assert code == 0 and "(minari)" in out
    with EpisodeStore.open(tmp_path / "m") as s:
        assert [s.metadata(i).length for i in range(2)] == [4, 6] and s.metadata(1).seed == 11


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("truncated", r"bad\.hdf5: cannot be opened as HDF5"),
        ("wrong-key", r"bad\.hdf5: key /actions is missing"),
        ("wrong-shape", r"bad\.hdf5: key /rewards has shape \(5, 3\)"),
        ("wrong-dtype", r"bad\.hdf5: key /terminals: expected bool \(or 0/1\) flags"),
    ],
)
def test_convert_of_a_bad_file_is_one_clear_line(capsys, tmp_path, damage, expected):
    path = tmp_path / "bad.hdf5"
    arrays = {"observations": np.zeros((5, 3), np.float32), "actions": np.zeros((5, 2), np.float32),
              "rewards": np.zeros(5, np.float32), "terminals": np.zeros(5, bool), "timeouts": np.zeros(5, bool)}
    if damage == "wrong-key":
        arrays["action"] = arrays.pop("actions")
    elif damage == "wrong-shape":
        arrays["rewards"] = np.zeros((5, 3), np.float32)
    elif damage == "wrong-dtype":
        arrays["terminals"] = np.full(5, 0.5)
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    code, _, err = run(capsys, "convert", path, tmp_path / "out", "--from", "d4rl")
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    import re

    assert re.search(expected, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()


def test_convert_refuses_existing_destination_and_unknown_inputs(capsys, store, tmp_path):
    code, _, err = run(capsys, "convert", store, store)
    assert code == 2 and "already exists" in err
    (tmp_path / "notes.txt").write_text("x")
    code, _, err = run(capsys, "info", tmp_path / "notes.txt")
    assert code == 2 and "unknown file type '.txt'" in err
    code, _, err = run(capsys, "convert", store, tmp_path / "x", "--to", "minari")
    assert code == 2 and "Minari is import-only" in err


def test_export_video_and_replay_with_side_by_side_video(capsys, tmp_path):
    image_store(tmp_path / "img").close()
    code, out, _ = run(capsys, "export-video", tmp_path / "img", tmp_path / "ep.mp4", "--episode", "0")
    assert code == 0 and "wrote 9 frames" in out
    assert read_video(tmp_path / "ep.mp4", 10).shape == (9, 32, 48, 3)
    code, out, _ = run(capsys, "replay", tmp_path / "img", "--video", tmp_path / "side.mp4", "--json")
    assert code == 0
    report = json.loads(out)[0]
    assert report["divergence"]["tcp_pos"] == {"mean": 0.0, "max": 0.0, "final": 0.0}
    assert read_video(tmp_path / "side.mp4", 10).shape == (9, 32, 96, 3)


def test_replay_table_and_mismatch_exit_status(capsys, store):
    code, out, _ = run(capsys, "replay", store, "--episode", "all")
    assert code == 0 and "tcp_pos" in out
    meta = store / "episodes/000000/zarr.json"
    obj = json.loads(meta.read_text())
    obj["attributes"]["episode"]["seed"] += 1
    meta.write_text(json.dumps(obj))
    code, _, err = run(capsys, "replay", store)
    assert code == 1 and "initial state" in err
    code, _, err = run(capsys, "replay", store, "--episode", "7")
    assert code == 2 and "--episode: expected 0..1, got 7" in err


def test_generate_random_level_from_the_command_line(capsys, tmp_path):
    code, out, _ = run(capsys, "generate", "reach", "--levels", "random", "--dataset_steps", "60",
                       "--format", "d4rl", "--out", tmp_path)
    assert code == 0 and "random" in out
    data = load_d4rl_hdf5(tmp_path / "reach-random.hdf5")
    assert len(data["observations"]) == 60 and data["timeouts"][49] and data["timeouts"][-1]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "chess"], "unknown task 'chess'"),
        (["generate", "hopper", "--levels", "good"], "levels: expected some of random, medium, expert"),
        (["generate", "hopper", "--format", "csv"], "format: expected one of d4rl, store, both"),
        (["generate", "hopper", "--train_steps", "abc"], "train_steps: expected int, got 'abc'"),
        (["info"], "the following arguments are required: path"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(capsys, argv, expected):
    code, _, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and expected in lines[0], err
