"""Per-study analysis of a trials table: ranks, front, hypervolume, knee and best-at queries.

This is the bridge from the pandas table to the numpy maths of :mod:`analysis.pareto` and
:mod:`analysis.hypervolume`. Only finished trials are ranked; the other states are counted.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.hypervolume import hypervolume, hypervolume_progress
from analysis.load import finished, state_counts
from analysis.objectives import Objective, default_reference, objective_values
from analysis.pareto import best_subject_to, knee_index, non_dominated_ranks

RANK_COLUMN = "pareto_rank"  # 0 = front, -1 = a NaN objective


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
    study = str(trials["study"].iloc[0]) if len(trials) else "?"
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
