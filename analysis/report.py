"""``report.md`` for one study: summary, front table, best-at queries, plots and the trials left out.

The front is chosen on the objectives (validation accuracy and sparsity by default); test
accuracy is shown beside each front member but never used to choose them.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import SOURCE_COLUMN, BadFile
from analysis.plot_front import draw_front, front_plot_info
from analysis.plot_params import draw_params, params_plot_info
from analysis.plot_progress import draw_progress, progress_plot_info
from analysis.plot_style import column_label, percent, save_figure
from analysis.reference_points import Reference
from analysis.sensitivity import choice_summaries, rank_correlations, searched_columns
from analysis.study_file import log_scales
from analysis.summary import (CHANCE_MARGIN, RANK_COLUMN, StudySummary, at_chance,
                              best_accuracy_at_sparsity, best_sparsity_at_accuracy, chance_accuracy_of)

DEFAULT_AT_SPARSITY = (0.5, 0.9, 0.99, 0.999)
DEFAULT_ACCURACY_DROPS = (0.005, 0.01, 0.02)  # below the best validation accuracy
_MAX_LEFT_OUT = 50

# Front table: heading and column, formatted by _cell.
FRONT_COLUMNS = (
    ("trial", "trial_id"), ("λ", "param_lam"), ("β", "param_beta"), ("lr", "param_lr"),
    ("threshold", "metric_threshold"), ("val acc", "metric_val_acc"), ("test acc", "metric_test_acc"),
    ("sparsity", "metric_sparsity"), ("compression", "metric_compression"), ("non-zeros", "metric_nonzeros"),
)
CHANCE_MARK = " (chance)"  # after the validation accuracy of a front row at chance level
_PERCENT_COLUMNS = {"metric_val_acc", "metric_test_acc", "metric_sparsity", "metric_sparsity_all"}


@dataclass(frozen=True)
class ReportOptions:
    x_axis: str = "logit"
    references: tuple[Reference, ...] = ()
    baseline: float | None = None
    y_min: float | None = None
    y_axis: str = "linear"
    at_sparsity: tuple[float, ...] = DEFAULT_AT_SPARSITY
    at_accuracy: tuple[float, ...] | None = None  # None: the best accuracy minus 0.5, 1 and 2 points
    dpi: int = 100


def write_report(
    summary: StudySummary,
    trials: pd.DataFrame,
    out_dir: str | Path,
    options: ReportOptions = ReportOptions(),
    bad_files: Sequence[BadFile] = (),
) -> Path:
    """Write ``out_dir/report.md`` and its PNG plots; ``trials`` holds every state of the study."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise AnalysisError(f"{out_dir} exists and is not a folder: give a folder for the report")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = _write_plots(summary, out_dir, options)
    sections = [
        _header(summary, trials),
        _summary_section(summary),
        _front_section(summary),
        _export_section(summary),
        _queries_section(summary, options),
        _sensitivity_section(summary),
        "## Plots\n\n" + "\n\n".join(f"![{title}]({name})" for title, name in plots),
        _left_out_section(trials, bad_files),
    ]
    path = out_dir / "report.md"
    path.write_text("\n\n".join(s for s in sections if s) + "\n", encoding="utf-8")
    write_front_csv(summary, out_dir / FRONT_CSV)
    return path


FRONT_CSV = "front.csv"
FRONT_CSV_METRICS = ("metric_threshold", "metric_val_acc", "metric_test_acc", "metric_sparsity",
                     "metric_compression", "metric_nonzeros")


def write_front_csv(summary: StudySummary, path: Path) -> None:
    """The front table as CSV, for other tools: trial id, every searched parameter (``param_*``,
    and ``param_lam`` even when the threshold was searched: it was derived), then the threshold,
    validation and test accuracy (fractions), sparsity, compression and non-zeros. One row per
    front member, by increasing second objective, as in report.md."""
    front = summary.front
    params = [c for c in searched_columns(summary.ranked) if c in front.columns]
    if "param_threshold" in params and "param_lam" in front.columns and "param_lam" not in params:
        params.append("param_lam")
    columns = ["trial_id", *params, *(c for c in FRONT_CSV_METRICS if c in front.columns)]
    front.reindex(columns=columns).to_csv(path, index=False)


def _write_plots(summary: StudySummary, out_dir: Path, options: ReportOptions) -> list[tuple[str, str]]:
    front = front_plot_info([summary], x_axis=options.x_axis, baseline=options.baseline,
                            references=options.references, y_min=options.y_min,
                            y_axis=options.y_axis)
    save_figure(draw_front(front, dpi=options.dpi), out_dir / "front.png")
    save_figure(draw_progress(progress_plot_info([summary]), dpi=options.dpi), out_dir / "hypervolume.png")
    plots = [("Accuracy-sparsity front", "front.png"), ("Hypervolume after each trial", "hypervolume.png")]
    try:
        params = params_plot_info([summary], sparsity_axis=options.x_axis, log_scales=_log_scales(summary),
                                  accuracy_floor=front.y_range[0])
    except AnalysisError:  # nothing was searched: no parameter plot
        return plots
    save_figure(draw_params(params, dpi=options.dpi), out_dir / "params.png")
    return plots + [("Searched parameters against the objectives", "params.png")]


def _log_scales(summary: StudySummary) -> dict[str, bool] | None:
    """How the parameters were searched, from the study file beside the results (if any)."""
    sources = summary.ranked.get(SOURCE_COLUMN, pd.Series(dtype=str)).dropna().unique()
    return log_scales(str(sources[0])) if len(sources) == 1 else None


def _header(summary: StudySummary, trials: pd.DataFrame) -> str:
    sources = ", ".join(f"`{s}`" for s in trials.get("source", pd.Series(dtype=str)).dropna().unique())
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# Study report: {summary.study}\n\nResults read from {sources or 'memory'} on {now}."


def _summary_section(summary: StudySummary) -> str:
    counts = [(f"{state} (analysed)" if state == schema.FINISHED else state, str(n))
              for state, n in sorted(summary.state_counts.items(), key=lambda c: c[0] != schema.FINISHED)]
    objectives = ", ".join(f"{o.name} ({o.direction}d)" for o in summary.objectives)
    pairs = zip(summary.objectives, summary.reference)
    reference = ", ".join(f"{o.name} {_value(o.column, r)}" for o, r in pairs)
    n_front = int((summary.ranked["pareto_rank"] == 0).sum())
    lines = [
        "## Summary", "", _table(("state", "trials"), counts), "",
        f"- Objectives: {objectives}.",
        f"- Front: {n_front} of {len(summary.ranked)} finished trials are non-dominated (rank 0).",
        f"- Hypervolume: **{summary.hypervolume:.6g}** against the reference point ({reference}).",
        f"- Knee: {_knee_text(summary)}",
    ]
    return "\n".join(lines)


def _knee_text(summary: StudySummary) -> str:
    if summary.knee_trial_id is None:
        why = ("defined for two objectives" if len(summary.objectives) != 2
               else "the front has fewer than three points or no bend")
        return f"none ({why})."
    row = summary.ranked[summary.ranked["trial_id"] == summary.knee_trial_id].iloc[0]
    return (f"trial `{row['trial_id']}`: {_value('metric_val_acc', row.get('metric_val_acc'))} validation"
            f" accuracy at {_value('metric_sparsity', row.get('metric_sparsity'))} sparsity"
            " (the front point farthest from the line through its normalised extremes).")


def _front_section(summary: StudySummary) -> str:
    front = summary.front
    columns = _front_columns(summary) + [(o.name, o.column) for o in summary.objectives
                                         if o.column not in {c for _, c in FRONT_COLUMNS}]
    chance = chance_accuracy_of(summary.ranked)
    collapsed = at_chance(front["metric_val_acc"], chance)
    rows = [[_value(column, row.get(column)) + (CHANCE_MARK if column == "metric_val_acc" and low else "")
             for _, column in columns] for low, (_, row) in zip(collapsed, front.iterrows())]
    note = ""
    if collapsed.any():
        note = (f"\n\n{CHANCE_MARK.strip()}: at chance level (validation accuracy at most"
                f" {CHANCE_MARGIN:g} × {percent(chance, 0)}, the accuracy of guessing): the network collapsed;"
                " such a trial is on the front only because no useful trial reached its sparsity,"
                " and it is left out of the best trade-offs below.")
    return "\n".join([
        "## Pareto front", "",
        f"Non-dominated finished trials by increasing {summary.objectives[1].name}. Chosen on"
        f" {', '.join(o.name for o in summary.objectives)} only; test accuracy is shown but was"
        " not used to choose them.", "",
        _table([heading for heading, _ in columns], rows),
    ]) + note


def _front_columns(summary: StudySummary) -> list[tuple[str, str]]:
    """FRONT_COLUMNS with the other searched parameters (a layer's threshold multiplier, a seed)
    after the learning rate: the front's points differ in them too."""
    known = {name for pair in FRONT_COLUMNS for name in pair}  # a searched threshold is shown once
    extra = [(c.removeprefix("param_").replace("threshold_multipliers.", "m "), c)
             for c in searched_columns(summary.ranked)
             if c not in known and c.removeprefix("param_") not in known and c in summary.front.columns]
    at = [column for _, column in FRONT_COLUMNS].index("param_lr") + 1
    return list(FRONT_COLUMNS[:at]) + extra + list(FRONT_COLUMNS[at:])


def _export_section(summary: StudySummary) -> str:
    """The `rvsm model` command that exports each front trial (text only: no torch here)."""
    front = summary.front
    if front.empty:
        return ""
    sources = summary.ranked.get("source", pd.Series(dtype=str)).dropna()
    study = str(sources.iloc[0]) if len(sources) else "STUDY"
    commands = [f"rvsm model {shlex.quote(study)} --trial {shlex.quote(str(trial))} -o "
                f"{shlex.quote(f'models/{trial}')}" for trial in front["trial_id"]]
    return "\n".join([
        "## Export a front network", "",
        "Each front trial, in the order of the table, as `model.safetensors`, a CSR copy of its sparse"
        " tensors, `model.json` (config, metrics, provenance, how to rebuild it) and a README"
        " (see docs/export.md):", "",
        "```sh", *commands, "```",
    ])


def _queries_section(summary: StudySummary, options: ReportOptions) -> str:
    """Best-at queries over the trials above chance level (a collapsed network is no trade-off)."""
    trials = summary.ranked
    collapsed = at_chance(trials["metric_val_acc"], chance_accuracy_of(trials))
    excluded = int(collapsed.sum())
    trials = trials[~collapsed]
    if trials.empty:
        return "## Best trade-offs\n\nNone: every finished trial is at chance level."
    best = float(np.nanmax(trials["metric_val_acc"].to_numpy(dtype=float, na_value=np.nan)))
    at_accuracy = options.at_accuracy or tuple(round(best - d, 4) for d in DEFAULT_ACCURACY_DROPS)
    headings = ("trial", "val acc", "test acc", "sparsity", "compression")
    by_sparsity = [[f"≥ {percent(s, 1)}", *_query_row(best_accuracy_at_sparsity(trials, s))]
                   for s in options.at_sparsity]
    by_accuracy = [[f"≥ {percent(a)}", *_query_row(best_sparsity_at_accuracy(trials, a))]
                   for a in at_accuracy]
    left_out = (f" ({excluded:,} finished trial{'s' if excluded != 1 else ''} at chance level left out)"
                if excluded else "")
    return "\n".join([
        "## Best trade-offs", "", f"Best validation accuracy at a sparsity of at least{left_out}:", "",
        _table(("sparsity", *headings), by_sparsity), "",
        "Best sparsity at a validation accuracy of at least:", "",
        _table(("val acc", *headings), by_accuracy),
    ])


def _sensitivity_section(summary: StudySummary) -> str:
    """Which searched parameters went with which objective, over the finished trials."""
    trials, objectives = summary.ranked, summary.objectives
    correlations = rank_correlations(trials, objectives)
    choices = choice_summaries(trials, objectives, trials[RANK_COLUMN] == 0)
    if not correlations and not choices:
        return ""
    parts = ["## What mattered"]
    if correlations:
        rows = [[column_label(c.column, trials), *(_rho(r) for r in c.rho), str(c.trials), _chance_level(c.trials)]
                for c in correlations]
        parts += [
            "Spearman's rank correlation of each searched parameter with each objective, over the"
            " finished trials (+1: larger values always went with a larger objective; 0: no monotone"
            " link). Trials stopped early are left out: their figures are from an earlier epoch."
            " A |ρ| under the last column could be chance (5% level, 1.96/√(trials − 1)).",
            _table(("parameter", *(f"ρ with {o.name}" for o in objectives), "trials", "chance level"), rows),
        ]
    if choices:
        headings = ("parameter", "value", "trials", "on the front",
                    *(f"median {o.name}" for o in objectives), *(f"best {o.name}" for o in objectives))
        rows = [[column_label(c.column, trials), str(c.value), str(c.trials), str(c.on_front),
                 *(_value(o.column, m) for o, m in zip(objectives, c.medians)),
                 *(_value(o.column, b) for o, b in zip(objectives, c.best))] for c in choices]
        parts += ["How each choice of a categorical parameter fared (finished trials):",
                  _table(headings, rows)]
    return "\n\n".join(parts)


def _rho(value: float) -> str:
    return "" if np.isnan(value) else f"{value:+.2f}"


def _chance_level(trials: int) -> str:
    return f"{1.96 / np.sqrt(trials - 1):.2f}" if trials > 2 else ""


def _query_row(row: pd.Series | None) -> list[str]:
    if row is None:
        return ["none", "", "", "", ""]
    columns = ("trial_id", "metric_val_acc", "metric_test_acc", "metric_sparsity", "metric_compression")
    return [_value(c, row.get(c)) for c in columns]


def _left_out_section(trials: pd.DataFrame, bad_files: Sequence[BadFile]) -> str:
    left_out = trials[trials["state"] != schema.FINISHED].sort_values("trial_number")
    parts = []
    if len(left_out):
        rows = [[f"`{r.trial_id}`", str(r.state), _value("epochs", r.epochs_completed), _short(r.error)]
                for r in left_out.head(_MAX_LEFT_OUT).itertuples()]
        more = f"\n\n... and {len(left_out) - _MAX_LEFT_OUT} more." if len(left_out) > _MAX_LEFT_OUT else ""
        table = _table(("trial", "state", "epochs", "error"), rows)
        parts.append("## Trials not analysed\n\n" + table + more)
    if bad_files:
        parts.append("## Files skipped\n\n" + "\n".join(f"- `{b.path}`: {b.reason}" for b in bad_files))
    return "\n\n".join(parts)


def _value(column: str, value) -> str:
    """One cell: percentages for accuracies and sparsities, 3 significant digits otherwise."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return ""
    if column == "trial_id":
        return f"`{value}`"
    if column in _PERCENT_COLUMNS:
        return percent(float(value), 3 if float(value) > 0.999 else 2)
    if column == "metric_compression":
        return f"{float(value):,.1f}×"
    if isinstance(value, (int, np.integer)) or column == "metric_nonzeros":
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.3g}"
    return str(value)


def _short(text, limit: int = 100) -> str:
    if not isinstance(text, str):
        return ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(headings: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (no tabulate dependency)."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(headings), line(["---"] * len(headings)), *[line(r) for r in rows]])
