"""Data layer: episode store (zarr), replay buffers, dataset formats (D4RL, Minari), normalized scores.

`data.lerobot` (LeRobot v3 import/export, needs the `lerobot` extra) is imported on use, not here. Replaying
logged episodes in simulation and generating datasets with our SAC wire envs and learners together, so they
live in `robot/` (`robot.dataset_replay`, `robot.dataset_generate`).
"""

from data.episode_store import Episode, EpisodeStore, EpisodeWriter, Transitions
from data.frame_replay import FrameReplayBuffer
from data.replay_buffer import MixedSampler, ReplayBuffer
from data.schema import (
    SCHEMA_VERSION,
    Codec,
    DataValidationError,
    EpisodeMetadata,
    FieldSpec,
    Source,
    StoreError,
    StoreSchema,
)
from data.scores import normalized_score

__all__ = [
    "SCHEMA_VERSION", "Codec", "DataValidationError", "Episode", "EpisodeMetadata", "EpisodeStore", "EpisodeWriter",
    "FieldSpec", "FrameReplayBuffer", "MixedSampler", "ReplayBuffer", "Source", "StoreError", "StoreSchema",
    "Transitions", "normalized_score",
]
