"""Runtimes: where the actor (env + policy copy) and the learner (SAC updates) run.

- `sync` (default): `robot.train.Trainer`, one process, act/learn in turn; deterministic and resumable
  step for step.
- `async`: `robot.runtime.local`, actor and learner processes on one machine over an authenticated local
  socket carrying `robot.runtime.wire` frames (JSON header + raw arrays; no pickle). `robot train
  --runtime.kind async|ray` runs either on a run folder (`--resume` continues it).
- `ray`: `robot.runtime.ray_runtime`, actors on the robot PC and the learner on a GPU box; several actors
  feed one learner; Ray restarts a killed side.

Shared by async and ray: `LearnerCore` (`robot.runtime.learner`) and `ActorCore` (`robot.runtime.actor`):
versioned weights, heartbeats both ways, the actor holds the robot on stale weights or a silent learner,
and committed episodes (crash-safe per-actor episode stores) are resent after any restart.
This package's import is light (configs only); the runtimes import torch, envs and Ray when used.
"""

from robot.runtime.config import RuntimeConfig, RuntimeKind

__all__ = ["RuntimeConfig", "RuntimeKind"]
