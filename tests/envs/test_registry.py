import gymnasium as gym
import pytest

import envs
from envs.experts import PickCubeExpert
from envs.panda_pick_cube import PandaPickCubeConfig, PandaPickCubeEnv
from envs.panda_reach import PandaReachConfig


def test_task_names_and_lookup_by_name_or_gym_id():
    assert envs.task_names() == ["halfcheetah", "hopper", "peg-insert", "pick-cube", "reach", "stack-cubes", "walker2d"]
    spec = envs.get_task("pick-cube")
    assert envs.get_task("robot/PandaPickCube-v0") is spec
    assert spec.config_cls is PandaPickCubeConfig and spec.expert_cls is PickCubeExpert
    assert spec.max_episode_steps == 100 and spec.description


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(
        ValueError, match=r"unknown task 'push-cube'; known tasks: halfcheetah, hopper, peg-insert, pick-cube, reach"
    ):
        envs.get_task("push-cube")


@pytest.mark.parametrize(
    ("name", "gym_id"),
    [
        ("reach", "robot/PandaReach-v0"),
        ("pick-cube", "robot/PandaPickCube-v0"),
        ("peg-insert", "robot/PandaPegInsert-v0"),
        ("stack-cubes", "robot/PandaStackCubes-v0"),
    ],
)
def test_import_registers_every_task_with_gymnasium(name, gym_id):
    assert gym_id in gym.registry
    spec = envs.get_task(name)
    assert spec.gym_id == gym_id and envs.get_task(gym_id) is spec
    assert gym.registry[gym_id].max_episode_steps == spec.max_episode_steps


def test_make_applies_config_and_time_limit():
    env = envs.make("pick-cube", config=PandaPickCubeConfig(rotation=True))
    assert isinstance(env.unwrapped, PandaPickCubeEnv)
    assert env.spec.max_episode_steps == 100
    assert env.action_space.shape == (7,)
    with pytest.raises(TypeError, match="PandaPickCubeConfig"):
        envs.make("pick-cube", config={"rotation": True})
    with pytest.raises(TypeError, match="PandaPickCubeConfig"):
        envs.make_expert("pick-cube", noise_std=0.0, seed=0, config=PandaReachConfig())


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
