"""Data layer: episode store (zarr), replay buffers, dataset formats (D4RL, Minari), normalized scores."""

from data.episode_store import Episode, EpisodeStore, EpisodeWriter, Transitions
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
    "FieldSpec", "MixedSampler", "ReplayBuffer", "Source", "StoreError", "StoreSchema", "Transitions",
    "normalized_score",
]
