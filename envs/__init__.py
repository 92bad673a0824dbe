"""Gymnasium environments of robot-stack: MuJoCo Panda tasks and their registry.

| task | gym id | module |
|---|---|---|
| ``reach`` | ``robot/PandaReach-v0`` | ``envs.panda_reach`` |
| ``pick-cube`` | ``robot/PandaPickCube-v0`` | ``envs.panda_pick_cube`` |
| ``peg-insert`` | ``robot/PandaPegInsert-v0`` | ``envs.panda_peg_insert`` |
| ``stack-cubes`` | ``robot/PandaStackCubes-v0`` | ``envs.panda_stack_cubes`` |

Shared conventions (tool-frame actions, binary gripper, observations, cameras, randomisation) are in
``envs.panda_base``; headless rendering in ``envs.rendering``. Importing ``envs`` registers every task with
gymnasium (scenes are loaded only when an env is made) and, on a headless Linux machine where
``MUJOCO_GL`` is unset and MuJoCo not yet imported, selects EGL or OSMesa for camera images.
"""

from envs.rendering import default_gl_backend

default_gl_backend()  # before anything imports mujoco: MuJoCo reads MUJOCO_GL once, at import

from envs.registry import (  # noqa: E402
    TASKS,
    TaskSpec,
    get_task,
    make,
    make_expert,
    register_all,
    task_names,
)

register_all()

__all__ = ["TASKS", "TaskSpec", "get_task", "make", "make_expert", "task_names"]
