"""Per-study analysis of a trials table: ranks, front, hypervolume, knee and best-at queries.

This is the bridge from the pandas table to the numpy maths of :mod:`analysis.pareto` and
:mod:`analysis.hypervolume`. Only finished trials are ranked; the other states are counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import json

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.hypervolume import hypervolume, hypervolume_progress
from analysis.load import finished, state_counts
from analysis.objectives import CHANCE_ACCURACY, Objective, default_reference, objective_values
from analysis.pareto import best_subject_to, knee_index, non_dominated_ranks

RANK_COLUMN = "pareto_rank"  # 0 = front, -1 = a NaN objective
# "At chance level": an accuracy at most this multiple of 1 / number of classes. A collapsed
# network predicts one class and scores that class's share (11.35% of MNIST's test images).
CHANCE_MARGIN = 1.5


@dataclass(frozen=True)
class StudySummary:
    study: str
    state_counts: dict[str, int]
    objectives: tuple[Objective, ...]
    reference: tuple[float, ...]
    hypervolume: float
    ranked: pd.DataFrame          # the finished trials with a pareto_rank column
    knee_trial_id: str | None     # only for two objectives

    @property
    def front(self) -> pd.DataFrame:
        """Rank-0 trials, by increasing second objective (sparsity by default)."""
        front = self.ranked[self.ranked[RANK_COLUMN] == 0]
        return front.sort_values([self.objectives[1].column, "trial_number"]).reset_index(drop=True)


def rank_trials(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.Series:
    values = objective_values(trials, objectives)
    ranks = non_dominated_ranks(values, [o.direction for o in objectives])
    return pd.Series(ranks, index=trials.index, name=RANK_COLUMN)


def summarise_study(
    trials: pd.DataFrame,
    objectives: Sequence[Objective],
    reference: Sequence[float] | None = None,
) -> StudySummary:
    """Analyse one study's trials (every state); raises if none finished."""
    if trials.empty:
        raise AnalysisError("no trials recorded: nothing to analyse")
    study = str(trials["study"].iloc[0])
    counts = state_counts(trials).get(study, {})
    done = finished(trials)
    if done.empty:
        others = ", ".join(f"{n} {state}" for state, n in counts.items() if n) or "no trials at all"
        raise AnalysisError(f"study {study} has no finished trials ({others}): nothing to analyse")
    directions = [o.direction for o in objectives]
    values = objective_values(done, objectives)
    empty = [o.name for o, column in zip(objectives, values.T) if np.isnan(column).all()]
    if empty:
        raise AnalysisError(f"study {study}: no finished trial has a value for {', '.join(empty)}")
    reference = tuple(reference) if reference is not None else default_reference(done, objectives)
    ranked = done.assign(**{RANK_COLUMN: non_dominated_ranks(values, directions)})
    knee = knee_index(values, directions) if len(objectives) == 2 else None
    return StudySummary(
        study=study,
        state_counts=counts,
        objectives=tuple(objectives),
        reference=reference,
        hypervolume=hypervolume(values, reference, directions),
        ranked=ranked,
        knee_trial_id=None if knee is None else str(done["trial_id"].iloc[knee]),
    )


def summarise(
    trials: pd.DataFrame,
    objectives: Sequence[Objective],
    reference: Sequence[float] | None = None,
) -> list[StudySummary]:
    """One summary per study, in order of first appearance."""
    return [
        summarise_study(group, objectives, reference)
        for _, group in trials.groupby("study", sort=False)
    ]


def progress(summary: StudySummary) -> tuple[np.ndarray, np.ndarray]:
    """Trial numbers of the finished trials and the hypervolume after each (search progress)."""
    ordered = summary.ranked.sort_values("trial_number")
    values = objective_values(ordered, summary.objectives)
    directions = [o.direction for o in summary.objectives]
    volumes = hypervolume_progress(values, summary.reference, directions)
    return ordered["trial_number"].to_numpy(dtype=np.int64), volumes


def best_accuracy_at_sparsity(trials: pd.DataFrame, minimum_sparsity: float) -> pd.Series | None:
    """The finished trial with the best validation accuracy among those at sparsity >= s."""
    return _best(trials, "metric_val_acc", "metric_sparsity", minimum_sparsity)


def best_sparsity_at_accuracy(trials: pd.DataFrame, minimum_accuracy: float) -> pd.Series | None:
    """The finished trial with the best sparsity among those at validation accuracy >= a."""
    return _best(trials, "metric_sparsity", "metric_val_acc", minimum_accuracy)


def _best(trials: pd.DataFrame, objective: str, constraint: str, minimum: float) -> pd.Series | None:
    done = finished(trials)
    index = best_subject_to(
        done[objective].to_numpy(dtype=float, na_value=np.nan),
        done[constraint].to_numpy(dtype=float, na_value=np.nan),
        minimum,
    )
    return None if index is None else done.iloc[index]


def chance_accuracy_of(trials: pd.DataFrame) -> float | None:
    """1 / number of classes of the trials' dataset (``param_dataset``, else ``config_json``);
    None when it is not recorded, unknown, or differs between trials."""
    datasets = set(trials.get("param_dataset", pd.Series(dtype=object)).dropna().astype(str))
    if not datasets:
        datasets = {_config_dataset(text) for text in trials.get("config_json", pd.Series(dtype=object)).dropna()}
    chances = {CHANCE_ACCURACY.get(d) for d in datasets}
    return chances.pop() if len(chances) == 1 and None not in chances else None


def _config_dataset(text: str) -> str | None:
    try:
        dataset = json.loads(text).get("dataset")
    except (ValueError, TypeError, AttributeError):
        return None
    return dataset if isinstance(dataset, str) else None


def at_chance(accuracy, chance: float | None) -> np.ndarray:
    """Which accuracies (fractions) are at or below chance level (``CHANCE_MARGIN`` x chance);
    all False when the chance accuracy is unknown; NaN is not at chance."""
    accuracy = np.asarray(pd.to_numeric(pd.Series(accuracy, dtype=object), errors="coerce"), dtype=float)
    if chance is None:
        return np.zeros(accuracy.shape, dtype=bool)
    return accuracy <= CHANCE_MARGIN * chance
