"""Demos in the episode store: `robot collect-demos` writes them, `robot train --demo_store` reads them
(through `robot.runtime.learner.fill_demo_buffer`, as every runtime does).

State tasks store their flat observation as `observation/state`; each episode is committed (and so
durable) as soon as it is written, so an interrupted collection keeps every finished demo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.episode_store import EpisodeStore
from data.schema import EpisodeMetadata, FieldSpec, Source, StoreSchema
from robot.demos import Episode

STATE_KEY = "state"
SIM_ROBOT = "panda_sim"
SERVER_ROBOTS = {"twin": "panda_twin", "franka": "franka"}
"""The robot label stored with an episode, by the `arm` a robot server reports in its hello."""


def robot_label(env) -> str:
    """What an episode ran on: "panda_sim", or the robot server's arm ("panda_twin", "franka").

    Asks the env only after its first reset (a robot env connects then): a dataset mixing sim, twin
    and real-arm episodes must say which is which, since their dynamics and cameras differ.
    """
    from envs.real import RealPandaEnv

    base = getattr(env, "unwrapped", env)
    if not isinstance(base, RealPandaEnv):
        return SIM_ROBOT
    arm = str(base.client.server_info.get("arm", "unknown"))
    return SERVER_ROBOTS.get(arm, arm)


def write_demos(path: Path, spec, demos: list[Episode], noise_std: float) -> int:
    """Append `demos` to the store at `path` (created if missing); returns the store's episode count."""
    path = Path(path)
    obs_dim, act_dim = demos[0].obs.shape[1], demos[0].action.shape[1]
    if (path / "zarr.json").exists():
        store = EpisodeStore.open(path, mode="a")
    else:
        schema = StoreSchema(
            observation={STATE_KEY: FieldSpec((obs_dim,), "float32")}, action=FieldSpec((act_dim,), "float32")
        )
        store = EpisodeStore.create(path, schema)
    with store:
        for ep in demos:
            meta = EpisodeMetadata(
                task=spec.name, robot=ep.robot, source=Source.DEMO, seed=ep.seed,
                extra={"policy": "scripted_expert", "noise_std": noise_std},
            )
            with store.begin_episode(meta) as writer:
                writer.extend({
                    "observation": {STATE_KEY: ep.obs.astype(np.float32)},
                    "action": ep.action.astype(np.float32),
                    "reward": ep.reward.astype(np.float32),
                    "terminated": ep.terminated,
                    "truncated": ep.truncated,
                })
                writer.commit({STATE_KEY: ep.next_obs[-1].astype(np.float32)}, success=ep.success)
        return len(store)

