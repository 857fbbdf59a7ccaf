"""The accuracy-sparsity front plot: compute a :class:`FrontPlotInfo`, then draw it.

Every finished trial is a point (validation accuracy against sparsity), the front is a step
line, points are coloured by the threshold sqrt(2 lambda / beta) or another column, and the
dense baseline and published reference results are drawn for comparison. Several studies share
one plot, each with its own colour, marker and front.

The accuracy axis is zoomed to the useful range by default: trials that collapsed (below half
way from chance to the best accuracy) or lie far below the front would otherwise squeeze every
useful trial onto one line; they are drawn as marks on the bottom edge and counted in the legend.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from matplotlib.transforms import blended_transform_factory

from analysis.errors import AnalysisError
from analysis.objectives import Objective, objective_values
from analysis.plot_style import (
    DEFAULT_DPI, MISSING_COLOR, column_label, configure_sparsity_axis, is_log_scaled, log_ticks,
    new_figure, percent, place_labels, sparsity_axis_label, sparsity_coordinate, study_style,
)
from analysis.reference_points import Reference
from analysis.summary import RANK_COLUMN, StudySummary, at_chance, chance_accuracy_of

STUDY = "study"  # colour by study instead of by a column
Y_AXES = ("linear", "logit")  # a logit accuracy axis spreads out 97, 99 and 99.5%
LOGIT_ACCURACY_TICKS = (0.1, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999)
REFERENCE_LABEL = "reference results (test accuracy, published)"
BELOW_GID = "below-range"  # the bottom-edge marks (an SVG group id; tests find them by it)
# Default accuracy range: the trials above the collapse level (half way from chance to the
# best accuracy), with room below of half their span, at least half a point.
ROOM_BELOW, MIN_ROOM_BELOW = 0.5, 0.005


@dataclass(frozen=True)
class StudyFrontInfo:
    study: str
    label: str                               # legend text: the name and the trial counts
    trial_ids: tuple[str, ...]               # finished trials with both plotted objectives
    x: tuple[float, ...]                     # second objective (sparsity), as stored
    y: tuple[float, ...]                     # first objective (accuracy), as stored
    colors: tuple[float, ...]                # colour-by values (NaN: none); () when by study
    front: tuple[tuple[float, float], ...]   # (x, y) of the rank-0 trials by increasing x
    knee: tuple[float, float] | None
    baseline: float | None                   # accuracy of the best lambda = 0 trial
    off_axis: int                            # trials the x axis cannot show (0 or 100% sparsity)
    below: int = 0                           # trials below the accuracy range: bottom-edge marks
    at_chance: int = 0                       # of those, trials at chance level (collapsed)


@dataclass(frozen=True)
class FrontPlotInfo:
    studies: tuple[StudyFrontInfo, ...]
    x_axis: str                              # "logit", "sparsity" or "compression"
    x_label: str
    y_label: str
    color_by: str                            # a column, or "study"
    color_label: str
    color_log: bool
    step: bool                               # exactly two objectives: the front is a staircase
    title: str
    references: tuple[Reference, ...] = ()
    baseline: float | None = None            # given by the user: replaces the studies' own
    y_min: float | None = None               # lowest accuracy asked for (None: the useful range)
    y_axis: str = "linear"                   # accuracy axis: "linear" (percent) or "logit"
    y_range: tuple[float, float] = (0.0, 1.0)  # accuracies shown (fractions); lower ones: marks
    chance: float | None = None              # chance accuracy of the dataset, when known


def front_plot_info(
    summaries: Sequence[StudySummary],
    *,
    x_axis: str = "logit",
    color_by: str | None = None,
    baseline: float | None = None,
    references: Sequence[Reference] = (),
    y_min: float | None = None,
    y_axis: str = "linear",
) -> FrontPlotInfo:
    """What the front plot shows, from the per-study summaries (see :mod:`analysis.summary`)."""
    objectives = summaries[0].objectives
    y_objective, x_objective = objectives[0], objectives[1]
    for objective in (y_objective, x_objective):
        if not objective.is_fraction:
            raise AnalysisError(
                f"the front plot draws the first two objectives as fractions (accuracy, sparsity);"
                f" {objective.name} is not one: reorder --objectives"
            )
    color_by = color_by or ("metric_threshold" if len(summaries) == 1 else STUDY)
    color_by = color_by if color_by == STUDY else _color_column(summaries[0].ranked, color_by)
    y_min = None if y_min is None else _as_fraction(y_min, "--y-min", zero_ok=True)
    baseline = None if baseline is None else _as_fraction(baseline, "--baseline")
    trials = pd.concat([s.ranked for s in summaries], ignore_index=True)
    chance = chance_accuracy_of(trials)
    studies = tuple(_study_info(s, x_axis, color_by) for s in summaries)
    y_range = accuracy_range(studies, references, baseline, chance, y_min)
    studies = tuple(_with_below(s, y_range[0], chance) for s in studies)
    all_colors = np.array([c for s in studies for c in s.colors], dtype=float)
    names = ", ".join(o.name for o in objectives)
    return FrontPlotInfo(
        studies=studies,
        x_axis=x_axis,
        x_label=sparsity_axis_label(x_axis, x_objective.label),
        y_label=y_objective.label.replace("(%)", "(%, logit scale)" if y_axis == "logit" else "(%)"),
        color_by=color_by,
        color_label="study" if color_by == STUDY else column_label(color_by, trials),
        color_log=color_by != STUDY and is_log_scaled(all_colors[all_colors > 0]),
        step=len(objectives) == 2,
        title=_title(summaries, names),
        references=tuple(references),
        baseline=baseline,
        y_min=y_min,
        y_axis=_checked_y_axis(y_axis),
        y_range=y_range,
        chance=chance,
    )


def accuracy_range(
    studies: Sequence[StudyFrontInfo],
    references: Sequence[Reference] = (),
    baseline: float | None = None,
    chance: float | None = None,
    y_min: float | None = None,
) -> tuple[float, float]:
    """The accuracies (fractions, low to high) the plot shows.

    Top: the best accuracy drawn (trials, references, baselines). Bottom: ``y_min`` when given;
    else the lowest trial above the collapse level (half way from chance, or 0, to the best
    trial) or reference, less half the span up to the top (at least half a point), but no lower
    than the lowest trial needs.
    """
    ys = np.array([y for s in studies for y in s.y], dtype=float)
    marks = [r.accuracy for r in references] + [b for b in [baseline, *(s.baseline for s in studies)]
                                                  if b is not None]
    best = float(np.nanmax(ys))
    top = max([best, *marks])
    if y_min is not None:
        return (min(y_min, top), top)
    collapse = (chance or 0.0) + 0.5 * (best - (chance or 0.0))
    useful = [float(y) for y in ys if y > collapse] + [r.accuracy for r in references]
    lowest = min(useful) if useful else best
    low = lowest - max(ROOM_BELOW * (top - lowest), MIN_ROOM_BELOW)
    drawn = np.concatenate([ys, np.array(marks, dtype=float)])
    shown = drawn[drawn >= low]
    if shown.size:  # no wide empty band under the lowest point shown
        low = max(low, float(shown.min()) - 0.15 * max(top - float(shown.min()), MIN_ROOM_BELOW))
    return (max(low, 0.0), top)


def _with_below(study: StudyFrontInfo, low: float, chance: float | None) -> StudyFrontInfo:
    y = np.array(study.y, dtype=float)
    below = y < low
    return replace(study, below=int(below.sum()), at_chance=int((below & at_chance(y, chance)).sum()))


def _checked_y_axis(y_axis: str) -> str:
    if y_axis not in Y_AXES:
        raise AnalysisError(f"y axis {y_axis!r}: expected one of {', '.join(Y_AXES)}")
    return y_axis


def _title(summaries: Sequence[StudySummary], names: str) -> str:
    studies = summaries[0].study if len(summaries) == 1 else f"{len(summaries)} studies"
    kind = "Accuracy–sparsity front" if len(summaries[0].objectives) == 2 else f"Front of ({names})"
    return f"{kind}: {studies}"


def _study_info(summary: StudySummary, x_axis: str, color_by: str) -> StudyFrontInfo:
    trials = summary.ranked
    values = objective_values(trials, summary.objectives[:2])
    plotted = ~np.isnan(values).any(axis=1)
    if not plotted.any():
        raise AnalysisError(f"study {summary.study}: no finished trial has both plotted objectives")
    trials, y, x = trials[plotted], values[plotted, 0], values[plotted, 1]
    on_front = (trials[RANK_COLUMN] == 0).to_numpy()
    order = np.lexsort((-y[on_front], x[on_front]))
    knee = (trials["trial_id"] == summary.knee_trial_id).to_numpy()
    colors = () if color_by == STUDY else tuple(_numeric(trials[color_by]))
    return StudyFrontInfo(
        study=summary.study,
        label=_legend_label(summary),
        trial_ids=tuple(trials["trial_id"].astype(str)),
        x=tuple(x.tolist()),
        y=tuple(y.tolist()),
        colors=colors,
        front=tuple(zip(x[on_front][order].tolist(), y[on_front][order].tolist())),
        knee=(float(x[knee][0]), float(y[knee][0])) if knee.any() else None,
        baseline=_dense_baseline(trials, summary.objectives[0]),
        off_axis=int(np.isnan(sparsity_coordinate(x, x_axis)).sum()),
    )


def _legend_label(summary: StudySummary) -> str:
    counts = dict(summary.state_counts)
    done = counts.pop("finished", 0)
    others = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return f"{summary.study}: {done} finished" + (f" ({others} not shown)" if others else "")


def _dense_baseline(trials: pd.DataFrame, accuracy: Objective) -> float | None:
    """The best accuracy of a finished lambda = 0 trial (no sparsification), if there is one."""
    if "param_lam" not in trials.columns:
        return None
    dense = trials[_numeric(trials["param_lam"]) == 0]
    best = _numeric(dense[accuracy.column]).max() if len(dense) else np.nan
    return None if np.isnan(best) else float(best)


def _color_column(trials: pd.DataFrame, name: str) -> str:
    for column in (name, "metric_" + name, "param_" + name):
        if column in trials.columns:
            if not pd.api.types.is_numeric_dtype(trials[column]):
                raise AnalysisError(f"--color-by {name}: column {column} is not numeric")
            return column
    raise AnalysisError(f"--color-by {name}: no such column (try threshold, lam, beta, lr or study)")


def _numeric(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def _as_fraction(accuracy: float, option: str, *, zero_ok: bool = False) -> float:
    """An accuracy given as 0.992 or as 99.2 (percent); ``zero_ok``: 0 too (the whole axis)."""
    if not (0 <= accuracy <= 100 if zero_ok else 0 < accuracy <= 100):
        raise AnalysisError(f"{option} {accuracy}: expected an accuracy such as 0.992 or 99.2")
    return accuracy / 100 if accuracy > 1 else accuracy


def draw_front(
    info: FrontPlotInfo, *, size_px: tuple[int, int] = (1000, 700), dpi: int = DEFAULT_DPI
) -> Figure:
    """Draw what :func:`front_plot_info` computed.

    The legend sits below the axes, so that none of its markers (the knee's ring above all) can
    be read as a point of the plot; reference labels are placed so that their leader lines do
    not cross.
    """
    figure = new_figure(size_px, dpi)
    ax = figure.add_subplot()
    mappable = _color_mappable(info)
    for index, study in enumerate(info.studies):
        _draw_study(ax, info, study, index, mappable)
    _draw_knees(ax, info)
    _draw_baselines(ax, info)
    _draw_references(ax, info)
    _configure_axes(ax, info)
    _draw_below(ax, info)
    ax.set_title(info.title + _off_axis_note(info), fontsize=11)
    if mappable is not None:
        _colorbar(figure, ax, info, mappable)
    _legend(figure, *ax.get_legend_handles_labels())
    anchors = [(float(_x(info, r.sparsity)), float(_y(info, r.accuracy)), r.name) for r in info.references]
    place_labels(ax, [a for a in anchors if np.isfinite(a[0]) and np.isfinite(a[1])])
    return figure


def _legend(figure: Figure, handles: list, labels: list[str]) -> None:
    """Below the axes, in as many columns (3 at most) as fit the figure's width: several studies'
    long labels in 3 columns ran off both sides."""
    renderer = figure.canvas.get_renderer()
    for ncols in range(min(3, len(labels)) or 1, 0, -1):
        legend = figure.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=8,
                               frameon=False)
        if ncols == 1 or legend.get_window_extent(renderer).width <= figure.bbox.width:
            return
        legend.remove()


def _x(info: FrontPlotInfo, sparsity) -> np.ndarray:
    return sparsity_coordinate(np.asarray(sparsity, dtype=float), info.x_axis)


def _y(info: FrontPlotInfo, accuracy) -> np.ndarray:
    """Accuracy in percent on a linear axis, as a fraction on a logit axis."""
    axis = "logit" if info.y_axis == "logit" else "sparsity"  # "sparsity": the fraction in percent
    return sparsity_coordinate(np.asarray(accuracy, dtype=float), axis)


def _shown(info: FrontPlotInfo, accuracy) -> np.ndarray:
    """Which accuracies lie in the range drawn (the others are bottom-edge marks)."""
    return np.asarray(accuracy, dtype=float) >= info.y_range[0]


def _configure_axes(ax, info: FrontPlotInfo) -> None:
    xs = [p for s in info.studies for p in s.x] + [r.sparsity for r in info.references]
    configure_sparsity_axis(ax, info.x_axis, _x(info, xs))
    low, top = info.y_range
    if info.y_axis == "logit":
        ys = [y for s in info.studies for y in s.y if y >= low] + [r.accuracy for r in info.references]
        configure_sparsity_axis(ax, "logit", _y(info, ys), which="y", ticks=LOGIT_ACCURACY_TICKS)
        if 0 < low < 1:
            ax.set_ylim(bottom=float(_y(info, low)))
    else:
        low, top = 100 * low, 100 * top
        ax.set_ylim(low, top + 0.05 * max(top - low, 0.1))
    ax.set_xlabel(info.x_label)
    ax.set_ylabel(info.y_label)
    ax.grid(alpha=0.3, which="major")


def _colorbar(figure, ax, info: FrontPlotInfo, mappable) -> None:
    label = info.color_label + (", log scale" if info.color_log else "")
    colorbar = figure.colorbar(mappable, ax=ax, label=label)
    if info.color_log:  # few, plainly written ticks: matplotlib's minor log labels crowd
        ticks = log_ticks(mappable.norm.vmin, mappable.norm.vmax)
        colorbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
        colorbar.ax.yaxis.set_minor_formatter(NullFormatter())


def _color_mappable(info: FrontPlotInfo) -> ScalarMappable | None:
    if info.color_by == STUDY:
        return None
    colors = np.array([c for s in info.studies for c in s.colors], dtype=float)
    valid = colors[np.isfinite(colors) & ((colors > 0) if info.color_log else True)]
    if valid.size == 0:
        return None
    low, high = valid.min(), valid.max()
    norm = LogNorm(low, high) if info.color_log else Normalize(low, high if high > low else low + 1)
    return ScalarMappable(norm=norm, cmap="viridis")


def _draw_study(ax, info: FrontPlotInfo, study: StudyFrontInfo, index: int, mappable) -> None:
    """Points in the accuracy range, front members and the front line of one study."""
    color, marker = study_style(index)
    x, y = _x(info, study.x), _y(info, study.y)
    shown = _shown(info, study.y) & np.isfinite(x) & np.isfinite(y)
    x, y = x[shown], y[shown]
    if mappable is None:
        ax.scatter(x, y, color=color, marker=marker, s=24, alpha=0.7, lw=0, label=study.label)
    else:
        colors = np.array(study.colors, dtype=float)[shown]
        _draw_colored(ax, info, colors, x, y, marker, mappable, label_missing=index == 0)
        if len(info.studies) > 1:  # a neutral legend marker: the colour shows the parameter
            ax.scatter([], [], marker=marker, color="0.6", edgecolors=color, label=study.label)
    front_x, front_y = _x(info, [p[0] for p in study.front]), _y(info, [p[1] for p in study.front])
    line_color = color if len(info.studies) > 1 or mappable is None else "black"
    if info.step:  # the whole front: a member below the range takes the line off the bottom edge
        on_axis = np.isfinite(front_x)
        label = "Pareto front" if len(info.studies) == 1 else None
        ax.step(front_x[on_axis], front_y[on_axis], where="pre", color=line_color, lw=1.3, zorder=3,
                label=label)
    ringed = np.isfinite(front_x) & np.isfinite(front_y) & _shown(info, [p[1] for p in study.front])
    ring_label = "on the front (all objectives)" if not info.step and index == 0 else None
    ax.scatter(front_x[ringed], front_y[ringed], s=46, facecolors="none",
               edgecolors=line_color if info.step else "black", lw=1.1, marker=marker, zorder=4,
               label=ring_label)


def _draw_colored(ax, info, colors, x, y, marker, mappable, *, label_missing: bool) -> None:
    valid = np.isfinite(colors) & ((colors > 0) if info.color_log else True)
    ax.scatter(x[valid], y[valid], c=colors[valid], cmap=mappable.cmap, norm=mappable.norm,
               marker=marker, s=26, alpha=0.85, lw=0)
    if (~valid).any():
        what = "≤ 0 or missing" if info.color_log else "missing"
        label = f"{info.color_label} {what}" if label_missing else None
        ax.scatter(x[~valid], y[~valid], color=MISSING_COLOR, marker=marker, s=26, lw=0, label=label)


def _draw_below(ax, info: FrontPlotInfo) -> None:
    """Trials under the accuracy range: small triangles on the bottom edge, counted in the legend."""
    total = sum(s.below for s in info.studies)
    if not total:
        return
    edge = blended_transform_factory(ax.transData, ax.transAxes)  # x in data, y in axes units
    for index, study in enumerate(info.studies):
        below = ~_shown(info, study.y)
        x = _x(info, study.x)[below]
        x = x[np.isfinite(x)]
        color = study_style(index)[0] if len(info.studies) > 1 else "0.35"
        ax.scatter(x, np.zeros_like(x), transform=edge, marker="v", s=36, color=color, alpha=0.8,
                   lw=0, clip_on=False, zorder=5, gid=BELOW_GID)
    collapsed = sum(s.at_chance for s in info.studies)
    chance = f" ({collapsed} at chance level)" if collapsed else ""
    trials = "1 trial" if total == 1 else f"{total:,} trials"
    ax.scatter([], [], marker="v", s=36, color="0.35",
               label=f"{trials} below {percent(info.y_range[0], 1)}{chance}, drawn on the bottom edge")


def _draw_knees(ax, info: FrontPlotInfo) -> None:
    """A ring centred on each study's knee; its legend entry is the same marker."""
    knees = [s.knee for s in info.studies if s.knee is not None and s.knee[1] >= info.y_range[0]]
    if knees:
        ax.scatter(_x(info, [k[0] for k in knees]), _y(info, [k[1] for k in knees]), s=220,
                   facecolors="none", edgecolors="#e6550d", lw=2, zorder=5, label="knee")


def _draw_baselines(ax, info: FrontPlotInfo) -> None:
    if info.baseline is not None:
        ax.axhline(_y(info, info.baseline), ls="--", color="0.3", lw=1,
                   label=f"dense baseline {percent(info.baseline)}")
        return
    for index, study in enumerate(info.studies):
        if study.baseline is not None:
            color = study_style(index)[0] if len(info.studies) > 1 else "0.3"
            name = f"{study.study} " if len(info.studies) > 1 else ""
            ax.axhline(_y(info, study.baseline), ls="--", color=color, lw=1,
                       label=f"{name}dense baseline (λ = 0) {percent(study.baseline)}")


def _draw_references(ax, info: FrontPlotInfo) -> None:
    """Published results: their test accuracy, drawn on the validation-accuracy axis (and said so)."""
    if info.references:
        x = _x(info, [r.sparsity for r in info.references])
        y = _y(info, [r.accuracy for r in info.references])
        ax.scatter(x, y, marker="*", s=140, color="black", zorder=6, label=REFERENCE_LABEL)


def _off_axis_note(info: FrontPlotInfo) -> str:
    """Say which trials the x axis cannot show, so that no point disappears silently."""
    hidden = sum(s.off_axis for s in info.studies)
    if not hidden:
        return ""
    trials = "1 trial at 0% or 100% sparsity lies" if hidden == 1 else f"{hidden:,} trials at 0% or 100% sparsity lie"
    return f"\n({trials} outside this {info.x_axis} axis)"
