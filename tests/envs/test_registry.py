import gymnasium as gym
import pytest

import envs
from envs.experts import PickCubeExpert
from envs.panda_pick_cube import PandaPickCubeConfig, PandaPickCubeEnv


def test_task_names_and_lookup_by_name_or_gym_id():
    assert "pick-cube" in envs.task_names()
    spec = envs.get_task("pick-cube")
    assert envs.get_task("robot/PandaPickCube-v0") is spec
    assert spec.config_cls is PandaPickCubeConfig and spec.expert_cls is PickCubeExpert
    assert spec.max_episode_steps == 100 and spec.description


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown task 'push-cube'; known tasks: pick-cube"):
        envs.get_task("push-cube")


def test_import_registers_with_gymnasium():
    assert "robot/PandaPickCube-v0" in gym.registry


def test_make_applies_config_and_time_limit():
    env = envs.make("pick-cube", config=PandaPickCubeConfig(rotation=True))
    assert isinstance(env.unwrapped, PandaPickCubeEnv)
    assert env.spec.max_episode_steps == 100
    assert env.action_space.shape == (7,)
    with pytest.raises(TypeError, match="PandaPickCubeConfig"):
        envs.make("pick-cube", config={"rotation": True})


def test_make_expert_is_seeded():
    obs = envs.make("pick-cube").reset(seed=0)[0]
    a = envs.make_expert("pick-cube", noise_std=0.5, seed=3)(obs)
    b = envs.make_expert("pick-cube", noise_std=0.5, seed=3)(obs)
    c = envs.make_expert("pick-cube", noise_std=0.5, seed=4)(obs)
    assert (a == b).all() and not (a == c).all()


def test_make_expert_follows_the_env_config():
    config = PandaPickCubeConfig(rotation=True)
    obs = envs.make("pick-cube", config=config).reset(seed=0)[0]
    assert envs.make_expert("pick-cube", noise_std=0.0, seed=0, config=config)(obs).shape == (7,)
