"""Image observations and render(): front and wrist cameras through mujoco.Renderer, headless.

MuJoCo fixes its OpenGL backend when it is first imported. When this process cannot render (e.g. another
test module imported mujoco before ``envs`` could choose EGL or OSMesa), the file re-runs itself in a
fresh process with the first backend that works (EGL, then OSMesa); it skips only when neither can
create a context, and says why (see ``envs.rendering`` for the system packages each backend needs).
"""

import dataclasses
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.panda_base import RandomizationConfig
from envs.rendering import can_render

TASKS = ["reach", "pick-cube", "peg-insert", "stack-cubes"]
_CHILD_FLAG = "ROBOT_STACK_RENDER_TEST_CHILD"


@cache
def gl_here() -> tuple[bool, str]:
    return can_render()


@cache
def working_backend() -> tuple[str | None, str]:
    """The first MUJOCO_GL of egl, osmesa that renders in a fresh process, and what each one said."""
    probe = "from envs.rendering import can_render; ok, why = can_render(); print(ok); print(why)"
    reports = []
    for backend in ("egl", "osmesa"):
        env = {**os.environ, "MUJOCO_GL": backend}
        env.pop("PYOPENGL_PLATFORM", None)
        out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        lines = out.stdout.splitlines()
        if out.returncode == 0 and lines and lines[0] == "True":
            return backend, ""
        reports.append(f"MUJOCO_GL={backend}: {' '.join(lines[1:]) or out.stderr.strip().splitlines()[-1:]}")
    return None, "; ".join(reports)


@pytest.fixture
def gl():
    ok, why = gl_here()
    if ok:
        return
    if os.environ.get(_CHILD_FLAG):
        pytest.fail(f"the fresh process cannot render either: {why}")
    backend, reports = working_backend()
    if backend is None:
        pytest.skip(f"no OpenGL backend can create a context here ({reports})")
    pytest.skip(f"this process cannot render ({why}); test_in_a_fresh_process runs this file with MUJOCO_GL={backend}")


def test_in_a_fresh_process():
    """Runs this file in a fresh process with a working backend, when this one cannot render."""
    if gl_here()[0]:
        pytest.skip("this process renders: the tests ran in-process")
    if os.environ.get(_CHILD_FLAG):
        pytest.fail("the fresh process cannot render either")
    backend, reports = working_backend()
    if backend is None:
        pytest.skip(f"no OpenGL backend can create a context here ({reports})")
    env = {**os.environ, "MUJOCO_GL": backend, _CHILD_FLAG: "1"}
    env.pop("PYOPENGL_PLATFORM", None)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(Path(__file__).resolve())],
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.mark.parametrize("name", TASKS)
def test_image_observations_hold_front_and_wrist_cameras(gl, name):
    config = dataclasses.replace(envs.get_task(name).config_cls(), image_obs=True)
    env = envs.make(name, config)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict) and set(space) == {"state", "front", "wrist"}
    assert space["front"].shape == space["wrist"].shape == (128, 128, 3) and space["front"].dtype == np.uint8
    obs, info = env.reset(seed=0)
    assert space.contains(obs)
    # "state" is the part a real arm measures; the full state (for experts) is in info.
    state_env = envs.make(name)
    full, _ = state_env.reset(seed=0)
    np.testing.assert_array_equal(info["state"], full)
    np.testing.assert_array_equal(obs["state"], full[: env.unwrapped.proprio_dim])
    for camera in ("front", "wrist"):
        image = obs[camera]
        assert image.std() > 5.0, f"{camera} image is flat"
    assert not np.array_equal(obs["front"], obs["wrist"])
    # The arm moves: the images follow; the expert acts on info["state"].
    expert = envs.make_expert(name, noise_std=0.0, seed=0)
    first = obs
    for _ in range(3):
        obs, _, _, _, info = env.step(expert(obs, info))
    assert space.contains(obs) and not np.array_equal(obs["wrist"], first["wrist"])
    env.close()


def test_image_env_passes_check_env_and_takes_one_camera_and_a_size(gl):
    config = envs.get_task("pick-cube").config_cls(
        image_obs=True, cameras=("wrist",), image_size=(64, 96), image_shadows=False
    )
    env = envs.make("pick-cube", config)
    check_env(env.unwrapped, skip_render_check=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"state", "wrist"} and obs["wrist"].shape == (64, 96, 3)
    env.close()


def test_state_observations_never_render():
    env = envs.make("pick-cube")
    env.reset(seed=0)
    env.step(env.action_space.sample())
    assert env.unwrapped._image_renderer is None and env.unwrapped._renderer is None


def test_render_mode_rgb_array(gl):
    env = envs.make("stack-cubes", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 5.0
    env.close()


def test_camera_and_light_randomisation_change_the_images(gl):
    base = envs.get_task("reach").config_cls(image_obs=True)
    jittered = dataclasses.replace(
        base,
        randomize=RandomizationConfig(
            camera_pos_jitter_m=0.03, camera_rot_jitter_rad=0.05, light_intensity_scale=(0.5, 1.5)
        ),
    )
    plain_env, jitter_env = envs.make("reach", base), envs.make("reach", jittered)
    plain, _ = plain_env.reset(seed=0)
    moved, _ = jitter_env.reset(seed=0)
    np.testing.assert_array_equal(plain["state"], moved["state"])
    assert np.abs(plain["front"].astype(int) - moved["front"].astype(int)).mean() > 2.0
    plain_env.close()
    jitter_env.close()
