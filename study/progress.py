"""Progress a person can follow, instead of Ray's table: one line per ended trial and, in a
terminal, a live display of the running trials.

The live display (rich) shows each running trial's epoch k of n, its latest validation accuracy
and sparsity, and an estimate of the time left for the study. It is on only when the output is a
terminal: a log file or a pipe gets the ended-trial lines alone. ``RVSM_LIVE_PROGRESS=1`` forces
it on, ``=0`` off.
"""
from __future__ import annotations

import atexit
import os
import sys
import time
from dataclasses import dataclass

import numpy as np
from ray import tune
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from analysis.pareto import non_dominated_ranks
from analysis.schema import FINISHED
from study.bookkeeping import target_trials, terminal_trials
from study.results import ended_state
from study.spec import StudySpec
from study.status import format_duration
from study.storage import StudyLocation

LIVE_ENV = "RVSM_LIVE_PROGRESS"
DEFAULT_EPOCHS = 10  # TrainConfig's default, for a study file that does not set train.epochs
REFRESH_S = 1.0      # the display is redrawn at most this often between results


def live_wanted(stream) -> bool:
    """The live display: forced by RVSM_LIVE_PROGRESS=1/0, else on when ``stream`` is a terminal."""
    forced = os.environ.get(LIVE_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@dataclass
class Running:
    """The latest report of a running trial."""
    params: str
    epoch: int
    epochs: int
    val_acc: object
    sparsity: object
    started: float


class ProgressCallback(tune.Callback):
    def __init__(self, spec: StudySpec, location: StudyLocation, stream=None, *, live: bool | None = None,
                 clock=time.monotonic):
        self.spec = spec
        self.clock = clock
        self.location = location
        self.stream = stream
        self.live = live
        self.done = self.total = 0
        self.points: list[list[float]] = []
        self.running: dict[str, Running] = {}
        self.epochs_done = 0          # epochs reported since this (re)start: the rate behind the ETA
        self.start = clock()
        self._live: Live | None = None
        self._drawn = 0.0

    def setup(self, **info):
        """Counted from the results at every (re)start, so a resumed study counts on."""
        self.done, self.total = terminal_trials(self.location), target_trials(self.location)
        self.start = self.clock()
        self.epochs_done = 0

    def __getstate__(self):
        state = self.__dict__.copy()
        state["stream"] = state["_live"] = None
        return state

    # -- Tune's hooks ---------------------------------------------------------------------------

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[trial.trial_id] = Running(self._params(trial), 0, self._epochs(trial), None, None,
                                               self.clock())
        self._refresh(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        known = self.running.get(trial.trial_id)
        self.running[trial.trial_id] = Running(
            params=self._params(trial), epoch=int(result.get("epoch", 0)), epochs=self._epochs(trial),
            val_acc=result.get("val_acc"), sparsity=result.get("sparsity"),
            started=known.started if known else self.clock())
        self.epochs_done += 1
        self._refresh(force=True)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        self._line(trial, result, ended_state(result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trial, trial.last_result or {}, "errored")

    def on_step_end(self, iteration, trials, **info):
        self._refresh()  # the elapsed time and the ETA move on between results

    def on_experiment_end(self, trials, **info):
        self.close()

    # -- output ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the live display (leaving its last frame on screen)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _out(self):
        return self.stream or sys.stdout

    def _epochs(self, trial) -> int:
        return int(trial.config.get("epochs", self.spec.train.get("epochs", DEFAULT_EPOCHS)))

    def _params(self, trial) -> str:
        return " ".join(f"{p.name}={_fmt(trial.config.get(p.name))}" for p in self.spec.search.params)

    def _line(self, trial, result: dict, state: str) -> None:
        self.done += 1
        self.running.pop(trial.trial_id, None)
        values = [result.get(o.metric) for o in self.spec.search.objectives]
        front = ""
        if state == FINISHED and all(_is_number(v) for v in values):
            self.points.append(values)
            ranks = non_dominated_ranks(np.array(self.points, dtype=float),
                                        [o.direction for o in self.spec.search.objectives])
            front = f", front {int((ranks == 0).sum()):,}"
        objectives = " ".join(f"{o.metric} {_fmt_metric(o.metric, v, state)}"
                              for o, v in zip(self.spec.search.objectives, values))
        elapsed = format_duration(self.clock() - self.start)
        epochs = result.get("epoch", 0)
        line = (f"[{self.done:,}/{self.total:,}] {trial.trial_id} {state}: {self._params(trial)} -> {objectives}"
                f" ({epochs} epoch{'s' if epochs != 1 else ''}{front}, elapsed {elapsed})")
        live = self._live_display()
        if live is not None:
            live.console.print(line, highlight=False, markup=False, soft_wrap=True)
            self._refresh(force=True)
        else:
            print(line, file=self._out(), flush=True)

    def _live_display(self) -> Live | None:
        wanted = self.live if self.live is not None else live_wanted(self._out())
        if not wanted:
            return None
        if self._live is None:
            console = Console(file=self._out(), force_terminal=True)  # wanted: drawn as on a terminal
            self._live = Live(self.render(), console=console, auto_refresh=False, transient=False)
            self._live.start()
            atexit.register(self.close)
        return self._live

    def _refresh(self, *, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self._drawn < REFRESH_S:
            return
        live = self._live_display()
        if live is not None:
            self._drawn = now
            live.update(self.render(), refresh=True)

    def render(self) -> Group:
        """The live display: a heading with counts, elapsed time and ETA, and one row per running trial."""
        now = self.clock()
        eta = self.eta_s()
        heading = (f"{self.done:,}/{self.total:,} trials ended, {len(self.running):,} running;"
                   f" elapsed {format_duration(now - self.start)}; ETA "
                   + (format_duration(eta) if eta is not None else "after the first epochs"))
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("trial", "parameters", "epoch", "val_acc", "sparsity", "running for"):
            table.add_column(column, no_wrap=column != "parameters")
        for trial_id, r in sorted(self.running.items()):
            table.add_row(trial_id, r.params, f"{r.epoch} of {r.epochs}", _fmt_metric("val_acc", r.val_acc),
                          _fmt_metric("sparsity", r.sparsity), format_duration(now - r.started))
        return Group(Text(heading, style="bold"), table) if self.running else Group(Text(heading, style="bold"))

    def eta_s(self) -> float | None:
        """Seconds left for the study, at the rate epochs were reported since the (re)start; None
        before the first report. Trials stopped early end sooner: then an overestimate."""
        elapsed = self.clock() - self.start
        if not self.epochs_done or elapsed <= 0:
            return None
        per_trial = int(self.spec.train.get("epochs", DEFAULT_EPOCHS))
        left = sum(max(0, r.epochs - r.epoch) for r in self.running.values())
        left += max(0, self.total - self.done - len(self.running)) * per_trial
        return left * elapsed / self.epochs_done


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _fmt_metric(name: str, value, state: str = "") -> str:
    """An objective's value: percent for accuracies and sparsities, thousands separators for
    counts; "diverged" or "n/a" for a value that was not measured (None or NaN)."""
    if not _is_number(value):
        return "diverged" if state == "diverged" else "n/a"
    if name.startswith(("val_acc", "sparsity")):
        return f"{100 * value:.2f}%"
    if isinstance(value, int) or (name == "nonzeros" and float(value).is_integer()):
        return f"{int(value):,}"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.4g}"
