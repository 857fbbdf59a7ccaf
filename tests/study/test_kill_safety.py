"""Results never go backwards: a study whose driver is SIGKILLed again and again, each time right
after one more trial is recorded ended, and resumed each time.

After every kill the set of ended trials only grows, and a row once recorded ended never changes
again (neither its state nor its epochs: an ended trial is never trained again). At the end: exactly
the requested trials, each ended once, epochs without duplicates, progress never past the target,
no traceback in any resume, and no process of the killed driver (Ray's included) left behind.
Slow by design (3.5 to 5.5 minutes on 2 shared CPUs): it guards the promise that a kill loses
nothing.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pyarrow.dataset as ds
import pytest

from analysis.errors import AnalysisError
from analysis.load import load_epochs, load_results
from tests.study.conftest import TINY_TRAIN

TRIALS, KILLS = 12, 5  # two trials at a time often end together: 5 kills may see 10 end
TERMINAL = {"finished", "diverged", "errored", "stopped"}
TRAIN = TINY_TRAIN.replace("synthetic_size = 600", "synthetic_size = 3000").replace(
    "epochs = 2", "epochs = 3")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def rvsm():
    """Starts the real CLI in a session of its own (a local Ray started by it joins that
    session); whatever a failed test leaves running is killed, by session, at teardown."""
    started = []

    def start(log: Path, *args: str) -> subprocess.Popen:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("w") as out:
            driver = subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=ROOT,
                                      env=env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        started.append(driver)
        return driver

    yield start
    for driver in started:
        if _session(driver.pid):
            _kill_group(driver, everything=True)


def _session(sid: int) -> dict[int, int]:
    """Live processes of session `sid` (the CLI's, started with start_new_session): pid -> group."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp, session = text[text.rindex(")") + 2:].split()[:4]
        if int(session) == sid and state != "Z":
            members[int(stat.parent.name)] = int(pgrp)
    return members


def _kill_group(driver: subprocess.Popen, *, everything: bool = False) -> None:
    """SIGKILL the driver's process group, as a supervisor would; then nothing of its session
    (Ray's processes included) may live on. `everything` kills every group of the session."""
    groups = {driver.pid} | (set(_session(driver.pid).values()) if everything else set())
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    driver.wait()
    deadline = time.monotonic() + 30
    while _session(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session(driver.pid), f"left behind: {_session(driver.pid)}"


def _read(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trials and epochs as the analysis readers see them (while the study writes)."""
    if not (folder / "results" / "trials").exists():
        return (pd.DataFrame(columns=["trial_id", "state", "epochs_completed", "ended_at"]),
                pd.DataFrame(columns=["trial_id", "metric_epoch", "reported_at"]))
    for attempt in range(5):
        try:
            trials = load_results([str(folder)]).trials
            return trials, load_epochs(str(folder)).to_pandas()
        except AnalysisError:
            # a file replaced between the reader's listing and its read: read again
            if attempt == 4:
                raise
            time.sleep(0.2)


class Ledger:
    """What has been seen ended: checked on every look, so a row that goes back is caught."""

    def __init__(self):
        self.ended: dict[str, tuple] = {}         # trial id -> (state, epochs, ended_at)
        self.epochs: dict[tuple, object] = {}     # (ended trial id, epoch) -> reported_at

    def look(self, folder: Path) -> set[str]:
        trials, epochs = _read(folder)
        for row in trials.itertuples():
            seen = self.ended.get(row.trial_id)
            now = (row.state, row.epochs_completed, row.ended_at)
            if seen is not None:
                assert now == seen, f"trial {row.trial_id} was {seen}, now reads {now}"
            elif row.state in TERMINAL:
                self.ended[row.trial_id] = now
        for row in epochs.itertuples():
            key = (row.trial_id, row.metric_epoch)
            if key in self.epochs:
                assert row.reported_at == self.epochs[key], f"{key} reported again after it ended"
            elif row.trial_id in self.ended:
                self.epochs[key] = row.reported_at
        return set(self.ended)


def _progress_counts(text: str) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for a, b in re.findall(r"^\[(\d+)/(\d+)\]", text, re.MULTILINE)]


def test_repeated_sigkill_never_loses_or_repeats_a_trial(write_study, tmp_path, rvsm):
    path = write_study("killed", trials=TRIALS, concurrent=2, train=TRAIN)
    folder = tmp_path / "studies" / "killed"
    ledger, logs, started = Ledger(), [], time.monotonic()
    for kill in range(KILLS):
        before = set(ledger.ended)
        logs.append((tmp_path / f"driver{kill}.log", before))
        driver = rvsm(logs[-1][0], *(["run", str(path)] if kill == 0 else ["resume", str(folder)]))
        deadline = time.monotonic() + 300
        while ledger.look(folder) == before:
            assert driver.poll() is None, f"driver {kill} ended early:\n{logs[-1][0].read_text()}"
            assert time.monotonic() < deadline, logs[-1][0].read_text()
            time.sleep(0.1)
        _kill_group(driver)
        after = ledger.look(folder)
        assert before < after, "the ended trials only grow"
        assert len(after) < TRIALS, f"kill {kill + 1} came too late to test a resume"

    logs.append((tmp_path / "final.log", set(ledger.ended)))
    driver = rvsm(logs[-1][0], "resume", str(folder))
    assert driver.wait(timeout=400) == 0, logs[-1][0].read_text()
    ledger.look(folder)
    deadline = time.monotonic() + 30
    while _session(driver.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session(driver.pid), "a finished driver leaves nothing running"
    elapsed = time.monotonic() - started

    trials, epochs = _read(folder)
    assert len(trials) == TRIALS and trials["trial_id"].is_unique, trials[["trial_id", "state"]]
    assert set(trials["state"]) <= {"finished", "diverged"}, trials[["state", "error"]]
    assert set(ledger.ended) == set(trials["trial_id"])
    stored = ds.dataset(folder / "results" / "epochs", format="parquet").to_table(
        columns=["trial_id", "metric_epoch"]).to_pandas()
    assert not stored.duplicated().any(), "an epoch row stored twice"
    assert len(stored) == len(epochs)
    done = trials.set_index("trial_id")
    for trial_id, got in epochs.groupby("trial_id")["metric_epoch"]:
        assert sorted(got) == list(range(1, done.loc[trial_id, "epochs_completed"] + 1))

    for log, ended_before in logs[1:]:
        text = log.read_text()
        assert "Traceback" not in text and "FileNotFoundError" not in text, text
        # a trial recorded ended before this resume started is not run (nor ended) again
        reported = re.findall(r"^\[\d+/\d+\] (\S+) ", text, re.MULTILINE)
        assert not set(reported) & ended_before, text
        assert len(reported) == len(set(reported)), text
    counts = [c for log, _ in logs for c in _progress_counts(log.read_text())]
    assert counts and all(done_ <= total == TRIALS for done_, total in counts), counts

    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna' / 'optuna.db'}")
    study = optuna.load_study(study_name="killed", storage=storage)
    states = pd.Series([t.state.name for t in study.trials])
    assert not (states == "RUNNING").any(), "orphans of the killed drivers are closed"
    assert (states == "COMPLETE").sum() == (trials["state"] == "finished").sum()
    by_number = {t.number: t for t in study.trials}
    for row in trials.itertuples():  # the results' numbers are Optuna's
        assert by_number[row.trial_number].user_attrs["trial_id"] == row.trial_id
    counts = {state: int(n) for state, n in states.value_counts().items()}
    print(f"\n{KILLS} kills survived, {TRIALS} trials, {len(study.trials)} Optuna trials "
          f"{counts}, {elapsed:.0f} s")
