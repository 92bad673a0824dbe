"""Planner tasks from the stack-cubes task: goals, scenes, the skill vocabulary and scripted reference plans.

A task is a symbolic snapshot of ``robot/PandaStackCubes-v0`` (``envs.panda_stack_cubes``): three cubes with
distinct colours from the task's palette, each resting on the table or on another cube, and a goal tower
worded exactly as the env's ``instruction()`` ("stack the green cube on the red cube , then the blue cube
on the green cube"). Unlike the env's resets (all cubes on the table), generated scenes may start with cubes
already stacked, sometimes in the wrong order, so that a plan has to unstack before it builds.

The planner sees one prompt and writes a plan, a sequence of skills:

    prompt: goal : stack the blue cube on the red cube . scene : red cube at 0.45 0.10 on table .
            blue cube at 0.55 -0.05 on table . green cube at 0.45 0.10 on red cube . plan :
    plan:   pick the green cube . place it on the table . pick the blue cube . place it on the red cube .

All text is space-separated words and punctuation ("canonical" text), so a word-level tokenizer
round-trips it exactly. The scripted reference plan is a shortest plan found by breadth-first search over
the (tiny, exact) symbolic state space, with a fixed action order, so the same task always gets the same
reference. ``symbolic.py``-style execution, the step checker and the rewards live in ``verifier.py``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from envs.panda_stack_cubes import COLORS, N_CUBES, PandaStackCubesConfig

TABLE = "table"
GRIPPER = "gripper"
POSITION_GRID_M = 0.05
"""Cube positions in the scene text are rounded to this grid [m] (a small, closed set of number words)."""

# --------------------------------------------------------------------------------------------------
# Skills
# --------------------------------------------------------------------------------------------------


class Skill(NamedTuple):
    """One plan step: ``pick`` a cube (target = its colour) or ``place`` the held cube (target = a colour or
    ``table``)."""

    kind: str
    target: str

    def text(self) -> str:
        if self.kind == "pick":
            return f"pick the {self.target} cube"
        if self.target == TABLE:
            return "place it on the table"
        return f"place it on the {self.target} cube"


def skill_vocabulary(colors: Sequence[str]) -> list[Skill]:
    """Every valid skill for cubes of these colours: pick each cube, place on each cube or on the table."""
    return [Skill("pick", c) for c in colors] + [Skill("place", TABLE)] + [Skill("place", c) for c in colors]


def plan_text(skills: Sequence[Skill]) -> str:
    """Canonical plan text: each skill followed by " ." ("" for an empty plan)."""
    return " ".join(f"{s.text()} ." for s in skills)


_SKILL_PATTERNS = (
    (re.compile(r"^pick the (\w+) cube$"), "pick"),
    (re.compile(r"^place it on the table$"), "place-table"),
    (re.compile(r"^place it on the (\w+) cube$"), "place"),
)


class ParsedPlan(NamedTuple):
    skills: list[Skill]
    """The skills read before the first malformed step."""
    format_ok: bool
    """Every step is a known skill on a known colour and the plan ends with " ."."""
    error: str
    """Why the format is wrong ("" when it is fine)."""


def parse_plan(text: str) -> ParsedPlan:
    """Read a plan written by the model. Steps are separated by " ."; each must match a skill exactly.

    Colours must be names the stack-cubes task knows (``COLORS``); whether the cube is in the scene is an
    execution question (``verifier.execute``), not a format one.
    """
    words = text.split()
    if not words:
        return ParsedPlan([], False, "empty plan")
    if words[-1] != ".":
        return ParsedPlan([], False, "plan does not end with ' .'")
    skills: list[Skill] = []
    for step in " ".join(words).split(" ."):
        step = step.strip()
        if not step:
            continue
        skill = _parse_step(step)
        if skill is None:
            return ParsedPlan(skills, False, f"unknown step {step!r}")
        skills.append(skill)
    if not skills:
        return ParsedPlan([], False, "no steps")
    return ParsedPlan(skills, True, "")


def _parse_step(step: str) -> Skill | None:
    for pattern, kind in _SKILL_PATTERNS:
        match = pattern.match(step)
        if match is None:
            continue
        if kind == "place-table":
            return Skill("place", TABLE)
        color = match.group(1)
        return Skill(kind, color) if color in COLORS else None
    return None


# --------------------------------------------------------------------------------------------------
# Symbolic state
# --------------------------------------------------------------------------------------------------


class State(NamedTuple):
    """What each cube rests on, in scene order: ``table``, ``gripper`` or another cube's colour."""

    colors: tuple[str, ...]
    support: tuple[str, ...]

    def on(self, color: str) -> str:
        return self.support[self.colors.index(color)]

    @property
    def held(self) -> str | None:
        for c, s in zip(self.colors, self.support, strict=True):
            if s == GRIPPER:
                return c
        return None

    def is_clear(self, color: str) -> bool:
        """Nothing rests on this cube (and it is in the scene)."""
        return color in self.colors and color not in self.support

    def with_support(self, color: str, support: str) -> State:
        i = self.colors.index(color)
        return State(self.colors, self.support[:i] + (support,) + self.support[i + 1 :])


def apply_skill(state: State, skill: Skill) -> State | str:
    """The state after ``skill``, or a string saying which precondition failed."""
    held = state.held
    if skill.kind == "pick":
        if skill.target not in state.colors:
            return f"there is no {skill.target} cube"
        if held is not None:
            return f"the gripper already holds the {held} cube"
        if not state.is_clear(skill.target):
            return f"the {skill.target} cube is under another cube"
        return state.with_support(skill.target, GRIPPER)
    if held is None:
        return "the gripper holds nothing to place"
    if skill.target == TABLE:
        return state.with_support(held, TABLE)
    if skill.target not in state.colors:
        return f"there is no {skill.target} cube"
    if skill.target == held:
        return f"cannot place the {held} cube on itself"
    if not state.is_clear(skill.target):
        return f"the {skill.target} cube is under another cube"
    return state.with_support(held, skill.target)


def goal_reached(state: State, goal: Sequence[str]) -> bool:
    """The env's success test: every tower cube rests on the one below it and nothing is held."""
    return state.held is None and all(state.on(goal[k]) == goal[k - 1] for k in range(1, len(goal)))


def successors(state: State) -> Iterator[tuple[Skill, State]]:
    """Every applicable skill and its result, in the fixed order that makes reference plans unique."""
    for skill in skill_vocabulary(state.colors):
        nxt = apply_skill(state, skill)
        if isinstance(nxt, State):
            yield skill, nxt


@lru_cache(maxsize=4096)
def distances_to_goal(colors: tuple[str, ...], goal: tuple[str, ...], start: State) -> dict[State, int]:
    """Fewest skills from every reachable state to the goal. Every skill can be undone (pick <-> place), so
    the state graph is undirected and a breadth-first search from the goal states gives exact distances."""
    seen = {start}
    frontier = deque([start])
    while frontier:  # enumerate the component (a few dozen states for three cubes)
        for _, nxt in successors(frontier.popleft()):
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    dist = {s: 0 for s in seen if goal_reached(s, goal)}
    frontier = deque(dist)
    while frontier:
        s = frontier.popleft()
        for _, nxt in successors(s):
            if nxt not in dist:
                dist[nxt] = dist[s] + 1
                frontier.append(nxt)
    return dist


def shortest_plan(state: State, goal: Sequence[str]) -> list[Skill]:
    """A shortest plan: from each state take the first skill (fixed order) that lowers the distance by one."""
    goal = tuple(goal)
    dist = distances_to_goal(state.colors, goal, state)
    if state not in dist:
        raise ValueError(f"goal {goal} cannot be reached from {state}")
    plan = []
    while dist[state] > 0:
        skill, state = next((k, s) for k, s in successors(state) if dist.get(s) == dist[state] - 1)
        plan.append(skill)
    return plan


# --------------------------------------------------------------------------------------------------
# Tasks and their text
# --------------------------------------------------------------------------------------------------


def canonical(text: str) -> str:
    """Space-separated words and punctuation: "on the red cube, then" -> "on the red cube , then"."""
    return " ".join(re.sub(r"([.,:;])", r" \1 ", text).split())


def instruction_text(goal: Sequence[str]) -> str:
    """The env's ``instruction()`` wording for a tower (base first), in canonical form."""
    names = [f"the {c} cube" for c in goal]
    return canonical("stack " + ", then ".join(f"{names[k]} on {names[k - 1]}" for k in range(1, len(names))))


def _number(value: float) -> str:
    q = round(value / POSITION_GRID_M) * POSITION_GRID_M
    return f"{q:.2f}".replace("-0.00", "0.00")


@dataclass(frozen=True)
class PlannerTask:
    """One planning problem: a scene (cube colours, xy positions, supports) and a goal tower (base first)."""

    colors: tuple[str, ...]
    positions_xy_m: tuple[tuple[float, float], ...]
    """Table position of each cube; a stacked cube shares the xy of the cube it rests on."""
    support: tuple[str, ...]
    """``table`` or the colour of the cube below, per cube; never ``gripper`` (the hand starts empty)."""
    goal: tuple[str, ...]

    def __post_init__(self) -> None:
        n = len(self.colors)
        if len(set(self.colors)) != n or any(c not in COLORS for c in self.colors):
            raise ValueError(f"colors must be distinct names from {sorted(COLORS)}, got {self.colors}")
        if len(self.positions_xy_m) != n or len(self.support) != n:
            raise ValueError(f"need one position and one support per cube ({n}), got {self}")
        if not 2 <= len(self.goal) <= n or any(c not in self.colors for c in self.goal):
            raise ValueError(f"goal must be 2..{n} distinct scene colours, base first, got {self.goal}")
        for c, s in zip(self.colors, self.support, strict=True):
            if s != TABLE and (s not in self.colors or s == c):
                raise ValueError(f"the {c} cube rests on {s!r}; expected 'table' or another scene cube")

    @property
    def state(self) -> State:
        return State(self.colors, self.support)

    @property
    def prompt(self) -> str:
        return f"goal : {instruction_text(self.goal)} . scene : {self.scene_text()} plan :"

    def scene_text(self) -> str:
        parts = []
        for c, (x, y), s in zip(self.colors, self.positions_xy_m, self.support, strict=True):
            where = "on table" if s == TABLE else f"on {s} cube"
            parts.append(f"{c} cube at {_number(x)} {_number(y)} {where} .")
        return " ".join(parts)

    def reference_plan(self) -> list[Skill]:
        return shortest_plan(self.state, self.goal)

    def reference_text(self) -> str:
        return plan_text(self.reference_plan())

    def optimal_length(self) -> int:
        return distances_to_goal(self.colors, self.goal, self.state)[self.state]


@dataclass
class TaskConfig:
    """How planner tasks are drawn (colours, region and tower heights follow the stack-cubes task)."""

    palette: tuple[str, ...] = PandaStackCubesConfig.palette
    """Colours the cubes take, 3 distinct ones per task (names from the stack-cubes task's COLORS)."""
    stack_heights: tuple[int, ...] = (2, 3)
    """Goal tower heights to draw from uniformly (the env's stack_height: 2 or 3)."""
    prestacked_prob: float = 0.5
    """Chance that the scene starts with some cubes already stacked (the env always starts flat)."""

    def __post_init__(self) -> None:
        if len(set(self.palette)) < N_CUBES or any(c not in COLORS for c in self.palette):
            raise ValueError(
                f"palette must hold >= {N_CUBES} distinct colours from {sorted(COLORS)}, got {self.palette}"
            )
        if not self.stack_heights or any(h not in (2, 3) for h in self.stack_heights):
            raise ValueError(f"stack_heights must be a non-empty set of 2 and/or 3, got {self.stack_heights}")
        if not 0.0 <= self.prestacked_prob <= 1.0:
            raise ValueError(f"prestacked_prob must be in [0, 1], got {self.prestacked_prob}")


def _random_supports(rng: np.random.Generator, colors: tuple[str, ...]) -> tuple[str, ...]:
    """A random blocks-world arrangement: cubes in random order, each on the previous one or on the table."""
    order = [colors[i] for i in rng.permutation(len(colors))]
    support = {order[0]: TABLE}
    for prev, c in zip(order, order[1:], strict=False):
        support[c] = prev if rng.random() < 0.5 else TABLE
    return tuple(support[c] for c in colors)


def sample_task(rng: np.random.Generator, config: TaskConfig | None = None) -> PlannerTask:
    """One task whose goal is not already met. Positions follow the env's region and spacing rules."""
    config = config or TaskConfig()
    env_cfg = PandaStackCubesConfig
    center, half = np.asarray(env_cfg.cube_center_xy_m), np.asarray(env_cfg.cube_xy_half_range_m)
    while True:
        colors = tuple(config.palette[i] for i in rng.choice(len(config.palette), N_CUBES, replace=False))
        flat = rng.random() >= config.prestacked_prob
        support = tuple([TABLE] * N_CUBES) if flat else _random_supports(rng, colors)
        height = int(rng.choice(config.stack_heights))
        goal = tuple(colors[i] for i in rng.permutation(N_CUBES)[:height])
        if not goal_reached(State(colors, support), goal):
            break
    table_xy = _spread_positions(rng, center, half, env_cfg.min_cube_distance_m)
    positions: dict[str, tuple[float, float]] = {}
    for _ in range(N_CUBES):  # a stacked cube takes the xy of its (recursively resolved) base
        for i, c in enumerate(colors):
            s = support[i]
            if s == TABLE:
                positions[c] = table_xy[i]
            elif s in positions:
                positions[c] = positions[s]
    return PlannerTask(colors, tuple(positions[c] for c in colors), support, goal)


def _spread_positions(
    rng: np.random.Generator, center: np.ndarray, half: np.ndarray, min_distance: float
) -> list[tuple[float, float]]:
    placed: list[np.ndarray] = []
    while len(placed) < N_CUBES:
        xy = center + rng.uniform(-1.0, 1.0, 2) * half
        if all(np.linalg.norm(xy - other) >= min_distance for other in placed):
            placed.append(xy)
    return [(round(float(p[0]), 3), round(float(p[1]), 3)) for p in placed]


def sample_tasks(n: int, seed: int, config: TaskConfig | None = None) -> list[PlannerTask]:
    """``n`` tasks from one seed (the same seed always gives the same list)."""
    if n <= 0:
        raise ValueError(f"number of tasks must be positive, got {n}")
    rng = np.random.default_rng(seed)
    return [sample_task(rng, config) for _ in range(n)]


def task_from_scene(scene: Sequence[dict[str, Any]], goal: Sequence[str]) -> PlannerTask:
    """A task from the env's ``symbolic_scene()`` (cubes resting on the table or on each other) and a goal.

    The env's goal is the order of its cubes' ``goal_level``; ``task_from_env`` reads both from a live env.
    """
    colors = tuple(cube["color"] for cube in scene)
    support = []
    for cube in scene:
        on = cube["on"]
        if on == TABLE:
            support.append(TABLE)
        elif on.endswith(" cube") and on[: -len(" cube")] in colors:
            support.append(on[: -len(" cube")])
        else:
            raise ValueError(f"the {cube['color']} cube is {on!r} (held or moving); a planner scene needs it at rest")
    positions = tuple((float(c["position_m"][0]), float(c["position_m"][1])) for c in scene)
    return PlannerTask(colors, positions, tuple(support), tuple(goal))


def task_from_env(env: Any) -> PlannerTask:
    """The planner task of a reset ``PandaStackCubesEnv`` (its scene and its goal tower)."""
    base = env.unwrapped
    scene = base.symbolic_scene()
    tower = sorted((c for c in scene if c["goal_level"] is not None), key=lambda c: c["goal_level"])
    return task_from_scene(scene, [c["color"] for c in tower])


def corpus(tasks: Sequence[PlannerTask]) -> Iterator[str]:
    """Every text the planner reads or writes: prompts, reference plans, and each skill and number word
    once, so a tokenizer trained on it knows the whole closed vocabulary."""
    for task in tasks:
        yield task.prompt
        yield task.reference_text()
    yield plan_text(skill_vocabulary(tuple(COLORS)))
    yield " ".join(f"{c} cube on {c} cube" for c in COLORS)
    steps = int(math.ceil(1.0 / POSITION_GRID_M))
    yield " ".join(_number(k * POSITION_GRID_M) for k in range(-steps, steps + 1))
