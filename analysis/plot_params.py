"""Each searched parameter against each objective: a grid of small scatter plots.

Parameters come from the trials' ``searched_json`` (else every parameter that varies). A
parameter searched on a log scale (the study file says so: :mod:`analysis.study_file`) gets a log
axis; without a study file, so does a positive parameter spread over more than a decade and a
half. A log axis draws the value 0 (a lambda = 0 baseline) a decade below the smallest positive
value; a text parameter gets a category axis.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

from analysis.errors import AnalysisError
from analysis.plot_style import (
    DEFAULT_DPI, column_label, configure_sparsity_axis, is_log_scaled, log_ticks, new_figure,
    sparsity_coordinate, study_style,
)
from analysis.objectives import Objective
from analysis.schema import PARAM_PREFIX
from analysis.sensitivity import is_numeric, searched_columns
from analysis.summary import RANK_COLUMN, StudySummary


@dataclass(frozen=True)
class ParamAxis:
    column: str
    label: str
    scale: str                          # "log", "linear" or "category"
    categories: tuple[str, ...] = ()
    zero_at: float | None = None        # log axis: where the value 0 is drawn (None: not drawn)


@dataclass(frozen=True)
class StudyParams:
    study: str
    x: tuple[tuple, ...]                # one tuple of values per parameter
    y: tuple[tuple[float, ...], ...]    # one tuple per objective
    on_front: tuple[bool, ...]


@dataclass(frozen=True)
class ParamsPlotInfo:
    params: tuple[ParamAxis, ...]
    objectives: tuple[tuple[str, str, str], ...]  # (name, label, scale) per row; scale: "sparsity"
                                                  # (the sparsity axis), "percent", "log" or "linear"
    studies: tuple[StudyParams, ...]
    sparsity_axis: str                        # how a sparsity objective is drawn
    accuracy_floor: float | None = None       # first objective (a fraction): lower values are
                                              # drawn on the bottom edge, as on the front plot


def params_plot_info(
    summaries: Sequence[StudySummary],
    *,
    sparsity_axis: str = "logit",
    log_scales: Mapping[str, bool] | None = None,
    accuracy_floor: float | None = None,
) -> ParamsPlotInfo:
    """What the parameter plot shows; ``log_scales``: {field: searched on a log scale}, from the
    study file (fields it leaves out, or None: decided by the values' spread); ``accuracy_floor``:
    the lowest accuracy of the first row's range (the front plot's ``y_range[0]``)."""
    trials = pd.concat([s.ranked for s in summaries], ignore_index=True)
    params = tuple(_param_axis(trials, column, (log_scales or {}).get(column.removeprefix(PARAM_PREFIX)))
                   for column in searched_columns(trials))
    if not params:
        raise AnalysisError("no searched parameter to plot: no searched_json and no parameter varies")
    objectives = summaries[0].objectives
    studies = tuple(
        StudyParams(
            study=s.study,
            x=tuple(tuple(s.ranked[p.column].tolist()) for p in params),
            y=tuple(tuple(s.ranked[o.column].astype(float).tolist()) for o in objectives),
            on_front=tuple((s.ranked[RANK_COLUMN] == 0).tolist()),
        )
        for s in summaries
    )
    rows = tuple((o.name, o.label, _objective_scale(o, trials)) for o in objectives)
    floor = accuracy_floor if rows[0][2] == "percent" else None
    return ParamsPlotInfo(params, rows, studies, sparsity_axis, floor)


def _objective_scale(objective: Objective, trials: pd.DataFrame) -> str:
    if objective.name.startswith("sparsity"):
        return "sparsity"
    if objective.is_fraction:
        return "percent"
    values = pd.to_numeric(trials[objective.column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return "log" if is_log_scaled(values[values > 0]) else "linear"


def _param_axis(trials: pd.DataFrame, column: str, searched_log: bool | None = None) -> ParamAxis:
    values = trials[column]
    if not is_numeric(values):
        categories = tuple(sorted(values.dropna().astype(str).unique()))
        return ParamAxis(column, column_label(column, trials), "category", categories)
    numbers = values.to_numpy(dtype=float, na_value=np.nan)
    positive = numbers[numbers > 0]
    finite = numbers[np.isfinite(numbers)]
    log = is_log_scaled(positive) if searched_log is None else searched_log
    if not log or not positive.size or np.any(finite < 0):
        return ParamAxis(column, column_label(column, trials), "linear")
    has_zero = np.any(finite == 0)
    zero_at = float(10 ** (np.floor(np.log10(positive.min())) - 1)) if has_zero else None
    return ParamAxis(column, column_label(column, trials), "log", zero_at=zero_at)


def draw_params(
    info: ParamsPlotInfo, *, size_px: tuple[int, int] | None = None, dpi: int = DEFAULT_DPI
) -> Figure:
    n_rows, n_cols = len(info.objectives), len(info.params)
    figure = new_figure(size_px or (max(500, 330 * n_cols), 290 * n_rows + 60), dpi)
    axes = figure.subplots(n_rows, n_cols, squeeze=False, sharey="row", sharex="col")
    for column, param in enumerate(info.params):
        for row, (_, label, scale) in enumerate(info.objectives):
            _draw_panel(axes[row, column], info, column, row, scale)
            if column == 0:
                axes[row, column].set_ylabel(label.replace(" (%)", "\n(%)") if len(label) > 18 else label)
        _set_param_axis(axes[-1, column], param)
        axes[-1, column].set_xlabel(param.label + _SCALE_NOTES.get(param.scale, ""))
    handles = [axes[0, 0].scatter([], [], color="w", edgecolors="k", s=30, label="on the front")]
    if info.accuracy_floor is not None and any(_below(info, s.y[0], 0).any() for s in info.studies):
        below = sum(int(_below(info, s.y[0], 0).sum()) for s in info.studies)
        handles.append(axes[0, 0].scatter(
            [], [], marker="v", s=16, color="0.35",
            label=f"{below:,} below {100 * info.accuracy_floor:.1f}% accuracy: on the bottom edge"))
    figure.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8, frameon=False)
    figure.suptitle("Searched parameters against the objectives (finished trials)", fontsize=11)
    return figure


_SCALE_NOTES = {"log": ", log scale"}  # "β (beta), log scale"


def _draw_panel(ax, info: ParamsPlotInfo, column: int, row: int, scale: str) -> None:
    param = info.params[column]
    for index, study in enumerate(info.studies):
        color, marker = study_style(index)
        x = _positions(param, study.x[column])
        y = _y(info, study.y[row], scale)
        front = np.array(study.on_front, dtype=bool)
        label = study.study if column == 0 and row == 0 and len(info.studies) > 1 else None
        below = _below(info, study.y[row], row)
        ax.scatter(x[~below], y[~below], color=color, marker=marker, s=14, alpha=0.6, lw=0, label=label)
        ax.scatter(x[front & ~below], y[front & ~below], facecolors="none", edgecolors="k", marker=marker,
                   s=30, lw=0.8)
        edge = blended_transform_factory(ax.transData, ax.transAxes)
        ax.scatter(x[below], np.zeros(int(below.sum())), transform=edge, marker="v", s=16, color=color,
                   alpha=0.7, lw=0, clip_on=False, zorder=5)
    if row == 0 and info.accuracy_floor is not None:
        top = 100 * max(float(np.nanmax(np.array(s.y[0], dtype=float))) for s in info.studies)
        low = 100 * info.accuracy_floor
        ax.set_ylim(low, top + 0.05 * max(top - low, 0.1))
    if scale == "sparsity":
        configure_sparsity_axis(ax, info.sparsity_axis, _all_y(info, row), which="y")
    elif scale == "log":
        ax.set_yscale("log")
    if column == 0 and row == 0 and len(info.studies) > 1:
        ax.legend(fontsize=7, loc="best")
    ax.grid(alpha=0.3)


def _below(info: ParamsPlotInfo, values: tuple[float, ...], row: int) -> np.ndarray:
    """Accuracies under the first row's range: drawn as marks on its bottom edge."""
    values = np.array(values, dtype=float)
    if row != 0 or info.accuracy_floor is None:
        return np.zeros(values.shape, dtype=bool)
    return values < info.accuracy_floor


def _y(info: ParamsPlotInfo, values: tuple[float, ...], scale: str) -> np.ndarray:
    values = np.array(values, dtype=float)
    if scale == "sparsity":
        return sparsity_coordinate(values, info.sparsity_axis)
    return 100 * values if scale == "percent" else values


def _all_y(info: ParamsPlotInfo, row: int) -> np.ndarray:
    return np.concatenate([_y(info, s.y[row], "sparsity") for s in info.studies])


def _positions(param: ParamAxis, values: tuple) -> np.ndarray:
    if param.scale == "category":
        index = {c: i for i, c in enumerate(param.categories)}
        return np.array([index.get(str(v), np.nan) if v is not None else np.nan for v in values], dtype=float)
    numbers = np.array([np.nan if v is None else v for v in values], dtype=float)
    if param.zero_at is not None:
        numbers[numbers == 0] = param.zero_at
    return numbers


def _set_param_axis(ax, param: ParamAxis) -> None:
    if param.scale == "log":
        ax.set_xscale("log")
        if param.zero_at is not None:
            _add_zero_tick(ax, param.zero_at)
        else:  # few plainly written ticks (0.001, 0.002, 0.005): minor log labels collide
            low, high = ax.get_xlim()
            ticks = log_ticks(low, high)
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlim(low, high)
    elif param.scale == "category":
        ax.set_xticks(range(len(param.categories)), param.categories, rotation=30, ha="right")
        ax.set_xlim(-0.5, len(param.categories) - 0.5)


def _add_zero_tick(ax, zero_at: float) -> None:
    """Decade ticks (at most six) plus a tick labelled 0 where the zeros are drawn."""
    low, high = np.log10(zero_at) + 1, np.ceil(np.log10(ax.get_xlim()[1]))
    step = max(1, int(np.ceil((high - low + 1) / 6)))
    decades = np.arange(high, low - 1, -step)[::-1]
    ticks = [zero_at] + [10.0 ** d for d in decades if d >= low]
    labels = ["0"] + [f"$10^{{{int(d)}}}$" for d in decades if d >= low]
    ax.set_xticks(ticks, labels)
    ax.xaxis.set_minor_formatter(NullFormatter())
