"""PandaStackCubes: named sub-steps, the symbolic scene and the goal order in the observation."""

import numpy as np
import pytest

import envs
from envs.panda_stack_cubes import (
    COLORS,
    CUBE_HALF_M,
    OBS_LAYOUT,
    PandaStackCubesConfig,
    PandaStackCubesEnv,
    StackCubesExpert,
)


def test_reset_info_names_the_goal_and_the_scene():
    env = PandaStackCubesEnv()
    obs, info = env.reset(seed=0)
    assert info["substep"] == 0 and env.n_substeps == 4
    names = env.substep_names()
    assert info["substep_name"] == names[0]
    colors = [d["color"] for d in sorted(info["scene"], key=lambda d: (d["goal_level"] is None, d["goal_level"]))]
    base, second, top = colors
    assert names == [
        f"pick {second} cube",
        f"place {second} cube on {base} cube",
        f"pick {top} cube",
        f"place {top} cube on {second} cube",
    ]
    assert (
        info["instruction"] == f"stack the {second} cube on the {base} cube, then the {top} cube on the {second} cube"
    )
    assert len(set(colors)) == 3 and set(colors) <= set(env.config.palette)
    for d in info["scene"]:
        assert d["on"] == "table" and d["name"] == f"{d['color']} cube" and d["rgb"] == COLORS[d["color"]]
        # The observation lists the cubes in goal order.
        k = d["goal_level"]
        np.testing.assert_allclose(obs[OBS_LAYOUT[f"cube{k}_pos"]], d["position_m"], atol=1e-6)
    xy = np.array([d["position_m"][:2] for d in info["scene"]])
    assert min(np.linalg.norm(xy[i] - xy[j]) for i in range(3) for j in range(i)) >= env.config.min_cube_distance_m


def test_substeps_follow_the_expert_through_the_task():
    env = envs.make("stack-cubes")
    expert = envs.make_expert("stack-cubes", noise_std=0.0, seed=0)
    obs, info = env.reset(seed=1)
    seen = [(info["substep"], info["substep_name"])]
    for _ in range(200):
        obs, reward, terminated, _, info = env.step(expert(obs))
        if (info["substep"], info["substep_name"]) != seen[-1]:
            seen.append((info["substep"], info["substep_name"]))
        if terminated:
            break
    assert terminated and reward == 1.0
    names = env.unwrapped.substep_names()
    assert seen == [*enumerate(names), (4, "done")]
    scene = {d["goal_level"]: d for d in env.unwrapped.symbolic_scene()}
    assert scene[0]["on"] == "table"
    assert scene[1]["on"] == scene[0]["name"] and scene[2]["on"] == scene[1]["name"]
    assert scene[2]["position_m"][2] == pytest.approx(5 * CUBE_HALF_M, abs=0.003)


def test_two_cube_tower_leaves_a_distractor():
    config = PandaStackCubesConfig(stack_height=2, palette=("red", "green", "blue"))
    env = envs.make("stack-cubes", config)
    _, info = env.reset(seed=3)
    assert env.unwrapped.n_substeps == 2 and len(env.unwrapped.substep_names()) == 2
    assert sorted(d["goal_level"] is None for d in info["scene"]) == [False, False, True]
    expert = StackCubesExpert.from_config(config, noise_std=0.0, seed=0)
    obs = env.reset(seed=3)[0]
    for _ in range(150):
        obs, _, terminated, _, info = env.step(expert(obs))
        if terminated:
            break
    assert terminated and info["substep_name"] == "done"


def test_dropping_the_cube_goes_back_to_its_pick():
    env = PandaStackCubesEnv()
    expert = StackCubesExpert(noise_std=0.0)
    obs, info = env.reset(seed=2)
    while info["substep"] == 0:  # until the first cube is held
        obs, _, _, _, info = env.step(expert(obs))
    assert info["substep"] == 1
    for _ in range(3):  # let it go mid-air
        action = np.zeros(4, dtype=np.float32)
        action[-1] = -1.0
        obs, _, _, _, info = env.step(action)
    assert info["substep"] == 0 and info["substep_name"].startswith("pick")


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="stack_height"):
        PandaStackCubesConfig(stack_height=4)
    with pytest.raises(ValueError, match="palette"):
        PandaStackCubesConfig(palette=("red", "green", "cyan"))
    with pytest.raises(ValueError, match="palette"):
        PandaStackCubesConfig(palette=("red", "green"))
