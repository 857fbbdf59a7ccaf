"""`rvsm status`: where a study stands, read from its Parquet results only (safe while it runs)."""
from __future__ import annotations

from datetime import datetime, timezone

import pandas as pd

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import load_results
from analysis.objectives import parse_objective
from analysis.summary import summarise_study
from study.progress import format_duration
from study.spec import parse_spec
from study.storage import STUDY_FILE, StudyLocation


def print_status(location: StudyLocation) -> int:
    spec = parse_spec(location.read_text(STUDY_FILE), source=location.join(STUDY_FILE))
    from study.launch import runs, target_trials
    target = target_trials(location)
    created = runs(location)[0].created_at
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        print(f"study {spec.study.name!r} at {location.uri}: 0/{target} trials recorded yet")
        return 0
    trials = load_results([location.uri]).trials
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
    print(f"  Pareto front: {len(summary.front)} trials; hypervolume {summary.hypervolume:.4f} "
          f"(reference point {reference})")
    return 0


def _elapsed(trials: pd.DataFrame, created: str) -> float:
    start = pd.Timestamp(created) if created else trials["started_at"].min()
    end = trials["ended_at"].max()
    if pd.isna(start):
        return 0.0
    if (trials["state"] == schema.RUNNING).any() or pd.isna(end):
        end = datetime.now(timezone.utc)
    return max(0.0, (end - start).total_seconds())
