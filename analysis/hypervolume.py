"""Exact hypervolume of a set of points against a reference point: pure numpy, no I/O.

The hypervolume is the volume of the region that the points dominate and that dominates the
reference point (all objectives turned to minimisation first). A point that is not strictly
better than the reference in every objective contributes nothing, and NaN points are ignored.

Optuna's exact implementation (WFG, with dedicated 2-D and 3-D sweeps) is used when optuna is
importable; analysis must not depend on it, so the fallback is a compact exact slicing
algorithm (HSO: slice along the last objective, recurse down to a 2-D sweep). Both are tested
to agree.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from analysis.pareto import to_minimization

BACKENDS = ("auto", "optuna", "numpy")


def hypervolume(
    values: np.ndarray,
    reference: Sequence[float],
    directions: Sequence[str],
    *,
    backend: str = "auto",
) -> float:
    """Hypervolume of ``values`` (one row per point) against ``reference``, in the given directions."""
    points, ref = _dominating_points(values, reference, directions)
    if len(points) == 0:
        return 0.0
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
    if backend != "numpy":
        compute = _optuna_hypervolume(required=backend == "optuna")
        if compute is not None:
            return float(compute(points, ref))
    return exact_hypervolume(points, ref)


def hypervolume_progress(
    values: np.ndarray,
    reference: Sequence[float],
    directions: Sequence[str],
    *,
    backend: str = "auto",
) -> np.ndarray:
    """Hypervolume of the first k points, for every k: search progress when rows are in trial order."""
    values = np.asarray(values, dtype=float)
    points, ref = _dominating_points(values, reference, directions, keep_rows=True)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r}: expected one of {BACKENDS}")
    compute = None if backend == "numpy" else _optuna_hypervolume(required=backend == "optuna")
    progress = np.zeros(len(values))
    current = 0.0
    # Only the front of the first k points has volume: keep it, and recompute only when a new
    # point joins it (recomputing over all k points each time is quadratic: minutes at 20,000).
    front = np.empty((0, points.shape[1]))
    for k in range(len(values)):
        point = points[k]
        if not np.isnan(point).any() and not np.all(front <= point, axis=1).any():
            front = np.vstack([front[~np.all(point <= front, axis=1)], point])
            current = float(compute(front, ref)) if compute is not None else \
                exact_hypervolume(front, ref)
        progress[k] = current
    return progress


def _dominating_points(values, reference, directions, *, keep_rows: bool = False):
    """Minimisation points strictly better than the reference (the others as NaN rows if kept)."""
    points = to_minimization(values, directions)
    ref = to_minimization(np.asarray(reference, dtype=float).reshape(1, -1), directions)[0]
    if np.isnan(ref).any():
        raise ValueError(f"reference point {list(reference)} contains NaN")
    better = np.all(points < ref, axis=1)  # False for NaN rows
    if keep_rows:
        return np.where(better[:, None], points, np.nan), ref
    return points[better], ref


def _optuna_hypervolume(*, required: bool):
    """Optuna's exact hypervolume function, imported lazily: analysis must run without optuna."""
    try:
        from optuna._hypervolume import compute_hypervolume
    except ImportError:
        if required:
            raise
        return None
    return compute_hypervolume


def exact_hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Hypervolume of minimisation ``points`` that are all strictly below ``reference``."""
    points, reference = np.asarray(points, float), np.asarray(reference, float)
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(reference[0] - points[:, 0].min())
    if points.shape[1] == 2:
        return _hypervolume_2d(points, reference)
    # Slice along the last objective: between consecutive values z_i < z_(i+1) the cross-section
    # is the (m-1)-D hypervolume of the points with z <= z_i.
    points = points[np.argsort(points[:, -1], kind="stable")]
    upper = np.append(points[1:, -1], reference[-1])
    total = 0.0
    for i in range(len(points)):
        depth = upper[i] - points[i, -1]
        if depth > 0:
            total += depth * exact_hypervolume(points[: i + 1, :-1], reference[:-1])
    return float(total)


def _hypervolume_2d(points: np.ndarray, reference: np.ndarray) -> float:
    """Area of the staircase: sort by x, keep the points that improve y, sum the rectangles."""
    order = np.lexsort((points[:, 1], points[:, 0]))
    x, y = points[order, 0], points[order, 1]
    best_before = np.minimum.accumulate(np.concatenate([[np.inf], y[:-1]]))
    keep = y < best_before
    x, y = x[keep], y[keep]
    widths = np.diff(np.append(x, reference[0]))
    return float(np.sum(widths * (reference[1] - y)))
