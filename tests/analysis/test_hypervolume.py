"""Hypervolume: hand-computed cases, and the numpy fallback against optuna's implementation."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.hypervolume import exact_hypervolume, hypervolume, hypervolume_progress

MAX2 = ["maximize", "maximize"]


@pytest.mark.parametrize("backend", ["numpy", "optuna"])
@pytest.mark.parametrize("points, reference, directions, expected", [
    ([[0.5, 0.5]], [0, 0], MAX2, 0.25),
    ([[1.0, 0.2], [0.2, 1.0]], [0, 0], MAX2, 0.36),
    ([[1.0, 0.2], [0.2, 1.0], [0.2, 0.2], [1.0, 0.2]], [0, 0], MAX2, 0.36),  # dominated, duplicate
    ([[0.9, 0.5], [0.05, 0.99]], [0.1, 0.0], MAX2, 0.4),   # below chance accuracy: nothing
    ([[0.9, 0.0]], [0.1, 0.0], MAX2, 0.0),                 # equal to the reference in sparsity
    ([[np.nan, 0.5], [0.6, 0.5]], [0.1, 0.0], MAX2, 0.25),  # NaN ignored
    ([[1, 1, 1]], [0, 0, 0], ["maximize"] * 3, 1.0),
    ([[1, 1, 0.5], [0.5, 0.5, 1]], [0, 0, 0], ["maximize"] * 3, 0.625),
    ([[0.2, 0.3, 4.0]], [1.0, 1.0, 10.0], ["minimize", "minimize", "minimize"], 0.8 * 0.7 * 6.0),
    ([], [0, 0], MAX2, 0.0),
])
def test_hand_computed(points, reference, directions, expected, backend):
    values = np.array(points, dtype=float).reshape(-1, len(reference))
    assert hypervolume(values, reference, directions, backend=backend) == pytest.approx(expected)


@pytest.mark.parametrize("n_objectives", [2, 3, 4])
@pytest.mark.parametrize("seed", range(5))
def test_numpy_agrees_with_optuna(n_objectives, seed):
    from optuna._hypervolume import compute_hypervolume

    rng = np.random.default_rng(seed)
    points = rng.random((40, n_objectives))
    points[:5] = np.round(points[:5], 1)  # some ties
    points[5] = points[6]                 # a duplicate
    reference = np.full(n_objectives, 1.1)
    expected = compute_hypervolume(points, reference)
    assert exact_hypervolume(points, reference) == pytest.approx(expected, rel=1e-12)
    directions = ["minimize"] * n_objectives
    assert hypervolume(points, reference, directions, backend="numpy") == pytest.approx(expected, rel=1e-12)
    assert hypervolume(points, reference, directions, backend="optuna") == pytest.approx(expected, rel=1e-12)


def test_progress_in_trial_order():
    values = np.array([[0.5, 0.5], [0.2, 0.2], [np.nan, 0.9], [1.0, 0.2], [0.05, 0.9]])
    progress = hypervolume_progress(values, [0.1, 0.0], MAX2, backend="numpy")
    np.testing.assert_allclose(progress, [0.2, 0.2, 0.2, 0.2 + 0.5 * 0.2, 0.3])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("backend", ["numpy", "optuna"])
def test_progress_is_the_hypervolume_of_every_prefix(seed, backend):
    """The progress curve keeps only the running front: it must equal recomputing each prefix."""
    rng = np.random.default_rng(seed)
    n_objectives = 2 + seed % 2
    values = rng.integers(0, 5, size=(40, n_objectives)).astype(float) / 5  # ties, duplicates
    values[rng.random(40) < 0.1, 0] = np.nan
    directions = [rng.choice(["maximize", "minimize"]) for _ in range(n_objectives)]
    reference = [-0.1 if d == "maximize" else 1.1 for d in directions]
    expected = [hypervolume(values[: k + 1], reference, directions, backend=backend) for k in range(40)]
    progress = hypervolume_progress(values, reference, directions, backend=backend)
    np.testing.assert_allclose(progress, expected, rtol=1e-12)


def test_bad_backend_and_reference():
    with pytest.raises(ValueError, match="backend"):
        hypervolume(np.array([[0.5, 0.5]]), [0, 0], MAX2, backend="pymoo")
    with pytest.raises(ValueError, match="NaN"):
        hypervolume(np.array([[0.5, 0.5]]), [np.nan, 0], MAX2)
