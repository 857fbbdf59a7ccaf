"""Non-dominated sorting, knee and queries against brute-force references and known fronts."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from analysis.pareto import (
    best_subject_to, direction_signs, knee_index, non_dominated_ranks, pareto_front_mask,
)


def brute_force_ranks(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """O(n^2) per front, straight from the definition."""
    points = values * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])

    def dominates(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))

    ranks = np.full(len(points), -1)
    remaining = [i for i in range(len(points)) if not np.isnan(points[i]).any()]
    rank = 0
    while remaining:
        front = [i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining)]
        ranks[front] = rank
        remaining = [i for i in remaining if i not in front]
        rank += 1
    return ranks


@pytest.mark.parametrize("seed", range(12))
def test_ranks_match_brute_force_with_ties_duplicates_and_nan(seed):
    rng = np.random.default_rng(seed)
    n_objectives = 2 + seed % 3
    values = rng.integers(0, 5, size=(60, n_objectives)).astype(float)  # many ties and duplicates
    values[rng.random(60) < 0.1, rng.integers(n_objectives)] = np.nan
    values[10] = values[3]  # an explicit duplicate
    directions = [rng.choice(["maximize", "minimize"]) for _ in range(n_objectives)]
    np.testing.assert_array_equal(
        non_dominated_ranks(values, directions), brute_force_ranks(values, directions)
    )


def test_ranks_on_a_hand_made_example():
    #            acc   sparsity   (both maximised)
    values = np.array([
        [0.99, 0.50],  # front
        [0.98, 0.90],  # front
        [0.98, 0.90],  # duplicate of a front point: also front
        [0.97, 0.50],  # dominated by 0 only -> rank 1
        [0.97, 0.40],  # dominated by 0 and 3 -> rank 2
        [np.nan, 0.99],  # NaN -> -1
        [0.90, 0.99],  # front (best sparsity)
    ])
    ranks = non_dominated_ranks(values, ["maximize", "maximize"])
    assert ranks.tolist() == [0, 0, 0, 1, 2, -1, 0]
    assert pareto_front_mask(values, ["max", "max"]).tolist() == [True, True, True, False, False, False, True]


def test_empty_and_bad_input():
    assert non_dominated_ranks(np.zeros((0, 2)), ["maximize", "maximize"]).tolist() == []
    with pytest.raises(ValueError, match="direction 'up'"):
        direction_signs(["up"])
    with pytest.raises(ValueError, match="do not match"):
        non_dominated_ranks(np.zeros((3, 2)), ["maximize"])


def test_knee_on_a_known_front():
    values = np.array([
        [1.00, 0.00],  # extreme: best accuracy
        [0.95, 0.50],
        [0.90, 0.80],  # the knee: farthest above the line acc + sparsity = 1
        [0.00, 1.00],  # extreme: best sparsity
        [0.50, 0.50],  # dominated
    ])
    assert knee_index(values, ["maximize", "maximize"]) == 2
    # The same front with one objective minimised (error instead of accuracy).
    flipped = values.copy()
    flipped[:, 0] = 1 - flipped[:, 0]
    assert knee_index(flipped, ["minimize", "maximize"]) == 2


@pytest.mark.parametrize("values", [
    [[1.0, 0.0], [0.0, 1.0]],                     # two points
    [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]],         # straight
    [[1.0, 0.0], [0.2, 0.2], [0.0, 1.0]],         # bends away from the ideal point
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],         # duplicates: two distinct points
    [[np.nan, 0.0], [np.nan, 0.5], [1.0, np.nan]],  # NaN only: no front
    np.zeros((0, 2)),
])
def test_no_knee(values):
    assert knee_index(np.array(values), ["maximize", "maximize"]) is None


def test_best_subject_to():
    accuracy = np.array([0.99, 0.98, 0.97, 0.97, np.nan, 0.60])
    sparsity = np.array([0.50, 0.90, 0.99, 0.995, 0.999, 0.9999])
    assert best_subject_to(accuracy, sparsity, 0.9) == 1         # best accuracy at sparsity >= 90%
    assert best_subject_to(accuracy, sparsity, 0.99) == 3        # tie at 97%: the sparser one
    assert best_subject_to(accuracy, sparsity, 0.99999) is None  # nothing qualifies
    assert best_subject_to(sparsity, accuracy, 0.97) == 3        # best sparsity at accuracy >= 97%


def test_duplicates_share_rank_in_every_permutation():
    values = np.array([[1.0, 1.0], [1.0, 1.0], [0.5, 0.5], [0.5, 0.5]])
    for order in itertools.permutations(range(4)):
        ranks = non_dominated_ranks(values[list(order)], ["maximize", "maximize"])
        assert sorted(ranks.tolist()) == [0, 0, 1, 1]
