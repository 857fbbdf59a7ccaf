"""Which searched parameters mattered: rank correlations and per-choice summaries.

Spearman's rank correlation is used because the parameters are searched on log scales and their
effects are monotone more often than linear; it needs no model fitted on a few dozen trials
(fANOVA and friends are unstable there). The threshold sqrt(2 lambda / beta) is included
beside lambda and beta: under the modified rule it is the only way they enter the update.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.objectives import MAXIMIZE, Objective
from analysis.schema import PARAM_PREFIX

THRESHOLD_COLUMN = "metric_threshold"


@dataclass(frozen=True)
class Correlation:
    column: str                  # param_* (or metric_threshold)
    rho: tuple[float, ...]       # one per objective; NaN where undefined (a constant column)
    trials: int                  # trials with every value present


@dataclass(frozen=True)
class ChoiceSummary:
    column: str
    value: str
    trials: int
    on_front: int
    medians: tuple[float, ...]   # one per objective
    best: tuple[float, ...]      # one per objective, best in that objective's direction


def searched_columns(trials: pd.DataFrame) -> list[str]:
    """``param_*`` columns of the searched fields (from searched_json), else those that vary."""
    names: set[str] = set()
    for text in trials.get("searched_json", pd.Series(dtype=str)).dropna().unique():
        try:
            names.update(json.loads(text))
        except (ValueError, TypeError):
            continue
    columns = [PARAM_PREFIX + name for name in sorted(names) if PARAM_PREFIX + name in trials.columns]
    if columns:
        return columns
    params = [c for c in trials.columns if c.startswith(PARAM_PREFIX)]
    return [c for c in params if trials[c].nunique(dropna=True) > 1]


def is_numeric(values: pd.Series) -> bool:
    """A number column (booleans count as choices, not numbers)."""
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (average ranks for ties); NaN when either side is constant or too short."""
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return float("nan")
    rx = pd.Series(x[keep]).rank().to_numpy()
    ry = pd.Series(y[keep]).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def rank_correlations(trials: pd.DataFrame, objectives: Sequence[Objective]) -> list[Correlation]:
    """Spearman's rho of each numeric searched parameter, and the threshold, with each objective.

    A parameter that took a single value among ``trials`` (a fixed trial's grid) is left out.
    """
    columns = [c for c in searched_columns(trials) if is_numeric(trials[c]) and _varies(trials[c])]
    searched = {c.removeprefix(PARAM_PREFIX) for c in columns}
    threshold = trials.get(THRESHOLD_COLUMN)
    if searched & {"lam", "beta"} and threshold is not None and _varies(threshold):
        columns.append(THRESHOLD_COLUMN)
    result = []
    for column in columns:
        x = pd.to_numeric(trials[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        ys = [pd.to_numeric(trials[o.column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
              for o in objectives]
        present = np.isfinite(x) & np.all([np.isfinite(y) for y in ys], axis=0)
        result.append(Correlation(column, tuple(spearman(x, y) for y in ys), int(present.sum())))
    return result


def choice_summaries(trials: pd.DataFrame, objectives: Sequence[Objective],
                     on_front: pd.Series) -> list[ChoiceSummary]:
    """For each non-numeric searched parameter (the rule, say): how each choice fared."""
    result = []
    for column in searched_columns(trials):
        if is_numeric(trials[column]) or not _varies(trials[column]):
            continue
        for value, group in trials.groupby(trials[column].astype(str), sort=True):
            values = [pd.to_numeric(group[o.column], errors="coerce").astype(float) for o in objectives]
            result.append(ChoiceSummary(
                column=column, value=str(value), trials=len(group),
                on_front=int(on_front.loc[group.index].sum()),
                medians=tuple(float(v.median()) for v in values),
                best=tuple(float(v.max() if o.direction == MAXIMIZE else v.min())
                           for v, o in zip(values, objectives)),
            ))
    return result


def _varies(values: pd.Series) -> bool:
    return values.nunique(dropna=True) > 1
