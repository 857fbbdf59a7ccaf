"""A whole study on `s3://` storage (a local S3-compatible server: moto, on 127.0.0.1): run, a
hard kill of the driver's process group, a resume from the stored state alone (the local Optuna
cache deleted, as on another machine), then every trial once, few files, Optuna in step."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import time

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pytest

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import load_epochs, load_results
from tests.study.conftest import study_text
from tests.study.test_resume import SLOWER_TRAIN, _rvsm

BUCKET = "rvsm-test"
TRIALS = 6


@pytest.fixture
def s3(s3_server):
    """The storage URI of a study folder on the local S3 server."""
    s3_server.create_bucket(Bucket=BUCKET)
    return f"s3://{BUCKET}/studies"


def _terminal(uri: str) -> set[str]:
    try:
        trials = load_results([uri]).trials
    except AnalysisError:  # no results folder yet
        return set()
    return set(trials.loc[trials["state"].isin(schema.TERMINAL_STATES), "trial_id"])


def _stored_optuna(fs: pafs.FileSystem, study_path: str, folder) -> dict[str, int]:
    """Optuna trial states in the stored copy of the database."""
    local = folder / "optuna.db"
    with fs.open_input_stream(f"{study_path}/optuna/optuna.db") as f:
        local.write_bytes(f.read())
    with sqlite3.connect(local) as db:
        return dict(db.execute("select state, count(*) from trials group by state").fetchall())


def test_a_study_on_s3_survives_a_hard_kill_and_resumes(s3, tmp_path):
    path = tmp_path / "s3study.toml"
    path.write_text(study_text("s3study", s3, trials=TRIALS, concurrent=2, train=SLOWER_TRAIN))
    uri = f"{s3}/s3study"
    fs, study_path = pafs.FileSystem.from_uri(uri)

    driver = _rvsm("run", str(path))
    deadline = time.monotonic() + 300
    while len(_terminal(uri)) < 2 and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stdout.read()
        time.sleep(0.5)
    before = _terminal(uri)
    assert 2 <= len(before) < TRIALS, "the kill must land mid-way"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()

    # The stored Optuna copy is in step: every trial ended in the results has ended in Optuna.
    stored = _stored_optuna(fs, study_path, tmp_path)
    assert stored.get("COMPLETE", 0) >= len(_terminal(uri)), stored
    shutil.rmtree(tmp_path / "cache")  # resume from what the bucket holds, as another machine would

    resumed = _rvsm("resume", uri)
    output, _ = resumed.communicate(timeout=500)
    assert resumed.returncode == 0, output
    trials = load_results([uri]).trials
    assert len(trials) == TRIALS and trials["trial_id"].is_unique
    assert set(trials["state"]) <= {"finished", "diverged"}, trials[["state", "error"]]
    assert before <= set(trials["trial_id"])
    epochs = load_epochs(uri).to_pandas()
    finished = set(trials.loc[trials["state"] == "finished", "trial_id"])
    assert all(sorted(group) == [1, 2, 3] for tid, group in epochs.groupby("trial_id")["metric_epoch"]
               if tid in finished)

    # A finished study holds one part per results folder; pyarrow reads it with no help.
    listing = fs.get_file_info(pafs.FileSelector(f"{study_path}/results", recursive=True))
    names = sorted(i.path.split("/results/", 1)[1] for i in listing if i.type == pafs.FileType.File)
    assert len(names) == 2 and all(n.split("/")[1].startswith(schema.PART_PREFIX) for n in names), names
    plain = ds.dataset(f"{study_path}/results/epochs", filesystem=fs, format="parquet").to_table()
    assert plain.num_rows == len(epochs)
    assert _stored_optuna(fs, study_path, tmp_path).get("COMPLETE", 0) >= len(finished)


def test_a_remote_studys_stored_optuna_database_holds_every_asked_trial(s3, tmp_path):
    """Tune's snapshot, synced every second, can name a trial asked after the last trial end; a
    resume after a hard kill restores the searcher from it and must find that trial in the
    stored database (it once failed with Optuna's 'Record does not exist')."""
    from study import launch
    from study.bookkeeping import RunInfo
    from study.spec import parse_spec
    from study.storage import locate

    spec = parse_spec('[study]\nname = "asked"\ntrials = 2\n[train]\ndataset = "synthetic"\n')
    location = locate(s3, "asked")
    searcher = launch._searcher(spec, location, RunInfo(index=0, num_samples=2, trial_offset=0,
                                                         adds_to_target=2))
    searcher.set_search_properties(None, None, {})
    searcher.suggest("t1")
    fs, study_path = pafs.FileSystem.from_uri(location.uri)
    assert _stored_optuna(fs, study_path, tmp_path) == {"RUNNING": 1}
    assert launch._optuna_uploader(locate(str(tmp_path / "local"), "s")) is None
