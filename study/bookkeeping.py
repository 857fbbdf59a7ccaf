"""A study's bookkeeping: its runs, its target number of trials and how many have ended.

A study is a sequence of Tune experiments ("runs") sharing one results folder: run 0 is
`rvsm run`, each `rvsm extend` adds a run, `rvsm resume` may add one that only replaces trials an
earlier run lost. Each run is described by `runs/<k>.run.json`. This module reads and writes those
files and counts trials from the Parquet results; it imports neither Ray nor torch, so readers
(`rvsm status`) and the progress display stay light.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from analysis import schema
from study.storage import RUNS_DIR, StudyLocation

TERMINAL = (schema.FINISHED, schema.DIVERGED, schema.ERRORED, schema.STOPPED)


class StudyFolderError(ValueError):
    """A file of the study folder that the study itself wrote is unreadable; names the file."""


@dataclass(frozen=True)
class RunInfo:
    """One run of a study: its trials are numbered trial_offset .. trial_offset+num_samples-1."""
    index: int
    num_samples: int
    trial_offset: int
    adds_to_target: int  # 0 for a run that only replaces trials an earlier run lost
    created_at: str = ""  # ISO time (UTC)

    @property
    def name(self) -> str:
        return f"{self.index:03d}"


def runs(location: StudyLocation) -> list[RunInfo]:
    """The study's runs, oldest first (empty before `plan_run` wrote the first)."""
    metas = location.list_files(RUNS_DIR, suffix=".run.json")
    infos = []
    for path in metas:
        try:
            with location.fs.open_input_stream(path) as f:
                infos.append(RunInfo(**json.loads(f.read())))
        except (OSError, ValueError, TypeError) as exc:  # JSON and UTF-8 errors are ValueErrors
            reason = " ".join(str(exc).split())[:200]
            raise StudyFolderError(f"{path} is not a readable run record ({reason})") from None
    return sorted(infos, key=lambda r: r.index)


def plan_run(location: StudyLocation, num_samples: int, *, adds_to_target: bool = True) -> RunInfo:
    """Record a new run of `num_samples` trials numbered after the previous runs' trials."""
    previous = runs(location)
    offset = previous[-1].trial_offset + previous[-1].num_samples if previous else 0
    info = RunInfo(index=len(previous), num_samples=num_samples, trial_offset=offset,
                   adds_to_target=num_samples if adds_to_target else 0,
                   created_at=datetime.now(timezone.utc).isoformat())
    location.write_text(json.dumps(asdict(info)), RUNS_DIR, f"{info.name}.run.json")
    return info


def target_trials(location: StudyLocation) -> int:
    """How many trials the study is to end with: the sum over runs that add to the target."""
    return sum(r.adds_to_target for r in runs(location))


def terminal_trials(location: StudyLocation) -> int:
    """Trials recorded as ended (finished, diverged, errored or stopped).

    Counts readable rows only: an unreadable results file (which `resume` sets aside,
    `study.status.set_aside_bad_results`) counts as a trial not done.
    """
    from analysis.load import load_results
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        return 0
    trials = load_results([location.uri], skip_bad=True).trials
    return int(trials["state"].isin(TERMINAL).sum())
