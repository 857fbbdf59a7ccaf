"""Compaction: few files once trials end, and every row readable exactly once at every moment,
even when compaction is killed between any two of its steps."""
from __future__ import annotations

import os
import shutil

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis.load
from analysis import schema
from analysis.load import load_epochs, load_results
from study import compaction
from study.results import ResultsWriter
from study.storage import TMP_DIR, locate

EPOCHS = 3


class SimulatedKill(BaseException):
    """Stands for SIGKILL: nothing after it runs (BaseException, so no handler catches it)."""


def writer_for(root, name="s", **kwargs) -> ResultsWriter:
    return ResultsWriter(locate(str(root), name), name, {"lam": pa.float64()}, ["lam"], **kwargs)


def run_trial(writer: ResultsWriter, number: int, *, end: str | None = "finished",
              epochs: int = EPOCHS) -> None:
    """The events of one trial, in the order the results callback writes them."""
    trial_id = f"t{number:04d}"

    def trial(state, metrics):
        writer.write_trial(writer.trial_row(
            trial_id=trial_id, trial_number=number, state=state, config={"lam": 1e-4},
            metrics=metrics, started_at=None, ended_at=None, node="n", device="cpu"))

    trial(schema.RUNNING, {})
    metrics = {}
    for epoch in range(1, epochs + 1):
        diverged = end == schema.DIVERGED and epoch == epochs
        metrics = {"epoch": epoch, "val_acc": float("nan") if diverged else 0.5 + number / 100,
                   "sparsity": epoch / 10, "diverged": diverged}
        writer.write_epoch(writer.epoch_row(trial_id=trial_id, trial_number=number, metrics=metrics))
        trial(schema.RUNNING, metrics)
    if end is not None:
        trial(end, {**metrics, "test_acc": None if end == schema.DIVERGED else 0.5})


def build_study(root, *, ended=7, running=2, parts=False) -> ResultsWriter:
    """`ended` ended trials (one diverged) and `running` running ones, all in live files; with
    `parts`, the first three ended trials already compacted into a part."""
    writer = writer_for(root)
    for number in range(ended):
        run_trial(writer, number, end=schema.DIVERGED if number == 4 else schema.FINISHED)
        if parts and number == 2:
            writer.compact()
    for number in range(ended, ended + running):
        run_trial(writer, number, end=None, epochs=2)
    return writer


def seen(study: str) -> tuple[list[tuple], list[tuple]]:
    """What a reader sees: (trial_id, state, epochs) per trial, (trial_id, epoch, val_acc) per epoch."""
    trials = load_results([study]).trials
    epochs = load_epochs(study).to_pandas()
    return (sorted(zip(trials["trial_id"], trials["state"], trials["epochs_completed"])),
            sorted(zip(epochs["trial_id"], epochs["metric_epoch"], epochs["metric_val_acc"].fillna(-1))))


def files(study_dir, folder: str) -> list[str]:
    base = study_dir / schema.RESULTS_DIR / folder
    return sorted(str(p.relative_to(base)) for p in base.rglob("*.parquet"))


def plain_rows(study_dir) -> tuple[int, int]:
    """Rows as a tool that knows nothing of compaction reads them: every file of the folder."""
    results = study_dir / schema.RESULTS_DIR
    return (len(pd.read_parquet(results / schema.TRIALS_DIR)),
            len(pd.read_parquet(results / schema.EPOCHS_DIR)))


def test_compaction_leaves_one_part_per_folder_plus_running_trials(tmp_path):
    writer = build_study(tmp_path, ended=7, running=2)
    study, study_dir = writer.location.uri, tmp_path / "s"
    before = seen(study)
    assert len(files(study_dir, schema.EPOCHS_DIR)) == 7 * EPOCHS + 2 * 2

    done = writer.compact(full=True)

    assert (done.trial_rows, done.epoch_rows) == (7, 7 * EPOCHS)
    assert seen(study) == before
    trial_files, epoch_files = files(study_dir, schema.TRIALS_DIR), files(study_dir, schema.EPOCHS_DIR)
    assert [f.startswith(schema.PART_PREFIX) for f in trial_files].count(True) == 1
    assert sorted(f for f in trial_files if not f.startswith(schema.PART_PREFIX)) == [
        "t0007.parquet", "t0008.parquet"]
    assert len(epoch_files) == 1 + 2 * 2  # the part, and the running trials' live epochs
    assert sorted(p.name for p in (study_dir / "results" / "epochs").iterdir() if p.is_dir()) == [
        "t0007", "t0008"]  # emptied per-trial folders are gone
    assert plain_rows(study_dir) == (9, 7 * EPOCHS + 2 * 2)


def test_the_writer_compacts_every_n_ended_trials(tmp_path):
    writer = writer_for(tmp_path, compact_every=3)
    for number in range(7):
        run_trial(writer, number)
    trial_files = files(tmp_path / "s", schema.TRIALS_DIR)
    assert sum(f.startswith(schema.PART_PREFIX) for f in trial_files) == 2
    assert [f for f in trial_files if not f.startswith(schema.PART_PREFIX)] == ["t0006.parquet"]
    assert plain_rows(tmp_path / "s") == (7, 7 * EPOCHS)


def test_parts_are_merged_when_they_pile_up(tmp_path, monkeypatch):
    monkeypatch.setattr(compaction, "MAX_PARTS", 2)
    writer = writer_for(tmp_path, compact_every=1)
    for number in range(5):
        run_trial(writer, number)
    assert len(files(tmp_path / "s", schema.TRIALS_DIR)) <= 3
    assert plain_rows(tmp_path / "s") == (5, 5 * EPOCHS)


def test_an_unmeasured_metric_is_null_not_nan(tmp_path):
    writer = build_study(tmp_path, ended=5, running=0)
    live = pq.read_table(tmp_path / "s" / "results" / "trials" / "t0004.parquet")
    assert live["state"][0].as_py() == "diverged" and live["metric_val_acc"][0].as_py() is None
    writer.compact(full=True)
    table = pq.read_table(tmp_path / "s" / "results" / "trials")
    diverged = table.filter(pa.compute.equal(table["state"], "diverged"))
    assert diverged["metric_val_acc"].null_count == 1
    assert not pa.compute.any(pa.compute.is_nan(table["metric_val_acc"])).as_py()


def _count_steps(tmp_path, full: bool, parts: bool) -> int:
    writer = build_study(tmp_path / "count", parts=parts)
    steps = []
    original_write, original_remove = compaction._write_part, compaction._remove
    compaction._write_part = lambda *a: (steps.append("write"), original_write(*a))
    compaction._remove = lambda *a: (steps.append("remove"), original_remove(*a))
    try:
        writer.compact(full=full)
    finally:
        compaction._write_part, compaction._remove = original_write, original_remove
    assert steps.count("write") == 2
    return len(steps)


@pytest.mark.parametrize("full, parts", [(False, False), (False, True), (True, True)],
                         ids=["periodic", "periodic-after-a-part", "full-merge"])
def test_a_kill_at_any_step_of_compaction_loses_and_doubles_nothing(tmp_path, monkeypatch, full, parts):
    n_steps = _count_steps(tmp_path, full, parts)
    assert n_steps > 10
    pristine = tmp_path / "pristine"
    expected = seen(build_study(pristine, parts=parts).location.uri)
    for kill_at in range(n_steps + 1):
        root = tmp_path / f"kill{kill_at}"
        shutil.copytree(pristine, root)
        writer = writer_for(root)
        calls = {"n": 0}

        def step(original):
            def wrapped(*args):
                if calls["n"] == kill_at:
                    raise SimulatedKill
                calls["n"] += 1
                return original(*args)
            return wrapped

        with monkeypatch.context() as patch:
            patch.setattr(compaction, "_write_part", step(compaction._write_part))
            patch.setattr(compaction, "_remove", step(compaction._remove))
            try:
                writer.compact(full=full)
                assert kill_at == n_steps
            except SimulatedKill:
                assert kill_at < n_steps
        assert seen(writer.location.uri) == expected, f"killed before step {kill_at}"

        writer.compact()  # what the next run start does, then plain readers are exact too
        assert seen(writer.location.uri) == expected
        assert plain_rows(root / "s") == (len(expected[0]), len(expected[1]))
        writer.compact(full=True)
        assert sum(f.startswith(schema.PART_PREFIX) for f in files(root / "s", schema.TRIALS_DIR)) == 1


def test_a_reader_that_meets_a_compaction_lists_again(tmp_path, monkeypatch):
    writer = build_study(tmp_path)
    expected = seen(writer.location.uri)
    original = analysis.load.read_trial_file
    compacted = []

    def read_during_compaction(filesystem, path):
        if not compacted:  # the folder was listed; now a compaction replaces what it listed
            compacted.append(writer.compact(full=True))
        return original(filesystem, path)

    monkeypatch.setattr(analysis.load, "read_trial_file", read_during_compaction)
    assert seen(writer.location.uri) == expected
    assert compacted and compacted[0].files_removed > 0


def test_no_temporary_file_in_a_dataset_folder(tmp_path, monkeypatch):
    """polars and DuckDB refuse a folder holding a writer's temporary file: temporaries live
    in the study's .tmp/ folder, also when a kill leaves one behind."""
    polars = pytest.importorskip("polars")
    duckdb = pytest.importorskip("duckdb")
    writer = build_study(tmp_path)
    writer.compact()
    study_dir = tmp_path / "s"
    written_to = []
    original_write = pq.write_table
    monkeypatch.setattr(pq, "write_table", lambda table, where, **kw: (
        written_to.append(where), original_write(table, where, **kw)))
    run_trial(writer, 9, end=None, epochs=1)  # a running trial: live files
    monkeypatch.undo()
    assert written_to and all(f"/{TMP_DIR}/" in str(p) for p in written_to)
    (study_dir / TMP_DIR / "t0010.parquet.0123abcd.tmp").write_bytes(b"PAR1 half written")

    trials = polars.scan_parquet(study_dir / "results" / "trials").collect()
    epochs = polars.scan_parquet(study_dir / "results" / "epochs").collect()
    assert trials.height == 10 and epochs.height == 7 * EPOCHS + 2 * 2 + 1
    count = duckdb.sql(f"select count(*) from '{study_dir}/results/epochs/**/*.parquet'").fetchall()[0][0]
    assert count == epochs.height


def test_stale_temporaries_are_removed_by_a_full_compaction(tmp_path):
    writer = build_study(tmp_path, ended=1, running=0)
    stale = tmp_path / "s" / TMP_DIR / "x.parquet.abc.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    writer.compact(full=True)
    assert not stale.exists()


def test_the_batch_path_writes_parts_and_takes_ended_trials_only(tmp_path):
    writer = writer_for(tmp_path)
    rows = [writer.trial_row(trial_id=f"b{i}", trial_number=i, state=schema.FINISHED,
                             config={"lam": 1e-4}, metrics={"epoch": 1, "val_acc": float("nan")},
                             started_at=None, ended_at=None, node=None, device=None)
            for i in range(3)]
    epochs = [writer.epoch_row(trial_id=f"b{i}", trial_number=i, metrics={"epoch": 1})
              for i in range(3)]
    writer.write_ended(rows, epochs)
    assert files(tmp_path / "s", schema.TRIALS_DIR)[0].startswith(schema.PART_PREFIX)
    assert plain_rows(tmp_path / "s") == (3, 3)
    with pytest.raises(ValueError, match="ended trials only"):
        writer.write_ended([{**rows[0], "state": schema.RUNNING}], [])


def test_the_writer_survives_pickling(tmp_path):
    """Ray Tune pickles its callbacks, and with them the writer, into the experiment state."""
    import pickle
    writer = pickle.loads(pickle.dumps(writer_for(tmp_path, compact_every=2)))
    for number in range(2):
        run_trial(writer, number)
    assert sum(f.startswith(schema.PART_PREFIX) for f in files(tmp_path / "s", schema.TRIALS_DIR)) == 1
