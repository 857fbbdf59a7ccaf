"""Shared drawing helpers: figures of an exact pixel size, study colours, axes and label placement.

Plots use matplotlib's object API (``matplotlib.figure.Figure``), never pyplot, so importing
analysis changes no global backend and saving works headless (Agg for PNG).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator

from analysis.errors import AnalysisError

if TYPE_CHECKING:
    import pandas as pd

FORMATS = (".png", ".svg", ".pdf")
DEFAULT_DPI = 100
STUDY_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
STUDY_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
MISSING_COLOR = "#b0b0b0"
SPARSITY_AXES = ("logit", "sparsity", "compression")
MAX_SIDE_PX = 10_000  # 10,000 x 10,000 px is 400 MB of pixels; far larger fails inside Agg
LOGIT_TICKS = (0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 0.99999)


def new_figure(size_px: tuple[int, int], dpi: int = DEFAULT_DPI) -> Figure:
    """A figure that saves to exactly ``size_px`` pixels at ``dpi``."""
    width, height = size_px
    if not (100 <= width <= MAX_SIDE_PX and 100 <= height <= MAX_SIDE_PX and 10 <= dpi <= 1200):
        raise AnalysisError(f"figure size {width}x{height} px at {dpi} dpi: use 100 to "
                            f"{MAX_SIDE_PX:,} px a side and 10 to 1200 dpi")
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)  # a renderer to measure text with, without pyplot's global state
    return figure


def check_image_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise AnalysisError(f"output {path}: the extension must be one of {', '.join(FORMATS)}")
    return path


def save_figure(figure: Figure, path: str | Path) -> Path:
    """Save as PNG, SVG or PDF, chosen by the file extension; creates the parent folder."""
    path = check_image_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=figure.dpi)
    return path


def study_style(index: int) -> tuple[str, str]:
    """Colour and marker of the index-th study on a plot."""
    return STUDY_COLORS[index % len(STUDY_COLORS)], STUDY_MARKERS[index % len(STUDY_MARKERS)]


def is_log_scaled(values: np.ndarray) -> bool:
    """A positive quantity spread over more than a decade and a half reads better on a log axis."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return bool(values.size and values.min() > 0 and values.max() / values.min() >= 30)


def log_ticks(low: float, high: float) -> list[float]:
    """Ticks for a log axis from low to high: decades, plus 2x and 5x when decades are too few."""
    decades = 10.0 ** np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    for multiples in ((1,), (1, 3), (1, 2, 5)):
        ticks = [d * m for d in decades for m in multiples if low <= d * m <= high]
        if len(ticks) >= 3:
            break
    if not ticks:  # a range narrower than 1-2-5: its ends, or its middle, to 3 digits
        ends = [float(f"{v:.3g}") for v in (low, high)]
        ticks = [t for t in dict.fromkeys(ends) if low <= t <= high]
        return ticks or [float(f"{np.sqrt(low * high):.3g}")]
    step = int(np.ceil(len(ticks) / 8))  # at most about eight
    return [float(f"{t:.6g}") for t in ticks[::step]]


def percent(fraction: float, digits: int = 2) -> str:
    return f"{100 * fraction:.{digits}f}%"


def sparsity_coordinate(sparsity: np.ndarray, axis: str) -> np.ndarray:
    """Where a sparsity (fraction) is drawn: percent, the fraction on a logit axis, or compression."""
    sparsity = np.asarray(sparsity, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if axis == "sparsity":
            return 100 * sparsity
        if axis == "logit":
            return np.where((sparsity > 0) & (sparsity < 1), sparsity, np.nan)
        if axis == "compression":
            return np.where(sparsity < 1, 1 / (1 - sparsity), np.nan)
    raise AnalysisError(f"x axis {axis!r}: expected one of {', '.join(SPARSITY_AXES)}")


def sparsity_axis_label(axis: str, label: str) -> str:
    if axis == "compression":
        return f"compression 1/(1 − {label.removesuffix(' (%)')}) (×, log scale)"
    if axis == "logit":
        return f"{label.removesuffix(' (%)')} (%, logit scale)"
    return label


def configure_sparsity_axis(
    ax: Axes, axis: str, drawn: np.ndarray, *, which: str = "x", ticks: Sequence[float] = LOGIT_TICKS
) -> None:
    """Scale, limits and ticks of a sparsity axis ("x" or "y"), given the coordinates drawn.

    A logit axis gets fixed percent ticks (50, 90, 99, 99.9%, ...) and room around the data; a
    compression axis is logarithmic with "10×" labels; a plain sparsity axis is left linear.
    """
    drawn = np.asarray(drawn, dtype=float)
    drawn = drawn[np.isfinite(drawn)]
    target = ax.xaxis if which == "x" else ax.yaxis
    set_scale, set_limits = (ax.set_xscale, ax.set_xlim) if which == "x" else (ax.set_yscale, ax.set_ylim)
    if axis == "logit" and drawn.size:
        low = min(drawn.min(), 0.5) / 1.5
        high = 1 - (1 - drawn.max()) / 1.5
        set_scale("logit")
        set_limits(low, high)
        target.set_major_locator(FixedLocator([t for t in ticks if low <= t <= high]))
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
        target.set_minor_locator(NullLocator())
        target.set_minor_formatter(NullFormatter())
    elif axis == "compression":
        set_scale("log")
        target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        target.set_minor_formatter(NullFormatter())


def place_labels(ax: Axes, anchors: Sequence[tuple[float, float, str]], *, fontsize: float = 8) -> None:
    """Annotate data points with text, staggering labels so that they do not overlap.

    A greedy placement, anchors taken by increasing x: each label takes the nearest candidate
    offset whose text box overlaps no label placed before it, no anchor marker and not the legend,
    stays inside the axes, and whose leader line crosses no earlier leader line nor label; when
    none is free, the one with the fewest collisions (covered data points count a little, other
    labels, crossed leader lines and leaving the axes a lot).
    """
    if not anchors:
        return
    figure = ax.figure
    figure.draw_without_rendering()  # run the layout first so that boxes are final
    renderer = figure.canvas.get_renderer()
    obstacles = [_marker_box(ax, x, y) for x, y, _ in anchors]
    if ax.get_legend() is not None:
        obstacles.append(ax.get_legend().get_window_extent(renderer))
    points, axes_box = _drawn_points(ax), ax.get_window_extent(renderer)
    labels: list[Bbox] = []
    leaders: list[tuple[np.ndarray, np.ndarray]] = []

    def cost(box: Bbox, leader: tuple[np.ndarray, np.ndarray]) -> float:
        inside = (points[:, 0] >= box.x0) & (points[:, 0] <= box.x1)
        inside &= (points[:, 1] >= box.y0) & (points[:, 1] <= box.y1)
        crossings = sum(segments_cross(*leader, *other) for other in leaders)
        crossings += sum(_segment_hits_box(*leader, other) for other in labels)
        return (sum(box.overlaps(o) for o in obstacles + labels) + 3 * _outside(box, axes_box)
                + 2 * crossings + 0.2 * inside.sum())

    for x, y, text in sorted(anchors, key=lambda a: (a[0], a[1])):
        anchor = ax.transData.transform((x, y))
        best, best_box, best_leader, best_cost = None, None, None, np.inf
        for dx, dy in _LABEL_OFFSETS:
            annotation, box = _annotate(ax, x, y, text, (dx, dy), fontsize, renderer)
            leader = (anchor, _nearest_in_box(anchor, box))
            candidate_cost = cost(box, leader)
            if candidate_cost < best_cost:
                if best is not None:
                    best.remove()
                best, best_box, best_leader, best_cost = annotation, box, leader, candidate_cost
            else:
                annotation.remove()
            if best_cost == 0:
                break
        labels.append(best_box)
        leaders.append(best_leader)


def segments_cross(a0, a1, b0, b1) -> bool:
    """Whether segments a0-a1 and b0-b1 (2-D points) cross; touching at an end point is not crossing."""
    def side(p, q, r) -> float:
        return float((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))
    d1, d2 = side(b0, b1, a0), side(b0, b1, a1)
    d3, d4 = side(a0, a1, b0), side(a0, a1, b1)
    return d1 * d2 < 0 and d3 * d4 < 0


def _nearest_in_box(point: np.ndarray, box: Bbox) -> np.ndarray:
    """Where a leader line from ``point`` meets the label box (the box's nearest point)."""
    return np.array([min(max(point[0], box.x0), box.x1), min(max(point[1], box.y0), box.y1)])


def _segment_hits_box(p0: np.ndarray, p1: np.ndarray, box: Bbox) -> bool:
    """Whether a leader line passes through another label's box (sampled along the line)."""
    for t in np.linspace(0.1, 0.9, 9):
        q = p0 + t * (p1 - p0)
        if box.x0 < q[0] < box.x1 and box.y0 < q[1] < box.y1:
            return True
    return False


def _annotate(ax: Axes, x: float, y: float, text: str, offset: tuple[float, float], fontsize, renderer):
    """A label at ``offset`` points from (x, y), joined to it by a thin line, and its text box."""
    dx, dy = offset
    annotation = ax.annotate(
        text, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
        ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top", zorder=6,
        arrowprops={"arrowstyle": "-", "color": "0.4", "lw": 0.6, "shrinkA": 0, "shrinkB": 5},
    )
    annotation.set_in_layout(False)
    annotation.update_positions(renderer)
    return annotation, Text.get_window_extent(annotation, renderer).padded(2)


# Offsets in points, nearest first: right/left of the point, then higher and lower, then farther out.
_LABEL_OFFSETS = [(dx, dy) for dx_far in (8, 30) for dy in (5, -5, 16, -16, 28, -28, 40, -40, 54, -54)
                  for dx in (dx_far, -dx_far)]


def _drawn_points(ax: Axes) -> np.ndarray:
    """Display coordinates of every scatter point on the axes."""
    offsets = [c.get_offsets() for c in ax.collections if len(c.get_offsets())]
    if not offsets:
        return np.zeros((0, 2))
    return ax.transData.transform(np.concatenate([np.asarray(o, dtype=float) for o in offsets]))


def _marker_box(ax: Axes, x: float, y: float, half_px: float = 7):
    x_px, y_px = ax.transData.transform((x, y))
    return Bbox.from_extents(x_px - half_px, y_px - half_px, x_px + half_px, y_px + half_px)


def _outside(box: Bbox, axes_box: Bbox) -> bool:
    return bool(
        box.x0 < axes_box.x0 or box.x1 > axes_box.x1 or box.y0 < axes_box.y0 or box.y1 > axes_box.y1
    )


_COLUMN_LABELS = {
    "metric_threshold": "threshold √(2λ/β)",
    "param_lam": "λ (lam)",
    "param_beta": "β (beta)",
    "param_lr": "learning rate",
}


# The threshold's unit follows the trials' threshold_scale (trainables.thresholds): one absolute
# threshold for every tensor, or t in units of a per-tensor scale (times its layer multiplier).
_THRESHOLD_UNITS = {
    "std": "threshold t (× each tensor's initial std)",
    "fan_in": "threshold t (× each tensor's 1/√fan-in)",
}


def column_label(column: str, trials: pd.DataFrame | None = None) -> str:
    """A readable axis label for a trials-table column; `trials` (a DataFrame) names the unit of
    the threshold when all its rows share a per-tensor threshold_scale."""
    if column in ("metric_threshold", "param_threshold") and trials is not None \
            and "param_threshold_scale" in trials:
        scales = set(trials["param_threshold_scale"].dropna().astype(str))
        if len(scales) > 1:
            return "threshold t (units differ: threshold_scale " + " / ".join(sorted(scales)) + ")"
        if scales and (unit := _THRESHOLD_UNITS.get(scales.pop())):
            return unit
    return _COLUMN_LABELS.get(column, column.removeprefix("param_").removeprefix("metric_"))
