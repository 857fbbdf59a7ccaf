"""Loading: several studies, bad files named in the message, states, and plain-pandas reading."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from analysis import schema
from analysis.errors import AnalysisError
from analysis.load import finished, load_epochs, load_results, state_counts
from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.summary import summarise_study

ROWS = [
    {"val_acc": 0.99, "sparsity": 0.5},
    {"val_acc": 0.98, "sparsity": 0.9},
    {"state": "running"},
    {"state": "diverged", "val_acc": 0.1},
    {"state": "errored", "error": "boom"},
    {"state": "stopped", "val_acc": 0.5, "sparsity": 0.2},
]


def trials_dir(study):
    return study / schema.RESULTS_DIR / schema.TRIALS_DIR


def test_several_studies_in_one_table(make_study):
    a = make_study("a", ROWS)
    b = make_study("b", ROWS[:2])
    results = load_results([str(a), str(b)])
    assert results.bad_files == ()
    trials = results.trials
    assert len(trials) == 8
    assert sorted(trials["study"].unique()) == ["a", "b"]
    assert set(trials["source"]) == {str(a), str(b)}
    assert state_counts(trials) == {
        "a": {"running": 1, "finished": 2, "diverged": 1, "errored": 1, "stopped": 1},
        "b": {"running": 0, "finished": 2, "diverged": 0, "errored": 0, "stopped": 0},
    }
    assert finished(trials)["trial_id"].tolist() == ["t0000", "t0001", "t0000", "t0001"]


def test_same_study_name_from_two_folders_is_told_apart(tmp_path, make_study):
    first = make_study("lenet", ROWS[:2], root=tmp_path / "cluster1")
    second = make_study("lenet", ROWS[:2], root=tmp_path / "cluster2")
    trials = load_results([str(first), str(second)]).trials
    assert trials["study"].nunique() == 2
    assert all(name.startswith("lenet (") for name in trials["study"])


def test_uri(make_study):
    study = make_study("a", ROWS)
    assert len(load_results([study.as_uri()]).trials) == len(ROWS)


def _corrupt(study):
    (trials_dir(study) / "t0000.parquet").write_bytes(b"PAR1 not really parquet")


def _foreign(study):
    pq.write_table(pa.table({"x": [1, 2]}), trials_dir(study) / "foreign.parquet")


def _epochs_file(study):
    table = schema.epoch_schema().empty_table()
    pq.write_table(table, trials_dir(study) / "epoch.parquet")


def _newer(study):
    path = trials_dir(study) / "t0001.parquet"
    table = pq.read_table(path)
    table = table.replace_schema_metadata({b"rvsm_schema_version": str(schema.SCHEMA_VERSION + 1).encode()})
    pq.write_table(table, path)


def _not_parquet(study):
    (trials_dir(study) / "notes.txt").write_text("hello")


@pytest.mark.parametrize("spoil, bad_name, message", [
    (_corrupt, "t0000.parquet", "not a readable Parquet file"),
    (_foreign, "foreign.parquet", "no rvsm_schema_version"),
    (_epochs_file, "epoch.parquet", "not a trials file: no column state"),
    (_newer, "t0001.parquet", f"schema version {schema.SCHEMA_VERSION + 1}, newer than"),
    (_not_parquet, "notes.txt", "not a results file"),
])
def test_bad_file_is_named_and_can_be_skipped(make_study, spoil, bad_name, message):
    study = make_study("a", ROWS)
    spoil(study)
    with pytest.raises(AnalysisError) as error:
        load_results([str(study)])
    assert bad_name in str(error.value) and message in str(error.value)
    assert "--skip-bad" in str(error.value)
    results = load_results([str(study)], skip_bad=True)
    assert [b.path.rsplit("/", 1)[-1] for b in results.bad_files] == [bad_name]
    n_replaced = 1 if bad_name.startswith("t0") else 0
    assert len(results.trials) == len(ROWS) - n_replaced


def test_hidden_and_temporary_files_are_ignored(make_study):
    study = make_study("a", ROWS)
    (trials_dir(study) / ".t0009.parquet.tmp").write_bytes(b"half written")
    (trials_dir(study) / "_SUCCESS").write_text("")
    assert len(load_results([str(study)]).trials) == len(ROWS)


def test_missing_and_wrong_folders(tmp_path, make_study):
    with pytest.raises(AnalysisError, match="does not exist"):
        load_results([str(tmp_path / "nope")])
    with pytest.raises(AnalysisError, match="holds no results/trials"):
        load_results([str(tmp_path)])
    study = make_study("a", ROWS)
    with pytest.raises(AnalysisError, match="looks like a results folder"):
        load_results([str(study / "results")])
    with pytest.raises(AnalysisError, match="is not a folder"):
        load_results([str(trials_dir(study) / "t0000.parquet")])


def test_empty_study_loads_but_cannot_be_analysed(tmp_path, make_study):
    empty = tmp_path / "empty" / "results" / "trials"
    empty.mkdir(parents=True)
    assert load_results([str(tmp_path / "empty")]).trials.empty
    unfinished = make_study("unfinished", [{"state": "running"}, {"state": "errored"}])
    trials = load_results([str(unfinished)]).trials
    with pytest.raises(AnalysisError, match=r"no finished trials \(1 running, 1 errored\)"):
        summarise_study(trials, DEFAULT_OBJECTIVES)


def test_plain_pandas_and_pyarrow_read_the_trials_folder_as_one_dataset(make_study):
    study = make_study("a", ROWS)
    folder = trials_dir(study)
    assert len(pd.read_parquet(folder)) == len(ROWS)
    table = ds.dataset(folder, format="parquet").to_table()
    assert table.num_rows == len(ROWS)
    assert table.schema.metadata[b"rvsm_schema_version"] == str(schema.SCHEMA_VERSION).encode()


def test_plain_pandas_reads_the_epochs_folder_as_one_dataset(make_study):
    study = make_study("a", ROWS[:1])
    for trial_id in ("t0000", "t0001"):
        folder = study / schema.RESULTS_DIR / schema.EPOCHS_DIR / trial_id
        folder.mkdir(parents=True)
        for epoch in range(3):
            row = {"schema_version": 1, "study": "a", "trial_id": trial_id, "metric_epoch": epoch}
            table = pa.Table.from_pylist([row], schema=schema.epoch_schema())
            pq.write_table(table, folder / f"{epoch:05d}.parquet")
    epochs = pd.read_parquet(study / schema.RESULTS_DIR / schema.EPOCHS_DIR)
    assert sorted(epochs.groupby("trial_id")["metric_epoch"].count()) == [3, 3]


# -- layout version 2: part files, live files, version 1 studies, the documented reading lines ----

def _v1_study(root, name="old", n=4):
    """A study as schema version 1 wrote it: one file per trial and per epoch, NaN where a
    diverged trial measured nothing."""
    rows = [{"val_acc": 0.9, "sparsity": 0.5} for _ in range(n - 1)]
    rows.append({"state": "diverged", "val_acc": float("nan"), "sparsity": 0.1})
    study = _write_v2_live(root, name, rows)
    for path in study.rglob("*.parquet"):
        table = pq.read_table(path)
        table = table.set_column(0, "schema_version", pa.array([1] * table.num_rows, pa.int32()))
        pq.write_table(table.replace_schema_metadata({b"rvsm_schema_version": b"1"}), path)
    return study


def _write_v2_live(root, name, rows, epochs=2):
    """Live files only (what a running study holds between compactions)."""
    from tests.analysis.conftest import write_study as write
    study = write(root, name, rows)
    for number, row in enumerate(rows):
        folder = study / schema.RESULTS_DIR / schema.EPOCHS_DIR / f"t{number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for epoch in range(1, epochs + 1):
            record = {"schema_version": schema.SCHEMA_VERSION, "study": name,
                      "trial_id": f"t{number:04d}", "trial_number": number, "metric_epoch": epoch,
                      "metric_val_acc": row.get("val_acc", 0.5)}
            pq.write_table(pa.Table.from_pylist([record], schema=schema.epoch_schema()),
                           folder / f"{epoch:05d}.parquet")
    return study


def _mid_run_study(root):
    """Five ended trials compacted into parts, one running trial in live files."""
    from study.compaction import compact
    from study.storage import locate
    rows = [{"val_acc": 0.9 - i / 100, "sparsity": 0.5} for i in range(5)] + [{"state": "running"}]
    study = _write_v2_live(root, "mid", rows)
    compact(locate(str(study)), full=True)
    return study


def test_a_version_1_study_still_reads(tmp_path):
    study = _v1_study(tmp_path)
    trials = load_results([str(study)]).trials
    assert len(trials) == 4 and set(trials["schema_version"]) == {1}
    assert trials.loc[trials["state"] == "diverged", "metric_val_acc"].isna().all()
    epochs = load_epochs(str(study))
    assert epochs.num_rows == 8 and epochs.schema.metadata[b"rvsm_schema_version"] == b"1"


def test_compacting_a_version_1_study_keeps_its_rows_and_nulls_its_nans(tmp_path):
    from study.compaction import compact
    from study.storage import locate
    study = _v1_study(tmp_path)
    before = load_results([str(study)]).trials
    compact(locate(str(study)), full=True)
    folder = study / schema.RESULTS_DIR / schema.TRIALS_DIR
    assert [p.name.startswith(schema.PART_PREFIX) for p in folder.iterdir()] == [True]
    after = load_results([str(study)]).trials
    assert after["trial_id"].tolist() == before["trial_id"].tolist()
    table = pq.read_table(folder)
    assert table.schema.metadata[b"rvsm_schema_version"] == str(schema.SCHEMA_VERSION).encode()
    assert table["metric_val_acc"].null_count == 1
    assert not pa.compute.any(pa.compute.is_nan(table["metric_val_acc"])).as_py()
    assert load_epochs(str(study)).num_rows == 8


def test_a_trial_in_a_part_and_in_a_live_file_reads_once_in_its_ended_state(tmp_path):
    study = _mid_run_study(tmp_path)
    # A row left in a live file beside the part that holds the trial ended (a compaction killed
    # before its deletions, or a late event): the ended row wins, whichever file is newer.
    part = next((study / "results" / "trials").glob("part-*.parquet"))
    running = pq.read_table(part).slice(0, 1)
    running = running.set_column(running.schema.get_field_index("state"), "state", pa.array(["running"]))
    pq.write_table(running, study / "results" / "trials" / "t0000.parquet")
    trials = load_results([str(study)]).trials
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert trials.loc[trials["trial_id"] == "t0000", "state"].item() == "finished"


DOC = Path(__file__).resolve().parents[2] / "docs" / "schema.md"


def _documented_blocks() -> dict[str, str]:
    """The fenced Python blocks of docs/schema.md that read a study, by the library they import."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    found = {}
    for block in blocks:
        first = block.splitlines()[0]
        for library in ("pandas", "polars", "duckdb", "analysis"):
            if first.startswith((f"import {library}", f"from {library}")):
                found[library] = block
    return found


@pytest.mark.parametrize("library", ["pandas", "polars", "duckdb", "analysis"])
def test_the_documented_reading_lines_read_a_running_study(tmp_path, library):
    if library not in ("pandas", "analysis"):
        pytest.importorskip(library)
    block = _documented_blocks()[library]
    study = _mid_run_study(tmp_path)
    namespace: dict = {}
    exec(block.replace("rvsm-studies/quickstart", study.as_posix()), namespace)  # noqa: S102
    assert len(namespace["trials"]) == 6
    assert len(namespace["epochs"]) == 12
