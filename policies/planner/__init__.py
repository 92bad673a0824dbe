"""The language planner and its post-training objectives.

``objectives`` holds the RL methods (GRPO family, OPMD, AsymRE, NFT) and both registries;
``preference`` the preference methods (DPO, RPO, INPO, token-level DPO, MPO stage 1);
``rewards`` the reward shaping they use. All are built on ``robot.core.policy_gradient``.
"""

from policies.planner.objectives import (
    PREFERENCE_OBJECTIVES,
    RL_OBJECTIVES,
    Advantages,
    PreferenceObjective,
    RLObjective,
    Rollout,
    TokenBatch,
    get_preference_objective,
    get_rl_objective,
)
from policies.planner.preference import PreferenceBatch

__all__ = [
    "PREFERENCE_OBJECTIVES",
    "RL_OBJECTIVES",
    "Advantages",
    "PreferenceBatch",
    "PreferenceObjective",
    "RLObjective",
    "Rollout",
    "TokenBatch",
    "get_preference_objective",
    "get_rl_objective",
]
