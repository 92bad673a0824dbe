"""Task inertia and its singular-value guard."""

import mujoco
import numpy as np
import pytest

from controllers.task_space import GuardedSpdInverse, TaskSpace
from tests.controllers.panda_arm import SINGULAR_Q, make_arm


def random_spd(rng, eigenvalues):
    basis, _ = np.linalg.qr(rng.normal(size=(len(eigenvalues), len(eigenvalues))))
    return basis @ np.diag(eigenvalues) @ basis.T


def test_guarded_inverse_is_exact_above_the_floor():
    rng = np.random.default_rng(1)
    mat = random_spd(rng, [0.05, 0.2, 1.0, 4.0, 9.0, 20.0])
    inverse = GuardedSpdInverse(6, floor=0.01)
    estimates = []
    for _ in range(100):  # the estimate converges by inverse iteration (refreshed every 8th call here)
        assert not inverse.factor(mat)
        estimates.append(inverse.min_eigenvalue)
    rhs = rng.normal(size=6)
    np.testing.assert_allclose(inverse.solve(np.zeros(6), rhs), np.linalg.solve(mat, rhs), rtol=1e-10)
    assert min(estimates) >= 0.05 - 1e-12  # an upper bound...
    assert estimates[-1] == pytest.approx(0.05, rel=1e-6)  # ... that converges


def test_guard_raises_small_eigenvalues_to_the_floor():
    """Eigenvalues below the floor are replaced by it: the inverse is capped at 1 / floor along them."""
    rng = np.random.default_rng(2)
    eigenvalues = np.array([1e-6, 0.003, 1.0, 2.0, 5.0, 8.0])
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    mat = basis @ np.diag(eigenvalues) @ basis.T
    inverse = GuardedSpdInverse(6, floor=0.01)
    assert inverse.factor(mat)
    expected = basis @ np.diag(1.0 / np.maximum(eigenvalues, 0.01)) @ basis.T
    rhs = rng.normal(size=6)
    np.testing.assert_allclose(inverse.solve(np.zeros(6), rhs), expected @ rhs, rtol=1e-9)


def test_guard_is_continuous_at_the_floor():
    """Just above and just below the floor the two paths give the same answer (no jump in torque)."""
    rng = np.random.default_rng(3)
    basis, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rhs = rng.normal(size=6)
    answers = []
    for smallest in (0.01 * (1 + 1e-9), 0.01 * (1 - 1e-9)):
        inverse = GuardedSpdInverse(6, floor=0.01)
        mat = basis @ np.diag([smallest, 0.5, 1.0, 2.0, 3.0, 4.0]) @ basis.T
        for _ in range(20):
            inverse.factor(mat)
        answers.append(inverse.solve(np.zeros(6), rhs).copy())
    np.testing.assert_allclose(answers[0], answers[1], rtol=1e-6)


def test_task_inertia_at_home_and_at_the_singular_configuration():
    for q, singular in ((None, False), (SINGULAR_Q, True)):
        arm = make_arm() if q is None else make_arm(q=q)
        task = TaskSpace(arm.robot, inertia_inv_floor=1e-2)
        task.update()
        assert task.update_inertia() == singular
        nv = arm.model.nv  # the whole mass matrix: the fingers ride on the arm
        mass = np.zeros((nv, nv))
        column = np.zeros(nv)
        for i, unit in enumerate(np.eye(nv)):
            mujoco.mj_mulM(arm.model, arm.data, column, unit)
            mass[:, i] = column
        jac = arm.robot.jac_full
        expected = jac @ np.linalg.solve(mass, jac.T)
        np.testing.assert_allclose(task.inertia_inv, expected, rtol=1e-9, atol=1e-12)
