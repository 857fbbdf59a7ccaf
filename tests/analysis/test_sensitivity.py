"""What mattered: rank correlations of the searched parameters, and how each rule fared."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.load import finished, load_results
from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.sensitivity import choice_summaries, rank_correlations, searched_columns, spearman


def test_spearman_is_one_for_any_increasing_relation_and_nan_when_constant():
    x = np.array([1e-6, 1e-5, 1e-4, 1e-3])
    assert spearman(x, np.log(x) ** 3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert np.isnan(spearman(x, np.ones(4)))
    assert np.isnan(spearman(x[:2], x[:2]))                     # too few to say
    assert spearman(np.array([1, 2, np.nan, 4.0]), np.array([1, 2, 3, 4.0])) == pytest.approx(1.0)


def trials_of(make_study, rows, **kwargs) -> pd.DataFrame:
    return finished(load_results([str(make_study("s", rows, **kwargs))]).trials)


def test_the_threshold_is_ranked_beside_lambda_and_beta(make_study, rvsm_rows):
    trials = trials_of(make_study, rvsm_rows(30))
    rho = {c.column: c.rho for c in rank_correlations(trials, DEFAULT_OBJECTIVES)}
    assert set(rho) == {"param_beta", "param_lam", "param_lr", "metric_threshold"}
    # The fabricated study prunes by threshold alone: sparsity follows it exactly.
    assert rho["metric_threshold"][1] > 0.99
    assert rho["metric_threshold"][0] < -0.3
    assert abs(rho["param_lr"][1]) < 0.5


def test_a_categorical_choice_is_summarised_per_value(make_study):
    rows = [{"rule": rule, "val_acc": acc, "sparsity": sp, "lam": 1e-4, "beta": 1.0}
            for rule, acc, sp in [("classic", 0.99, 0.5), ("classic", 0.97, 0.6),
                                  ("modified", 0.98, 0.9), ("modified", 0.96, 0.8)]]
    trials = trials_of(make_study, rows, searched=("rule", "lam"))
    assert searched_columns(trials) == ["param_lam", "param_rule"]
    on_front = pd.Series([True, False, True, False], index=trials.index)
    by_value = {c.value: c for c in choice_summaries(trials, DEFAULT_OBJECTIVES, on_front)}
    classic, modified = by_value["classic"], by_value["modified"]
    assert (classic.trials, classic.on_front) == (2, 1)
    assert classic.medians == pytest.approx((0.98, 0.55))
    assert modified.best == pytest.approx((0.98, 0.9))


def test_a_parameter_that_never_varied_says_nothing(make_study):
    rows = [{"lam": 1e-4, "beta": 0.1, "lr": lr, "rule": "modified", "val_acc": acc, "sparsity": 0.5}
            for lr, acc in [(1e-3, 0.97), (2e-3, 0.98), (3e-3, 0.99)]]
    trials = trials_of(make_study, rows, searched=("lam", "beta", "lr", "rule"))
    assert [c.column for c in rank_correlations(trials, DEFAULT_OBJECTIVES)] == ["param_lr"]
    assert choice_summaries(trials, DEFAULT_OBJECTIVES, trials["trial_number"] < 0) == []
