"""The `robot` command: listing, help with defaults, and one-line errors on bad input."""

import os
import subprocess
import sys

import pytest

from robot.cli import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_python_dash_m_robot_lists_tasks():
    env = {**os.environ, "COLUMNS": "200"}  # rich wraps cells to the terminal width
    result = subprocess.run(
        [sys.executable, "-m", "robot", "tasks"], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert "pick-cube" in result.stdout and "robot/PandaPickCube-v0" in result.stdout


def test_train_help_shows_defaults_including_the_preset(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "pick-cube", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--agent.num_critics" in text and "--env." in text
    assert "default: 12000" in text  # the pick-cube preset's total_env_steps, not the base default


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "no-such-task"], "unknown task 'no-such-task'; known tasks: halfcheetah, hopper, peg-insert"),
        (["train", "pick-cube", "--bogus", "1"], "unknown option(s): --bogus"),
        (["train", "pick-cube", "--agent.utd_ratio", "abc"], "agent.utd_ratio: expected int, got 'abc'"),
        (["train", "pick-cube", "--agent.num_subsample", "20"], "num_subsample: expected 1..num_critics"),
        (["train", "pick-cube", "--agent.compile", "fast"], "agent.compile: expected one of 'none', 'compile'"),
        (["train", "pick-cube", "--total_env_steps", "-5"], "total_env_steps: expected a positive number, got -5"),
        (["train"], "missing TASK; known tasks: halfcheetah, hopper, peg-insert, pick-cube, reach, stack-cubes"),
        (["eval", "no/such/run"], "not a run folder (no config.json)"),
        (["collect-demos", "pick-cube", "-n", "0", "--out", "x"], "-n: expected a positive number of episodes"),
    ],
    ids=["unknown-task", "unknown-option", "malformed-int", "constraint", "bad-enum", "negative-steps",
         "missing-task", "eval-not-a-run", "zero-demos"],
)
def test_bad_input_exits_2_with_one_clear_line(capsys, argv, expected):
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert expected in lines[0]


def test_dash_and_underscore_spellings_are_the_same_option(tmp_path, capsys):
    from robot.config import apply_overrides
    from robot.presets import default_config

    config = apply_overrides(default_config("pick-cube"), {"agent.num-critics": "4", "agent.hidden_dims": "64,64"})
    assert config.agent.num_critics == 4 and config.agent.hidden_dims == (64, 64)


def test_a_run_that_cannot_start_leaves_no_run_folder(capsys, tmp_path):
    """The agent refuses a CUDA graph on the CPU: one clear error, and no half-made run folder."""
    code, _out, err = run_cli(capsys, "train", "reach", "--agent.compile", "cuda-graph", "--device", "cpu",
                              "--run_root", str(tmp_path))
    assert code == 2
    assert "compile mode 'cuda-graph' needs a CUDA device, got cpu" in err
    assert list(tmp_path.iterdir()) == []
