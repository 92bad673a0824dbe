"""Planner data, verifier and tokenizer: exactness of the symbolic model, the step checker and the noise.

No model is trained here; everything is exact and fast.
"""

import numpy as np
import pytest

from policies.planner.data import (
    TABLE,
    PlannerTask,
    Skill,
    TaskConfig,
    canonical,
    corpus,
    instruction_text,
    parse_plan,
    plan_text,
    sample_tasks,
    task_from_env,
)
from policies.planner.verifier import Verifier, VerifierConfig, execute, first_flawed_step

TASKS = sample_tasks(300, seed=7)


def test_generation_is_seeded_and_varied():
    again = sample_tasks(300, seed=7)
    assert [t.prompt for t in again] == [t.prompt for t in TASKS]
    assert [t.prompt for t in sample_tasks(300, seed=8)] != [t.prompt for t in TASKS]
    lengths = {t.optimal_length() for t in TASKS}
    assert {2, 4, 6} <= lengths  # flat scenes and scenes that need unstacking
    assert any(s != TABLE for t in TASKS for s in t.support)
    assert all(not execute(t, []).success for t in TASKS)  # no task starts solved


def test_reference_plans_succeed_exactly_and_are_flaw_free():
    for task in TASKS:
        plan = task.reference_plan()
        assert execute(task, plan).success
        assert len(plan) == task.optimal_length()
        assert first_flawed_step(task, plan) == -1
        parsed = parse_plan(task.reference_text())
        assert parsed.format_ok and parsed.skills == plan
        assert Verifier().score(task, task.reference_text()).reward == 1.0


def test_corrupted_plans_fail():
    verifier = Verifier()
    for task in TASKS[:100]:
        plan = task.reference_plan()
        truncated = plan[:-1]  # the last place is missing: the cube stays in the gripper
        assert not execute(task, truncated).success
        others = [c for c in task.colors if c != plan[-1].target]
        wrong_place = plan[:-1] + [Skill("place", others[0])]
        assert not execute(task, wrong_place).success
        swapped = plan[2:] + plan[:2] if len(plan) >= 4 else plan[1:] + plan[:1]
        assert not execute(task, swapped).success
        v = verifier.score(task, plan_text(truncated))
        assert v.format_ok and not v.success and v.reward == pytest.approx(0.1)
        assert verifier.score(task, task.reference_text(), truncated=True).reward == 0.0


def test_preconditions_and_format_errors():
    task = PlannerTask(("red", "green", "blue"), ((0.5, 0.1),) * 3, ("table", "red", "table"), ("blue", "red"))
    assert execute(task, [Skill("pick", "red")]).failure == "the red cube is under another cube"
    assert execute(task, [Skill("place", "red")]).failure == "the gripper holds nothing to place"
    assert execute(task, [Skill("pick", "yellow")]).failure == "there is no yellow cube"
    two_picks = execute(task, [Skill("pick", "green"), Skill("pick", "blue")])
    assert two_picks.failed_step == 1 and "already holds" in two_picks.failure
    for bad in ("", "pick the red cube", "pick the cyan cube .", "grab the red cube .", "pick the red cube . ."):
        parsed = parse_plan(bad)
        assert not parsed.format_ok or bad.endswith(". ."), bad
    assert parse_plan("pick the red cube . . place it on the table .").skills == [
        Skill("pick", "red"), Skill("place", TABLE)
    ]
    # Unstack green, then build red on blue: optimal length 4.
    assert task.optimal_length() == 4 and execute(task, task.reference_plan()).success


def test_step_checker_finds_the_first_detour():
    task = PlannerTask(("red", "green", "blue"), ((0.5, 0.1), (0.4, 0.0), (0.6, -0.1)), (TABLE,) * 3,
                       ("red", "green"))
    best = [Skill("pick", "green"), Skill("place", "red")]
    detour = [Skill("pick", "blue"), Skill("place", TABLE), *best]  # succeeds, with a pointless move first
    assert execute(task, detour).success
    assert first_flawed_step(task, best) == -1
    assert first_flawed_step(task, detour) == 0
    after = [*best, Skill("pick", "blue"), Skill("place", TABLE)]  # succeeds, extra move at the end
    assert execute(task, after).success and first_flawed_step(task, after) == 2
    assert Verifier().score(task, plan_text(after)).flawed


def test_noisy_verifier_rates_match():
    fp, fn = 0.2, 0.3
    verifier = Verifier(VerifierConfig(fp_rate=fp, fn_rate=fn), seed=3)
    good = [verifier.score(t, t.reference_text()) for t in TASKS for _ in range(10)]
    bad = [verifier.score(t, plan_text(t.reference_plan()[:-1])) for t in TASKS for _ in range(10)]
    assert all(v.true_success for v in good) and not any(v.true_success for v in bad)
    fn_seen = np.mean([not v.success for v in good])
    fp_seen = np.mean([v.success for v in bad])
    # 3000 draws each: the binomial std is <= 0.009, so 0.03 is > 3 sigma.
    assert abs(fn_seen - fn) < 0.03 and abs(fp_seen - fp) < 0.03
    with pytest.raises(ValueError, match="fp_rate"):
        VerifierConfig(fp_rate=0.6, fn_rate=0.5)


def test_bad_task_input_is_named():
    with pytest.raises(ValueError, match="cyan"):
        PlannerTask(("red", "cyan", "blue"), ((0, 0),) * 3, (TABLE,) * 3, ("red", "blue"))
    with pytest.raises(ValueError, match="goal"):
        PlannerTask(("red", "green", "blue"), ((0, 0),) * 3, (TABLE,) * 3, ("red",))
    with pytest.raises(ValueError, match="stack_heights"):
        TaskConfig(stack_heights=(4,))


def test_tokenizer_round_trip(tmp_path):
    from policies.planner.tokenizer import decode, encode, load_tokenizer, train_tokenizer

    tok = train_tokenizer(corpus(TASKS[:50]))
    texts = [t.prompt + " " + t.reference_text() for t in TASKS[50:]]  # tasks it was not trained on
    for text in texts:
        ids = encode(tok, text)
        assert tok.unk_token_id not in ids
        assert decode(tok, ids) == text
        assert decode(tok, [tok.bos_token_id, *ids, tok.eos_token_id]) == text
    tok.save_pretrained(str(tmp_path))
    again = load_tokenizer(tmp_path)
    assert encode(again, texts[0]) == encode(tok, texts[0])
    assert len(tok) < 80  # one token per word of a closed vocabulary


def test_task_from_the_stack_cubes_env_matches_its_instruction():
    import envs

    env = envs.make("stack-cubes")
    try:
        env.reset(seed=4)
        task = task_from_env(env)
        assert instruction_text(task.goal) == canonical(env.unwrapped.instruction())
        assert set(task.colors) <= set(env.unwrapped.config.palette)
        assert execute(task, task.reference_plan()).success
        assert len(task.reference_plan()) == env.unwrapped.n_substeps  # pick + place per tower cube
    finally:
        env.close()


def test_plans_run_in_mujoco_with_the_scripted_expert():
    """The optional MuJoCo check agrees with the symbolic verifier on a good, a detour and a wrong plan."""
    from envs.panda_stack_cubes import PandaStackCubesConfig
    from policies.planner.mujoco_check import execute_in_mujoco

    config = PandaStackCubesConfig(stack_height=2)
    idle = execute_in_mujoco([], seed=3, config=config)  # empty plan: nothing moves, the tower is not built
    assert not idle.success and idle.env_steps == 0
    task = idle.task
    reference = task.reference_plan()
    good = execute_in_mujoco(reference, seed=3, config=config)
    assert good.success and good.pairs_run == 1
    detour = [Skill("pick", task.goal[1]), Skill("place", TABLE), *reference]
    moved = execute_in_mujoco(detour, seed=3, config=config)
    assert moved.success and moved.pairs_run == 2 and execute(task, detour).success
    distractor = next(c for c in task.colors if c not in task.goal)
    wrong = [reference[0], Skill("place", distractor)]
    assert not execute_in_mujoco(wrong, seed=3, config=config).success and not execute(task, wrong).success
