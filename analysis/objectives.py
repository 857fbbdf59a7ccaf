"""Which trial columns are optimised, in which direction, and the default hypervolume reference.

An objective is written ``NAME[:max|min]`` where NAME is a metric (``val_acc``), a column
(``metric_val_acc``) or a parameter. The default pair is validation accuracy and sparsity, both
maximised. Test accuracy is refused: it is reported, never used to choose trials.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.pareto import MAXIMIZE, MINIMIZE

# Chance accuracy per dataset: the default hypervolume reference for an accuracy objective.
CHANCE_ACCURACY = {"mnist": 0.1, "fashion_mnist": 0.1, "cifar10": 0.1, "synthetic": 0.1}

# name: (direction, label, unit, default reference or "chance")
_KNOWN: dict[str, tuple[str, str, str, float | str | None]] = {
    "val_acc": (MAXIMIZE, "validation accuracy", "%", "chance"),
    "val_acc_dense": (MAXIMIZE, "dense validation accuracy", "%", "chance"),
    "sparsity": (MAXIMIZE, "sparsity", "%", 0.0),
    "sparsity_all": (MAXIMIZE, "sparsity of all parameters", "%", 0.0),
    "compression": (MAXIMIZE, "compression", "×", 1.0),
    "nonzeros": (MINIMIZE, "non-zero parameters", "", None),  # None: the worst value seen
    "epoch_time_s": (MINIMIZE, "epoch time", "s", None),
}
_DIRECTIONS = {"max": MAXIMIZE, "maximize": MAXIMIZE, "min": MINIMIZE, "minimize": MINIMIZE}


@dataclass(frozen=True)
class Objective:
    name: str       # short name, e.g. "val_acc"
    column: str     # trials-table column, e.g. "metric_val_acc"
    direction: str  # "maximize" or "minimize"

    @property
    def is_fraction(self) -> bool:
        """A value in [0, 1] shown in percent (accuracies and sparsities)."""
        return _KNOWN.get(self.name, (None, None, ""))[2] == "%"

    @property
    def label(self) -> str:
        _, text, unit, _ = _KNOWN.get(self.name, (None, self.name, "", None))
        return f"{text} ({unit})" if unit else text


DEFAULT_OBJECTIVES = (
    Objective("val_acc", "metric_val_acc", MAXIMIZE),
    Objective("sparsity", "metric_sparsity", MAXIMIZE),
)


def parse_objective(spec: str) -> Objective:
    """``"val_acc"``, ``"metric_sparsity:max"`` or ``"epoch_time_s:min"`` -> an Objective."""
    name, _, direction = spec.partition(":")
    name = name.removeprefix("metric_")
    if name.startswith("test_acc"):
        raise AnalysisError(f"objective {spec!r}: test accuracy is reported, never used to choose trials")
    if direction:
        if direction.lower() not in _DIRECTIONS:
            raise AnalysisError(f"objective {spec!r}: direction must be max or min")
        direction = _DIRECTIONS[direction.lower()]
    elif name in _KNOWN:
        direction = _KNOWN[name][0]
    else:
        raise AnalysisError(f"objective {spec!r}: give its direction, e.g. {name}:max or {name}:min")
    column = name if name.startswith("param_") else "metric_" + name
    return Objective(name.removeprefix("param_"), column, direction)


def parse_objectives(specs: Sequence[str] | None) -> tuple[Objective, ...]:
    if not specs:
        return DEFAULT_OBJECTIVES
    objectives = tuple(parse_objective(spec) for spec in specs)
    if len(objectives) < 2:
        raise AnalysisError(f"objectives {list(specs)}: a front needs at least two")
    return objectives


def objective_values(trials: pd.DataFrame, objectives: Sequence[Objective]) -> np.ndarray:
    """The ``(n_trials, n_objectives)`` float array of the objectives' columns (NaN for nulls)."""
    missing = [o.column for o in objectives if o.column not in trials.columns]
    if missing:
        raise AnalysisError(f"no column {', '.join(missing)} in the trials table")
    columns = [pd.to_numeric(trials[o.column], errors="coerce") for o in objectives]
    return np.column_stack([c.to_numpy(dtype=float, na_value=np.nan) for c in columns])


def default_reference(trials: pd.DataFrame, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """Chance accuracy for accuracies, 0 for sparsities, 1 for compression.

    Another objective has no natural reference: its worst value among ``trials`` is used, which
    depends on the data (give ``--hv-reference`` to compare studies on equal terms).
    """
    reference = []
    for objective in objectives:
        default = _KNOWN.get(objective.name, (None, None, None, None))[3]
        if default == "chance":
            default = chance_accuracy(trials)
        if default is None:
            values = objective_values(trials, [objective])[:, 0]
            worst = np.nanmax(values) if objective.direction == MINIMIZE else np.nanmin(values)
            default = 0.0 if np.isnan(worst) else worst
        reference.append(float(default))
    return tuple(reference)


def chance_accuracy(trials: pd.DataFrame) -> float:
    """The chance accuracy of the trials' dataset(s), which must agree."""
    datasets = sorted(set(trials.get("param_dataset", pd.Series(dtype=str)).dropna()))
    unknown = [d for d in datasets if d not in CHANCE_ACCURACY]
    if not datasets or unknown:
        raise AnalysisError(
            f"unknown chance accuracy for dataset(s) {unknown or 'not recorded'}"
            f" (known: {', '.join(CHANCE_ACCURACY)}): give the reference point with --hv-reference"
        )
    chances = {CHANCE_ACCURACY[d] for d in datasets}
    if len(chances) > 1:
        raise AnalysisError(f"datasets {datasets} have different chance accuracies: give --hv-reference")
    return chances.pop()


def parse_reference(text: str, objectives: Sequence[Objective]) -> tuple[float, ...]:
    """``"0.1,0"`` -> (0.1, 0.0), one value per objective."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise AnalysisError(f"reference point {text!r}: expected comma-separated numbers") from None
    if len(values) != len(objectives) or any(np.isnan(values)):
        names = ", ".join(o.name for o in objectives)
        raise AnalysisError(f"reference point {text!r}: expected {len(objectives)} numbers ({names})")
    return values
