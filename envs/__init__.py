"""Gymnasium environments of robot-stack: MuJoCo tasks and their registry.

Importing ``envs`` registers every task with gymnasium (e.g. ``robot/PandaPickCube-v0``); scenes are
loaded only when an env is made.
"""

from envs.registry import TASKS, TaskSpec, get_task, make, make_expert, register_all, task_names

register_all()

__all__ = ["TASKS", "TaskSpec", "get_task", "make", "make_expert", "task_names"]
