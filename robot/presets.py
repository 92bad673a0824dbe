"""Per-task presets: deltas over the `TrainConfig` defaults, in dotted keys (never full copies)."""

from __future__ import annotations

from typing import Any

from robot.config import apply_overrides
from robot.train import TrainConfig

PRESETS: dict[str, dict[str, Any]] = {
    # Sized so the default run fits a 2-core CPU in under 15 minutes (see README and BENCHMARKS.md):
    # HIL-SERL's 2-member ensemble (10 members cost 5x per update on a CPU), a high UTD instead, and
    # gamma 0.96 (SERL's pixel / real-robot value): with sparse reward, 0.99 leaves the critic optimistic
    # about every state for thousands of steps.
    "pick-cube": {
        "total_env_steps": 12_000,
        "random_steps": 0,
        "learning_starts": 500,
        "eval_every": 2_000,
        "agent.num_critics": 2,
        "agent.num_subsample": 2,
        "agent.utd_ratio": 8,
        "agent.discount": 0.96,
    },
    # gymnasium locomotion tasks have no scripted expert: plain SAC from random exploration.
    **{
        name: {"num_demos": 0, "random_steps": 5_000, "learning_starts": 5_000}
        for name in ("hopper", "halfcheetah", "walker2d")
    },
}


def default_config(task: str) -> TrainConfig:
    """The task's preset applied over the defaults, with the task's own env config."""
    import envs

    spec = envs.get_task(task)
    config = TrainConfig(task=spec.name, env=spec.config_cls() if spec.config_cls else None)
    return apply_overrides(config, PRESETS.get(spec.name, {}))
