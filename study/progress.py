"""Progress a person can follow: one line per finished trial, instead of Ray's table."""
from __future__ import annotations

import sys
import time

import numpy as np
from ray import tune

from analysis.pareto import non_dominated_ranks
from analysis.schema import FINISHED
from study.results import ended_state
from study.spec import StudySpec
from study.storage import StudyLocation


def format_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressCallback(tune.Callback):
    def __init__(self, spec: StudySpec, location: StudyLocation, stream=None):
        self.spec = spec
        self.location = location
        self.stream = stream
        self.done = self.total = 0
        self.points: list[list[float]] = []
        self.start = time.monotonic()

    def setup(self, **info):
        """Counted from the results at every (re)start, so a resumed study counts on."""
        from study.launch import target_trials, terminal_trials
        self.done, self.total = terminal_trials(self.location), target_trials(self.location)
        self.start = time.monotonic()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["stream"] = None
        return state

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        self._line(trial, result, ended_state(result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, trial.last_result or {}, "errored")

    def _line(self, trial, result: dict, state: str) -> None:
        self.done += 1
        params = " ".join(f"{p.name}={_fmt(trial.config.get(p.name))}" for p in self.spec.search.params)
        values = [result.get(o.metric) for o in self.spec.search.objectives]
        front = ""
        if state == FINISHED and all(isinstance(v, (int, float)) for v in values):
            self.points.append(values)
            ranks = non_dominated_ranks(np.array(self.points, dtype=float),
                                        [o.direction for o in self.spec.search.objectives])
            front = f", front {int((ranks == 0).sum())}"
        objectives = " ".join(f"{o.metric} {_fmt_metric(o.metric, v)}"
                              for o, v in zip(self.spec.search.objectives, values))
        elapsed = format_duration(time.monotonic() - self.start)
        print(f"[{self.done}/{self.total}] {trial.trial_id} {state}: {params} -> {objectives}"
              f" ({result.get('epoch', 0)} epochs{front}, elapsed {elapsed})",
              file=self.stream or sys.stdout, flush=True)


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _fmt_metric(name: str, value) -> str:
    if not isinstance(value, (int, float)):
        return "n/a"
    if name.startswith(("val_acc", "sparsity")):
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"
