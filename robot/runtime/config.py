"""Runtime settings: where actor and learner run and how they talk (see `robot.runtime`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RuntimeKind(enum.Enum):
    SYNC = "sync"
    """One process: act, store, learn in turn (`robot.train.Trainer`; deterministic, resumable exactly)."""
    ASYNC = "async"
    """Actor and learner as separate processes on one machine, over an authenticated local socket."""
    RAY = "ray"
    """Ray actors: robot actors (robot PC) and one learner (GPU box); several actors feed one learner."""


@dataclass
class RuntimeConfig:
    """How the actor and learner sides of a run are deployed and how stale the actor's weights may get."""

    kind: RuntimeKind = RuntimeKind.SYNC
    """'sync' (one process, the default), 'async' (actor + learner processes) or 'ray'."""
    num_actors: int = 1
    """Actor processes feeding the learner (async and ray); each records into its own episode store."""
    host: str = "127.0.0.1"
    """Async: address the learner listens on. Keep loopback (or a private network): see README, 'Runtimes'."""
    port: int = 0
    """Async: learner port; 0 picks a free one and writes it to RUN_DIR/runtime/learner_address.json."""
    max_weight_lag: int = 500
    """The actor refuses to act (holds) on weights more than this many learner updates behind the learner."""
    publish_every: int = 50
    """Learner updates between weight publications (each carries its version = the update count)."""
    heartbeat_s: float = 0.5
    """Period of heartbeats in both directions [s]."""
    peer_timeout_s: float = 5.0
    """A side silent this long is considered gone: the actor holds the robot, the learner drops the actor [s]."""
    actor_wait_timeout_s: float = 0.0
    """Learner: give up (exit with an error) after this long without any actor; 0 waits, logging [s]."""
    checkpoint_every_s: float = 30.0
    """Learner: also checkpoint at least this often [s] (besides every `checkpoint_every` env steps)."""
    ray_address: str = ""
    """Ray: cluster address ('auto', 'ray://host:10001'); empty starts a local Ray instance."""
    ray_actor_resource: str = ""
    """Ray: custom resource the robot PC advertises (e.g. 'robot_pc'), so actors are placed there; empty: anywhere."""
    ray_learner_gpus: float = 0.0
    """Ray: GPUs the learner asks for (1 puts it on the GPU box)."""

    def __post_init__(self) -> None:
        if self.num_actors < 1:
            raise ValueError(f"runtime.num_actors: expected >= 1, got {self.num_actors}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"runtime.port: expected 0..65535, got {self.port}")
        for key in ("max_weight_lag", "publish_every"):
            if getattr(self, key) < 1:
                raise ValueError(f"runtime.{key}: expected >= 1, got {getattr(self, key)}")
        for key in ("heartbeat_s", "peer_timeout_s", "checkpoint_every_s"):
            if not getattr(self, key) > 0:
                raise ValueError(f"runtime.{key}: expected a positive number of seconds, got {getattr(self, key)}")
        if self.peer_timeout_s <= self.heartbeat_s:
            raise ValueError(
                f"runtime.peer_timeout_s ({self.peer_timeout_s}) must exceed runtime.heartbeat_s ({self.heartbeat_s})"
            )
        if self.actor_wait_timeout_s < 0 or self.ray_learner_gpus < 0:
            raise ValueError("runtime.actor_wait_timeout_s and runtime.ray_learner_gpus must be >= 0")
