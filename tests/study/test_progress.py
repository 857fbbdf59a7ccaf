"""The progress output of `rvsm run`: ended-trial lines everywhere, a live display in a terminal only."""
from __future__ import annotations

import io
import math
from types import SimpleNamespace

import pytest

from study.progress import LIVE_ENV, ProgressCallback, live_wanted
from study.spec import parse_spec
from .conftest import study_text


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def spec(tmp_path):
    text = study_text("p", tmp_path, trials=3).replace(
        "early_stopping = false", "early_stopping = false\nobjectives = ['val_acc', 'nonzeros']")
    return parse_spec(text, check_train=False)


def trial(trial_id: str, **last) -> SimpleNamespace:
    return SimpleNamespace(trial_id=trial_id, config={"lam": 1e-4, "beta": 2.0, "lr": 0.003, "epochs": 2},
                           last_result=last)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def callback(spec, stream, **kwargs) -> ProgressCallback:
    progress = ProgressCallback(spec, location=None, stream=stream, clock=Clock(), **kwargs)
    progress.total = 3
    return progress


def test_a_terminal_gets_the_live_display_and_a_pipe_does_not(monkeypatch):
    monkeypatch.delenv(LIVE_ENV, raising=False)
    assert live_wanted(Terminal()) and not live_wanted(io.StringIO())
    monkeypatch.setenv(LIVE_ENV, "0")
    assert not live_wanted(Terminal())
    monkeypatch.setenv(LIVE_ENV, "1")
    assert live_wanted(io.StringIO())


def test_without_a_terminal_only_ended_trials_print_one_line_each(spec, monkeypatch):
    monkeypatch.delenv(LIVE_ENV, raising=False)
    out = io.StringIO()
    progress = callback(spec, out)
    progress.on_trial_result(0, [], trial("a"), {"epoch": 1, "val_acc": 0.9, "sparsity": 0.5})
    progress.on_step_end(0, [])
    assert out.getvalue() == ""  # nothing for a running trial: a log file stays one line per trial
    finished = trial("a", epoch=2, val_acc=0.9812, nonzeros=12345, test_acc=0.98, diverged=False)
    progress.on_trial_complete(0, [], finished)
    diverged = trial("b", epoch=1, val_acc=math.nan, nonzeros=None, diverged=True)
    progress.on_trial_complete(0, [], diverged)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\x1b[" not in out.getvalue()
    assert lines[0].startswith("[1/3] a finished: lam=0.0001 beta=2 lr=0.003 -> val_acc 98.12% nonzeros 12,345")
    assert "(2 epochs, front 1, elapsed" in lines[0]
    assert lines[1].startswith("[2/3] b diverged: ") and "val_acc diverged nonzeros diverged" in lines[1]
    assert "nan" not in out.getvalue()


def test_the_live_display_shows_running_trials_epochs_metrics_and_an_eta(spec, monkeypatch):
    monkeypatch.delenv(LIVE_ENV, raising=False)
    out = Terminal()
    progress = callback(spec, out)
    assert progress.eta_s() is None  # no epoch reported yet
    progress.on_trial_start(0, [], trial("a"))
    assert "0 of 2" in out.getvalue() and "ETA after the first epochs" in out.getvalue()
    progress.on_trial_result(0, [], trial("a"), {"epoch": 1, "val_acc": 0.9512, "sparsity": 0.875})
    progress.on_trial_result(0, [], trial("b"), {"epoch": 1, "val_acc": None, "sparsity": 0.5})
    screen = out.getvalue()
    assert "0/3 trials ended, 2 running" in screen and "ETA" in screen
    assert "1 of 2" in screen and "95.12%" in screen and "87.50%" in screen and "n/a" in screen
    progress.clock.now = 10.0  # 2 epochs in 10 s; 1 left for each running trial, 2 for the third: 4
    assert progress.eta_s() == pytest.approx(20.0)
    progress.on_step_end(0, [])
    assert "ETA 20s" in out.getvalue() and "elapsed 10s" in out.getvalue()
    progress.on_trial_complete(0, [], trial("a", epoch=2, val_acc=0.96, nonzeros=10, diverged=False,
                                            test_acc=0.95))
    assert "[1/3] a finished" in out.getvalue()
    assert "a" not in progress.running and "1/3 trials ended, 1 running" in out.getvalue()
    progress.on_experiment_end([])
    assert progress._live is None
