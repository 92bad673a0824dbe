"""D4RL normalized scores: 0 = the reference random policy, 1 (papers: 100) = the reference expert.

    normalized = (return - REF_MIN_SCORE) / (REF_MAX_SCORE - REF_MIN_SCORE)

`return` is the undiscounted episode return. Papers and CORL report the value x 100; these helpers
return the fraction. The constants are D4RL's (one pair per domain, shared by all dataset variants of
the versions listed); they do not apply to Minari's regenerated `mujoco/*` datasets, which carry their
own reference scores.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RefScores:
    min_score: float  # return of the reference random policy
    max_score: float  # return of the reference expert policy


# Key: the env-name prefix before the dataset part ("hopper" in "hopper-medium-v2").
D4RL_REF_SCORES: dict[str, RefScores] = {
    "hopper": RefScores(-20.272305, 3234.3),
    "halfcheetah": RefScores(-280.178953, 12135.0),
    "walker2d": RefScores(1.629008, 4592.3),
    "ant": RefScores(-325.6, 3879.7),
    "antmaze": RefScores(0.0, 1.0),  # sparse goal reward: x100 is the success rate
    "pen": RefScores(96.262799, 3076.8331017826877),
    "door": RefScores(-56.512833, 2880.5693087298737),
    "hammer": RefScores(-274.856578, 12794.134825156867),
    "relocate": RefScores(-6.425911, 4233.877797728884),
    "kitchen": RefScores(0.0, 4.0),  # 4 sub-tasks, reward 1 each
    # maze2d constants differ per maze and are known for the sparse v1 datasets only.
    "maze2d-umaze": RefScores(23.85, 161.86),
    "maze2d-medium": RefScores(13.13, 277.39),
    "maze2d-large": RefScores(6.7, 273.99),
}

_ENV_RE = re.compile(r"^(?P<domain>maze2d-(umaze|medium|large)|[a-z0-9]+)-(?P<dataset>[a-z0-9-]+-)?v(?P<version>\d+)$")


def ref_scores(env_name: str) -> RefScores:
    """Reference scores of a D4RL env / dataset name like "hopper-medium-v2" or "maze2d-umaze-v1"."""
    match = _ENV_RE.match(env_name)
    domain = match["domain"] if match else None
    if domain is not None and domain.startswith("maze2d") and (match["dataset"] or match["version"] != "1"):
        domain = None  # dense or other versions have other constants
    if domain not in D4RL_REF_SCORES:
        raise KeyError(
            f"normalized score: unknown D4RL env {env_name!r}; expected '<domain>-<dataset>-v<N>' with a domain "
            f"in {sorted(D4RL_REF_SCORES)} (maze2d: exactly 'maze2d-<umaze|medium|large>-v1')"
        )
    return D4RL_REF_SCORES[domain]


def normalized_score(env_name: str, score: float | np.ndarray) -> float | np.ndarray:
    """D4RL normalized score (a fraction; x100 for the number papers report) of an episode return."""
    ref = ref_scores(env_name)
    normalized = (np.asarray(score, dtype=np.float64) - ref.min_score) / (ref.max_score - ref.min_score)
    return float(normalized) if normalized.ndim == 0 else normalized


def unnormalized_score(env_name: str, normalized: float | np.ndarray) -> float | np.ndarray:
    """Inverse of `normalized_score`: the episode return that gives `normalized`."""
    ref = ref_scores(env_name)
    score = np.asarray(normalized, dtype=np.float64) * (ref.max_score - ref.min_score) + ref.min_score
    return float(score) if score.ndim == 0 else score
