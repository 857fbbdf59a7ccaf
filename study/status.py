"""`rvsm status`: where a study stands, read from its Parquet results only (safe while it runs).

A reader: it imports neither torch nor Ray (only the analysis dependencies), so it answers in
about a second on a laptop.
"""
from __future__ import annotations

import sys
from datetime import datetime, timezone

import pandas as pd

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import BadFile, load_results
from analysis.objectives import parse_objective
from analysis.summary import summarise_study
from study.bookkeeping import runs, target_trials
from study.spec import SpecError, StudySpec, parse_spec
from study.storage import STUDY_FILE, StudyLocation

CORRUPT_DIR = ".corrupt"  # unreadable results files that `resume` set aside, kept for a person


def read_stored_spec(location: StudyLocation, *, check_train: bool = True) -> StudySpec:
    """The study file kept in the study folder; SpecError naming it if it is unreadable."""
    source = location.join(STUDY_FILE)
    try:
        with location.fs.open_input_stream(source) as f:
            data = f.read()
    except OSError as exc:
        raise SpecError(f"cannot read {source}: {' '.join(str(exc).split())}") from None
    return parse_spec(data, source=source, check_train=check_train)


def print_status(location: StudyLocation, *, skip_bad: bool = False) -> int:
    """Trials by state, elapsed time, Pareto front size and hypervolume, on stdout.

    Raises AnalysisError naming a corrupt results file, unless `skip_bad` (then it is named on
    stderr and the other files are read)."""
    spec = read_stored_spec(location, check_train=False)
    target = target_trials(location)
    study_runs = runs(location)
    created = study_runs[0].created_at if study_runs else ""
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        print(f"study {spec.study.name!r} at {location.uri}: 0/{target} trials recorded yet")
        return 0
    results = load_results([location.uri], skip_bad=True)
    if results.bad_files and not skip_bad:
        raise AnalysisError(_bad_files_line(results.bad_files) + " (--skip-bad reads the others)")
    for bad in results.bad_files:
        print(f"rvsm status: warning: skipped {' '.join(str(bad).split())}", file=sys.stderr)
    trials = results.trials
    counts = {state: int((trials["state"] == state).sum()) for state in schema.STATES}
    print(f"study {spec.study.name!r} at {location.uri}")
    print(f"  trials: {len(trials)}/{target} recorded; "
          + ", ".join(f"{n} {state}" for state, n in counts.items()))
    print(f"  elapsed: {format_duration(_elapsed(trials, created))} (from the study's start to "
          f"its last trial's end, or now while trials run)")
    objectives = [parse_objective(f"{o.metric}:{o.direction}") for o in spec.search.objectives]
    try:
        summary = summarise_study(trials, objectives)
    except AnalysisError as exc:
        print(f"  front: {exc}")
        return 0
    reference = ", ".join(f"{v:g}" for v in summary.reference)
    size = len(summary.front)
    print(f"  Pareto front: {size} trial{'s' if size != 1 else ''}; hypervolume {summary.hypervolume:.4f} "
          f"(reference point {reference})")
    return 0


def set_aside_bad_results(location: StudyLocation, prog: str) -> list[BadFile]:
    """Move each unreadable results file out of the results into `<study>/.corrupt/` (kept, and
    named on stderr). `resume` and `extend` then go on: a trial whose row is lost runs again
    from its last checkpoint, which rewrites the row (a trial that had ended reports the same
    end again from its final checkpoint, without training; a compacted part may hold the
    trials of every run, and study.launch.complete_study restores each run that lost one),
    so nothing that a checkpoint holds is lost."""
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        return []
    bad_files = list(load_results([location.uri], skip_bad=True).bad_files)
    results_root = location.join(schema.RESULTS_DIR)
    for bad in bad_files:
        kept = location.join(CORRUPT_DIR, schema.RESULTS_DIR,
                             bad.path[len(results_root):].lstrip("/"))
        location.fs.create_dir(kept.rsplit("/", 1)[0], recursive=True)
        location.fs.move(bad.path, kept)
        print(f"{prog}: warning: moved the unreadable results file {bad.path} to {kept} "
              f"({' '.join(bad.reason.split())}); the trials it held run again from their last "
              "checkpoints",
              file=sys.stderr)
    return bad_files


def _bad_files_line(bad_files: tuple[BadFile, ...]) -> str:
    first = "bad results file " + " ".join(str(bad_files[0]).split())
    return first if len(bad_files) == 1 else f"{len(bad_files)} bad results files, the first: {first}"


def format_duration(seconds: float) -> str:
    """`1h02m03s`, `2m03s` or `3s`: whole seconds, for a person to read."""
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def _elapsed(trials: pd.DataFrame, created: str) -> float:
    start = pd.Timestamp(created) if created else trials["started_at"].min()
    end = trials["ended_at"].max()
    if pd.isna(start):
        return 0.0
    if (trials["state"] == schema.RUNNING).any() or pd.isna(end):
        end = datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())
