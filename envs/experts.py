"""Scripted experts of every task, in one import; each lives in its task's module.

An expert acts from the world-frame state vector alone (no simulator access): ``expert.reset()`` at each
episode start, then ``expert(obs) -> action``, or ``expert(obs, info)`` with image observations (the state
is then ``info["state"]``). Gaussian action noise from the expert's own seeded generator makes the
demonstrations cover more states.
"""

from envs.panda_base import ScriptedExpert, quat_to_matrix
from envs.panda_peg_insert import PegInsertExpert
from envs.panda_pick_cube import PickCubeExpert
from envs.panda_reach import ReachExpert
from envs.panda_stack_cubes import StackCubesExpert

__all__ = ["PegInsertExpert", "PickCubeExpert", "ReachExpert", "ScriptedExpert", "StackCubesExpert", "quat_to_matrix"]
