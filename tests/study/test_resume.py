"""A study killed with SIGKILL mid-way, then resumed: exactly the requested trials, each once,
and every trial that had finished before the kill still there."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq

from tests.study.conftest import TINY_TRAIN

SLOWER_TRAIN = TINY_TRAIN.replace("synthetic_size = 600", "synthetic_size = 3000").replace(
    "epochs = 2", "epochs = 3")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _rvsm(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen([sys.executable, "-m", "study.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **kwargs)


def _finished_ids(folder) -> set[str]:
    trials_dir = folder / "results" / "trials"
    if not trials_dir.exists():
        return set()
    ids = set()
    for path in trials_dir.glob("*.parquet"):  # live files (one row) and parts (many)
        try:
            with open(path, "rb") as f:  # one version of a file the writer may be replacing
                rows = pq.read_table(f, columns=["trial_id", "state"]).to_pylist()
        except FileNotFoundError:  # compacted away since the listing
            continue
        ids |= {row["trial_id"] for row in rows if row["state"] == "finished"}
    return ids


def _wait_for_finished(driver: subprocess.Popen, folder, count: int) -> None:
    deadline = time.monotonic() + 240
    while len(_finished_ids(folder)) < count and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.2)


def test_sigkill_then_resume(write_study, tmp_path):
    path = write_study("killed", trials=8, concurrent=2, train=SLOWER_TRAIN)
    folder = tmp_path / "studies" / "killed"
    driver = _rvsm("run", str(path))
    _wait_for_finished(driver, folder, 2)
    before = _finished_ids(folder)
    assert 2 <= len(before) < 8, "the kill must land mid-way"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    resumed = _rvsm("resume", str(folder))
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    trials = pd.read_parquet(folder / "results" / "trials")
    assert len(trials) == 8 and trials["trial_id"].is_unique, trials[["trial_id", "state"]]
    assert set(trials["state"]) <= {"finished", "diverged"}, trials[["state", "error"]].to_dict("records")
    assert before <= set(trials.loc[trials["state"] == "finished", "trial_id"])
    epochs = pd.read_parquet(folder / "results" / "epochs")
    assert not epochs.duplicated(["trial_id", "metric_epoch"]).any()


def test_ctrl_c_exits_130_and_says_how_to_resume(write_study, tmp_path):
    path = write_study("interrupted", trials=6, concurrent=2, train=SLOWER_TRAIN)
    folder = tmp_path / "studies" / "interrupted"
    driver = _rvsm("run", str(path))
    _wait_for_finished(driver, folder, 1)
    os.kill(driver.pid, signal.SIGINT)
    output, _ = driver.communicate(timeout=120)
    assert driver.returncode == 130, output
    assert f"rvsm resume {folder}" in output and "Traceback" not in output

    resumed = _rvsm("resume", str(folder))
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output
    trials = pd.read_parquet(folder / "results" / "trials")
    assert len(trials) == 6 and set(trials["state"]) == {"finished"}
