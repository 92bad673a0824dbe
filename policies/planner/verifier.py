"""Verifiable rewards for plans: exact symbolic execution, a rule-based step checker, a noisy verifier.

A plan is scored by running it on the symbolic model of the stack-cubes task (``data.apply_skill``): the
first skill whose precondition fails ends execution, and the plan succeeds when the goal tower stands
and nothing is held afterwards, the env's own success test. This is exact and takes microseconds, so
every sampled completion is scored. ``mujoco_check.py`` can additionally execute a plan with scripted
skills in the MuJoCo scene (slow; for spot checks).

Reward (the RL default): 1 for success; ``format_bonus`` for a well-formed plan that fails; 0 for a
malformed one. Methods whose derivation needs binary rewards read ``success`` instead (see the trainer).

``Verifier`` with ``fp_rate`` / ``fn_rate`` set flips the success bit with known rates, the channel of "RLVR
with noisy verifiers" (reference section 12): a wrong plan is reported correct with probability fp_rate
(rho0), a correct one wrong with probability fn_rate (rho1). The step checker is FAPO's flawed-positive judge
(section 9) made rule-based: a step is flawed when it does not bring the state one step closer to the goal
(exact distances from breadth-first search), so a successful plan with a detour, a redundant move or a
needless unstack is a "flawed positive", and the judge returns the index of its earliest flawed step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policies.planner.data import PlannerTask, Skill, State, apply_skill, distances_to_goal, goal_reached, parse_plan


@dataclass(frozen=True)
class Execution:
    """Result of running skills on the symbolic model."""

    success: bool
    executed: int
    """Skills applied before the end or the first failed precondition."""
    failed_step: int
    """Index of the skill whose precondition failed; -1 if all applied."""
    failure: str
    """The failed precondition in words ("" if none)."""
    final: State


def execute(task: PlannerTask, skills: Sequence[Skill]) -> Execution:
    """Apply the skills in order; stop at the first that cannot run."""
    state = task.state
    for i, skill in enumerate(skills):
        nxt = apply_skill(state, skill)
        if isinstance(nxt, str):
            return Execution(False, i, i, nxt, state)
        state = nxt
    return Execution(goal_reached(state, task.goal), len(skills), -1, "", state)


def first_flawed_step(task: PlannerTask, skills: Sequence[Skill]) -> int:
    """Rule-based step checker: index of the first step that is not on a shortest path to the goal, -1 if none.

    A step is fine when it lowers the exact remaining distance by one; a step that cannot run is flawed too.
    A successful plan is flaw-free exactly when it has the optimal length.
    """
    dist = distances_to_goal(task.colors, task.goal, task.state)
    state = task.state
    for i, skill in enumerate(skills):
        nxt = apply_skill(state, skill)
        if isinstance(nxt, str) or dist[nxt] != dist[state] - 1:
            return i
        state = nxt
    return -1


@dataclass(frozen=True)
class Verdict:
    """Everything the trainer and the evaluation read about one completion."""

    format_ok: bool
    true_success: bool
    """Exact symbolic outcome."""
    success: bool
    """What the verifier reports (differs from true_success only for a noisy verifier)."""
    n_steps: int
    """Skills parsed from the completion (before a malformed step)."""
    flawed_step: int
    """Step checker: first step off every shortest path, -1 if none."""
    reward: float

    @property
    def flawed(self) -> bool:
        return self.flawed_step >= 0


@dataclass
class VerifierConfig:
    """Reward shaping and verifier noise."""

    format_bonus: float = 0.1
    """Reward of a well-formed plan that fails (success gives 1, a malformed plan 0)."""
    fp_rate: float = 0.0
    """Noisy verifier: probability that a failed plan is reported as a success (rho0)."""
    fn_rate: float = 0.0
    """Noisy verifier: probability that a successful plan is reported as a failure (rho1)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.format_bonus < 1.0:
            raise ValueError(f"format_bonus must be in [0, 1), got {self.format_bonus}")
        if not (0.0 <= self.fp_rate < 1.0 and 0.0 <= self.fn_rate < 1.0 and self.fp_rate + self.fn_rate < 1.0):
            raise ValueError(
                f"verifier noise needs 0 <= fp_rate, fn_rate and fp_rate + fn_rate < 1; "
                f"got fp_rate={self.fp_rate}, fn_rate={self.fn_rate}"
            )


class Verifier:
    """Scores completions; exact when both noise rates are 0. Seeded, so a run's noise is reproducible."""

    def __init__(self, config: VerifierConfig | None = None, seed: int = 0) -> None:
        self.config = config or VerifierConfig()
        self.rng = np.random.default_rng(seed)

    @property
    def noisy(self) -> bool:
        return self.config.fp_rate > 0 or self.config.fn_rate > 0

    def score(self, task: PlannerTask, completion: str, truncated: bool = False) -> Verdict:
        """``completion`` is the decoded plan text (without end-of-sequence); a truncated one is malformed."""
        parsed = parse_plan(completion)
        format_ok = parsed.format_ok and not truncated
        true_success = format_ok and execute(task, parsed.skills).success
        success = true_success
        if self.config.fp_rate > 0 and not true_success and self.rng.random() < self.config.fp_rate:
            success = True
        elif self.config.fn_rate > 0 and true_success and self.rng.random() < self.config.fn_rate:
            success = False
        flawed = first_flawed_step(task, parsed.skills) if true_success else -1
        reward = 1.0 if success else (self.config.format_bonus if format_ok else 0.0)
        return Verdict(format_ok, true_success, success, len(parsed.skills), flawed, reward)

    def score_many(self, tasks: Sequence[PlannerTask], completions: Sequence[str],
                   truncated: Sequence[bool] | None = None) -> list[Verdict]:
        if len(tasks) != len(completions):
            raise ValueError(f"need one task per completion, got {len(tasks)} tasks and {len(completions)} completions")
        truncated = [False] * len(tasks) if truncated is None else truncated
        return [self.score(t, c, bool(x)) for t, c, x in zip(tasks, completions, truncated, strict=True)]
