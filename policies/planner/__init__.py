"""The language planner and its post-training objectives.

``objectives`` holds the RL methods (GRPO family, OPMD, AsymRE, NFT) and both registries;
``preference`` the preference methods (DPO, RPO, INPO, token-level DPO, MPO stage 1);
``rewards`` the reward shaping they use. All are built on ``robot.core.policy_gradient``.

The planner itself (issue 7): ``data`` (stack-cubes goals, scenes, skills, scripted reference plans),
``verifier`` (exact symbolic execution, step checker, noisy verifier; ``mujoco_check`` runs a plan with
the scripted expert in MuJoCo), ``tokenizer`` and ``model`` (a small Hugging Face causal LM, ``lm`` extra),
``trainer`` (SFT, RL and preference training; ``robot planner`` in ``robot/planner_cli.py``). They are not
imported here, so the objectives stay importable without transformers.
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
