"""`rvsm status` is a reader: it runs with torch and Ray unimportable, names a corrupt file in one
line (or skips it with --skip-bad), and no command prints a traceback when its output pipe is
closed (`rvsm status S | head`)."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from analysis import schema
from study.bookkeeping import plan_run
from study.cli import main
from study.spec import dump_toml, loads
from study.storage import STUDY_FILE, locate
from tests.study.conftest import study_text

ROOT = Path(__file__).resolve().parents[2]
# Runs `rvsm` with torch and Ray unimportable: any import of them fails the command.
WITHOUT_TORCH_AND_RAY = """
import importlib.abc, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "ray"):
            raise ImportError(f"{name} is blocked: rvsm status must not import it")
        return None

sys.meta_path.insert(0, Blocked())
from study.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def study_folder(tmp_path) -> Path:
    """A 10-trial study written without Ray: the study file, a run record and the trial rows."""
    from study.results import ResultsWriter, param_types
    from trainables.config import TrainConfig
    raw = loads(study_text("st", tmp_path / "studies", trials=10))
    location = locate(raw["study"]["storage"], "st")
    location.write_text(dump_toml(raw), STUDY_FILE)
    plan_run(location, 10)
    config = TrainConfig.from_dict(raw["train"]).to_dict()
    writer = ResultsWriter(location, "st", param_types(config), ["lam", "beta", "lr"])
    start = datetime.now(timezone.utc) - timedelta(minutes=5)
    states = [schema.FINISHED] * 7 + [schema.DIVERGED, schema.STOPPED, schema.RUNNING]
    for i, state in enumerate(states):
        metrics = {"epoch": 2, "val_acc": 0.8 + 0.01 * i, "sparsity": 0.9 - 0.05 * i,
                   "test_acc": 0.8 if state == schema.FINISHED else None}
        writer.write_trial(writer.trial_row(
            trial_id=f"t{i:02d}", trial_number=i, state=state, config={**config, "lam": 1e-4 * i},
            metrics=metrics, started_at=start, ended_at=None if state == schema.RUNNING else
            start + timedelta(minutes=i), node="n", device="cpu"))
    return Path(location.path)


def _rvsm_without_torch_and_ray(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_TORCH_AND_RAY, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kwargs)


def test_status_runs_without_torch_and_ray(study_folder):
    done = _rvsm_without_torch_and_ray("status", str(study_folder))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert "trials: 10/10 recorded; 1 running, 7 finished, 1 diverged" in done.stdout
    assert "Pareto front:" in done.stdout and "hypervolume" in done.stdout


def test_status_of_a_study_file_runs_without_torch_and_ray(study_folder, tmp_path):
    path = tmp_path / "st.toml"
    path.write_bytes((study_folder / STUDY_FILE).read_bytes())
    done = _rvsm_without_torch_and_ray("status", str(path))
    assert done.returncode == 0 and "trials: 10/10 recorded" in done.stdout, done.stderr


def test_the_blocker_does_block(tmp_path):
    done = subprocess.run([sys.executable, "-c", WITHOUT_TORCH_AND_RAY.replace(
        "from study.cli import main", "import torch"), "status"], cwd=ROOT,
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "torch is blocked" in done.stderr


def test_a_corrupt_results_file_is_named_in_one_line_or_skipped(study_folder, capsys):
    bad = study_folder / schema.RESULTS_DIR / schema.TRIALS_DIR / "t99.parquet"
    bad.write_bytes(b"not parquet at all")
    assert main(["status", str(study_folder)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and str(bad) in captured.err
    assert captured.err.startswith("rvsm status: error: bad results file") and "--skip-bad" in captured.err
    assert main(["status", str(study_folder), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "trials: 10/10 recorded" in captured.out
    assert captured.err.startswith("rvsm status: warning: skipped") and str(bad) in captured.err


def test_a_stored_study_file_that_is_not_utf8_is_one_line(study_folder, capsys):
    stored = study_folder / STUDY_FILE
    stored.write_bytes(stored.read_bytes().replace(b'name = "st"', b'name = "s\xff"'))
    for command in ("status", "resume"):
        assert main([command, str(study_folder)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "not UTF-8" in err and "line" in err and "name" in err, err


def test_a_corrupt_run_record_is_one_line(study_folder, capsys):
    record = study_folder / "runs" / "000.run.json"
    record.write_text("{not json")
    assert main(["status", str(study_folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(record) in err and "Traceback" not in err


def test_resume_names_a_corrupt_results_file_and_goes_on_without_it(study_folder, capsys, monkeypatch):
    """resume warns and continues (the stand-in for Ray's start stops it there)."""
    import types

    import study

    class Started(Exception):
        pass

    fake = types.ModuleType("study.launch")
    fake.connect = lambda *a, **k: (_ for _ in ()).throw(Started())
    monkeypatch.setitem(sys.modules, "study.launch", fake)
    monkeypatch.setattr(study, "launch", fake, raising=False)
    bad = study_folder / schema.RESULTS_DIR / schema.TRIALS_DIR / "t99.parquet"
    bad.write_bytes(b"garbage")
    with pytest.raises(Started):
        main(["resume", str(study_folder)])
    err = capsys.readouterr().err
    kept = study_folder / ".corrupt" / schema.RESULTS_DIR / schema.TRIALS_DIR / "t99.parquet"
    assert err.startswith(f"rvsm resume: warning: moved the unreadable results file {bad} to {kept}")
    assert err.count("\n") == 1 and not bad.exists() and kept.read_bytes() == b"garbage"
    from study.bookkeeping import terminal_trials
    assert terminal_trials(locate(str(study_folder))) == 9  # the readable ended trials
    assert main(["status", str(study_folder)]) == 0  # the results read cleanly again


@pytest.mark.parametrize("args", [["status", "{study}"], ["--help"]], ids=["status", "help"])
def test_a_closed_output_pipe_is_no_traceback(study_folder, args):
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before rvsm writes: `| head` that has exited
    try:
        done = subprocess.run([sys.executable, "-m", "study.cli",
                               *[a.format(study=study_folder) for a in args]],
                              cwd=ROOT, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 1


def test_resume_with_a_corrupt_results_file_warns_and_completes(ray_session, write_study, tmp_path, capsys):
    """A real study: one trial, its results file corrupted, then `rvsm resume`: a warning that
    names the file, the trial's row rebuilt from its final checkpoint, no traceback."""
    path = write_study(trials=1, concurrent=1)
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "tiny"
    files = sorted((folder / schema.RESULTS_DIR / schema.TRIALS_DIR).glob("*.parquet"))
    files[0].write_bytes(b"corrupt")
    capsys.readouterr()
    assert main(["resume", str(folder)]) == 0
    captured = capsys.readouterr()
    assert f"rvsm resume: warning: moved the unreadable results file {files[0]}" in captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "trials: 1/1 recorded; 0 running, 1 finished" in captured.out
    from analysis.load import load_results
    assert len(load_results([str(folder)]).trials) == 1  # no bad file left, no trial added



def test_resume_rebuilds_every_run_of_a_lost_compacted_part_from_final_checkpoints(
        ray_session, write_study, tmp_path, capsys):
    """A finished study of two runs (`run`, then `extend`) keeps all its trials' rows in one
    compacted part; that part cut short, `rvsm resume` rebuilds every trial's row, the first
    run's too, from its final checkpoint: the same trials and figures, no trial trained again,
    no trial sampled in a lost one's place, and `rvsm status` shows them all."""
    from analysis.load import load_results
    path = write_study(trials=2, concurrent=2)
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "tiny"
    assert main(["extend", str(folder), "--trials", "1"]) == 0
    before = load_results([str(folder)]).trials.set_index("trial_id")
    checkpoints = {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/trial_*/checkpoint_*/state.pt")}
    (part,) = (folder / schema.RESULTS_DIR / schema.TRIALS_DIR).glob("part-*.parquet")
    part.write_bytes(part.read_bytes()[:1000])
    capsys.readouterr()

    assert main(["resume", str(folder)]) == 0
    assert f"rvsm resume: warning: moved the unreadable results file {part}" in capsys.readouterr().err
    after = load_results([str(folder)]).trials.set_index("trial_id")
    assert sorted(after.index) == sorted(before.index) and len(after) == 3
    for column in ("state", "epochs_completed", "trial_number", "metric_val_acc", "metric_sparsity"):
        assert after[column].to_dict() == before.loc[after.index, column].to_dict(), column
    assert sorted(p.name for p in (folder / "runs").glob("*.run.json")) == ["000.run.json", "001.run.json"]
    now = {p: p.stat().st_mtime_ns for p in folder.glob("runs/*/trial_*/checkpoint_*/state.pt")}
    assert now and set(now) <= set(checkpoints)  # resumed from final checkpoints: none written
    assert all(now[p] == checkpoints[p] for p in now)
    assert main(["status", str(folder)]) == 0
    assert "trials: 3/3 recorded; 0 running, 3 finished" in capsys.readouterr().out
    assert main(["resume", str(folder)]) == 0  # again: nothing lost, nothing to do


def test_resume_of_a_copied_study_reads_and_writes_the_copy(ray_session, write_study, tmp_path, capsys):
    """Tune restores the scheduler and callbacks as pickled, naming where the study was: a copy
    whose results part is lost must rebuild its own rows, not count the original's as its own
    (and exit 130 for ever) nor write into the original."""
    import shutil
    path = write_study(trials=1, concurrent=1)
    assert main(["run", str(path)]) == 0
    original = tmp_path / "studies" / "tiny"
    copy = tmp_path / "copy" / "tiny"
    shutil.copytree(original, copy)
    kept = {p: p.read_bytes() for p in (original / schema.RESULTS_DIR).rglob("*.parquet")}
    kept_optuna = (original / "optuna" / "optuna.db").read_bytes()
    (part,) = (copy / schema.RESULTS_DIR / schema.TRIALS_DIR).glob("part-*.parquet")
    part.write_bytes(part.read_bytes()[:1000])
    capsys.readouterr()
    assert main(["resume", str(copy)]) == 0
    assert "trials: 1/1 recorded; 0 running, 1 finished" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in (original / schema.RESULTS_DIR).rglob("*.parquet")} == kept
    assert (original / "optuna" / "optuna.db").read_bytes() == kept_optuna  # told the copy's


def test_a_moved_run_that_an_older_version_pickled_fails_in_one_line(ray_session, write_study, tmp_path,
                                                                     capsys, monkeypatch):
    """Before search.StudyStorage, Tune's snapshot pickled an Optuna storage that connects to the
    database where the study was created: once the folder is moved, restoring it fails inside
    sqlalchemy. That must be one line naming the cause, exit 2, not a traceback."""
    import shutil

    import sqlalchemy.exc
    from ray import tune

    path = write_study(trials=1, concurrent=1)
    assert main(["run", str(path)]) == 0
    moved = tmp_path / "moved" / "tiny"
    shutil.move(tmp_path / "studies" / "tiny", moved)

    def old_snapshot(*args, **kwargs):  # what restoring such a snapshot raises
        raise sqlalchemy.exc.OperationalError("connect", None, Exception("unable to open database file"))
    monkeypatch.setattr(tune.Tuner, "restore", old_snapshot)
    capsys.readouterr()
    assert main(["resume", str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "written by an older rvsm-study" in err and "unable to open database file" in err
    assert "move the study folder back" in err
