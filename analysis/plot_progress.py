"""Search progress: the hypervolume of the finished trials after each trial, by trial number."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from analysis.plot_style import DEFAULT_DPI, new_figure, study_style
from analysis.summary import StudySummary, progress


@dataclass(frozen=True)
class StudyProgress:
    study: str
    trial_numbers: tuple[int, ...]     # of the finished trials, increasing
    hypervolumes: tuple[float, ...]    # after each of them
    reference: tuple[float, ...]


@dataclass(frozen=True)
class ProgressPlotInfo:
    studies: tuple[StudyProgress, ...]
    reference_text: str                # the reference point, in words
    y_label: str


def progress_plot_info(summaries: Sequence[StudySummary]) -> ProgressPlotInfo:
    studies = []
    for summary in summaries:
        numbers, volumes = progress(summary)
        studies.append(StudyProgress(
            summary.study, tuple(numbers.tolist()), tuple(volumes.tolist()), summary.reference
        ))
    objectives = summaries[0].objectives
    references = {s.reference for s in summaries}
    reference_text = (
        ", ".join(f"{o.name} {_format(o, r)}" for o, r in zip(objectives, summaries[0].reference))
        if len(references) == 1 else "each study's own"
    )
    names = " × ".join(o.name for o in objectives)
    return ProgressPlotInfo(tuple(studies), reference_text, f"hypervolume ({names})")


def _format(objective, value: float) -> str:
    return f"{100 * value:g}%" if objective.is_fraction else f"{value:g}"


def draw_progress(
    info: ProgressPlotInfo, *, size_px: tuple[int, int] = (900, 500), dpi: int = DEFAULT_DPI
) -> Figure:
    figure = new_figure(size_px, dpi)
    ax = figure.add_subplot()
    for index, study in enumerate(info.studies):
        color, marker = study_style(index)
        numbers, volumes = np.array(study.trial_numbers), np.array(study.hypervolumes)
        label = f"{study.study} (final {volumes[-1]:.4g})" if volumes.size else study.study
        ax.step(numbers, volumes, where="post", color=color, lw=1.5, label=label)
        improved = np.diff(np.concatenate([[0.0], volumes])) > 0
        ax.scatter(numbers[improved], volumes[improved], color=color, marker=marker, s=18, zorder=3)
    ax.set_xlabel("trial number (order of sampling)")
    ax.set_ylabel(info.y_label)
    ax.set_title(f"Hypervolume of the finished trials so far (reference: {info.reference_text})", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return figure
