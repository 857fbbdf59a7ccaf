"""Compaction: ended trials' rows move from live files (one per event) into a few part files.

While a trial runs, each event lands in its own small live file (`results/trials/<trial_id>.parquet`,
`results/epochs/<trial_id>/<epoch>.parquet`): one atomic write per event, nothing to lose on a
kill. Once a trial has ended its rows are final, so they can be rewritten into part files
(`part-<generation>.parquet`) shared by many trials; a finished study then holds one part per
folder, not one file per trial and epoch.

Every step is safe to be killed after (`compact` runs again at the next run start or resume and
finishes the job):
  1. the epochs part is written (atomically), then the trials part;
  2. only then are the live files, and the parts merged into the new ones, deleted.
Between 1 and 2 a row sits in two files; readers keep one (analysis.load: an ended row beats a
running one, then the later file), and the next compaction deletes the leftovers instead of
writing those rows again. Only a trial whose ended row is on disk is compacted: the writer writes
a trial's epoch rows before its ended row, so its epochs are complete by then.

Imports neither Ray nor torch. One process compacts a study at a time: the driver that writes it.
"""
from __future__ import annotations

import posixpath
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis import schema
from analysis.load import (BadFileError, is_part, latest_trial_rows, list_results_files,
                           nan_to_null, read_epoch_file, read_trial_file, unique_epoch_rows)
from study.storage import StudyLocation

COMPACT_EVERY = 50  # ended trials between two compactions while a run goes on
MAX_PARTS = 8       # more part files than this in a folder: merge them all into one
ROW_GROUP_SIZE = 65_536  # rows per Parquet row group: readers parallelise over row groups


@dataclass(frozen=True)
class Compaction:
    """What one compaction did: rows written into new parts, files deleted."""
    trial_rows: int
    epoch_rows: int
    files_removed: int


def compact(location: StudyLocation, *, full: bool = False) -> Compaction:
    """Move the live rows of every ended trial into part files; with `full` (or when the parts
    outnumber MAX_PARTS) merge all parts into one as well.

    Raises OSError / pyarrow errors of the storage; a kill or an error at any point leaves every
    row readable exactly once through analysis.load.
    """
    fs = location.fs
    trials_dir = location.join(schema.RESULTS_DIR, schema.TRIALS_DIR)
    epochs_dir = location.join(schema.RESULTS_DIR, schema.EPOCHS_DIR)
    trial_files = list_results_files(fs, trials_dir, recursive=False)
    epoch_files = list_results_files(fs, epochs_dir, recursive=True)
    trial_parts = [p for p in trial_files if is_part(p)]
    epoch_parts = [p for p in epoch_files if is_part(p)]
    parts = _read_all(fs, trial_parts, read_trial_file)
    epoch_keys = _epoch_keys(fs, epoch_parts)
    epochs_repeat = epoch_keys.group_by(["trial_id", "metric_epoch"]).aggregate([]).num_rows \
        < epoch_keys.num_rows
    part_ids = [i for table in parts.values() for i in table["trial_id"].to_pylist()]
    trials_repeat = len(part_ids) > len(set(part_ids))
    # Rows in two parts (a merge killed before it deleted what it merged): merge again.
    full = (full or len(trial_parts) > MAX_PARTS or len(epoch_parts) > MAX_PARTS
            or trials_repeat or epochs_repeat)
    if full:
        location.remove_stale_temporaries()
    ended_in_parts = _ended_ids(parts.values())
    live = _read_all(fs, [p for p in trial_files if not is_part(p)], read_trial_file)
    # Live rows that can go: ended ones (final), and any row of a trial already ended in a part.
    retiring = {path: table for path, table in live.items()
                if _all_ended(table) or _ids(table) <= ended_in_parts}
    new_trials = [t.filter(pc.invert(pc.is_in(t["trial_id"], pa.array(sorted(ended_in_parts),
                                                                        pa.string()))))
                  for t in retiring.values()]
    retiring_ids = set().union(*(_ids(t) for t in retiring.values())) if retiring else set()

    live_epochs = _live_epoch_files(epoch_files, retiring_ids | ended_in_parts)
    if full and not retiring and not live_epochs and len(trial_parts) <= 1 and len(epoch_parts) <= 1:
        return Compaction(trial_rows=0, epoch_rows=0, files_removed=0)  # compact already
    epoch_tables = _read_all(fs, live_epochs, read_epoch_file)
    if full:
        epoch_part_tables = _read_all(fs, epoch_parts, read_epoch_file)
        new_epochs = list(epoch_part_tables.values()) + list(epoch_tables.values())
        new_trials = list(parts.values()) + new_trials
    else:
        # A killed compaction may have written some of these rows into a part already.
        known = _key_set(epoch_keys, retiring_ids | ended_in_parts)
        new_epochs = [_without_keys(t, known) for t in epoch_tables.values()]

    epochs_out = _combine(new_epochs, unique_epoch_rows)
    trials_out = _combine(new_trials, latest_trial_rows)
    generation = _generation()
    if epochs_out is not None and epochs_out.num_rows:
        _write_part(location, epochs_out, schema.EPOCHS_DIR, generation)
    if trials_out is not None and trials_out.num_rows:
        _write_part(location, trials_out, schema.TRIALS_DIR, generation)

    doomed = list(epoch_tables) + list(retiring)
    if full:
        doomed += list(epoch_part_tables) + list(parts)
    for path in doomed:
        _remove(location, path)
    _remove_empty_dirs(location, epochs_dir, {posixpath.dirname(p) for p in epoch_tables})
    return Compaction(trial_rows=trials_out.num_rows if trials_out is not None else 0,
                      epoch_rows=epochs_out.num_rows if epochs_out is not None else 0,
                      files_removed=len(doomed))


def append_part(location: StudyLocation, trials: pa.Table, epochs: pa.Table) -> None:
    """Write rows of ended trials straight into new part files (epochs first), bypassing live
    files: the batch path for rows that are final when they are written (imports, benchmarks).
    Merges the parts when they outnumber MAX_PARTS.

    Raises ValueError if a trial row is not in an ended state.
    """
    if not _all_ended(trials):
        raise ValueError("append_part takes ended trials only: a running trial's row changes")
    generation = _generation()
    _write_part(location, unique_epoch_rows(nan_to_null(epochs)), schema.EPOCHS_DIR, generation)
    _write_part(location, latest_trial_rows(nan_to_null(trials)), schema.TRIALS_DIR, generation)
    folder = location.join(schema.RESULTS_DIR, schema.TRIALS_DIR)
    if sum(map(is_part, list_results_files(location.fs, folder, recursive=False))) > MAX_PARTS:
        compact(location, full=True)


# -- steps (module functions, so that a test can interrupt between any two) -----------------------

def _write_part(location: StudyLocation, table: pa.Table, folder: str, generation: str) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"rvsm_schema_version": str(schema.SCHEMA_VERSION).encode()})
    location.write_table(table, schema.RESULTS_DIR, folder, f"{schema.PART_PREFIX}{generation}.parquet",
                         row_group_size=ROW_GROUP_SIZE)


def _remove(location: StudyLocation, path: str) -> None:
    try:
        location.fs.delete_file(path)
    except FileNotFoundError:
        pass


# -- helpers --------------------------------------------------------------------------------------

def _generation() -> str:
    """Sorts by time of writing (readers let a later part win), unique across processes."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"


def _read_all(fs: pafs.FileSystem, paths: list[str], read) -> dict[str, pa.Table]:
    """The readable files among `paths`; a bad or vanished one is left alone (never deleted), so
    that readers keep naming it."""
    tables = {}
    for path in paths:
        try:
            tables[path] = read(fs, path)
        except (BadFileError, OSError, pa.ArrowException):  # OSError: vanished too
            continue
    return tables


def _ids(table: pa.Table) -> set[str]:
    return set(table["trial_id"].to_pylist())


def _all_ended(table: pa.Table) -> bool:
    return table.num_rows > 0 and pc.all(
        pc.is_in(table["state"], pa.array(schema.TERMINAL_STATES))).as_py()


def _ended_ids(tables) -> set[str]:
    ids: set[str] = set()
    for table in tables:
        ended = table.filter(pc.is_in(table["state"], pa.array(schema.TERMINAL_STATES)))
        ids |= _ids(ended)
    return ids


def _live_epoch_files(paths: list[str], trial_ids: set[str]) -> list[str]:
    """Live epoch files (`epochs/<trial_id>/<epoch>.parquet`) of the given trials."""
    by_trial = defaultdict(list)
    for path in paths:
        if not is_part(path):
            by_trial[posixpath.basename(posixpath.dirname(path))].append(path)
    return [p for t in sorted(trial_ids) for p in by_trial.get(t, [])]


def _epoch_keys(fs: pafs.FileSystem, parts: list[str]) -> pa.Table:
    """The (trial_id, metric_epoch) columns of the epoch parts."""
    tables = []
    for path in parts:
        try:
            tables.append(pq.read_table(path, filesystem=fs, columns=["trial_id", "metric_epoch"]))
        except (OSError, pa.ArrowException):
            continue
    if not tables:
        return pa.table({"trial_id": pa.array([], pa.string()),
                         "metric_epoch": pa.array([], pa.int64())})
    return pa.concat_tables(tables, promote_options="permissive")


def _key_set(keys: pa.Table, trial_ids: set[str]) -> set[tuple[str, int]]:
    """The keys of the given trials, as a set (only those: a study's parts hold many)."""
    keys = keys.filter(pc.is_in(keys["trial_id"], pa.array(sorted(trial_ids), pa.string())))
    return set(zip(keys["trial_id"].to_pylist(), keys["metric_epoch"].to_pylist()))


def _without_keys(table: pa.Table, known: set[tuple[str, int]]) -> pa.Table:
    if not known:
        return table
    keep = [(t, e) not in known for t, e in zip(table["trial_id"].to_pylist(),
                                                table["metric_epoch"].to_pylist())]
    return table.filter(pa.array(keep, pa.bool_()))


def _combine(tables: list[pa.Table], dedupe) -> pa.Table | None:
    tables = [t for t in tables if t is not None]
    if not tables:
        return None
    table = nan_to_null(pa.concat_tables(tables, promote_options="permissive"))
    order = np.repeat(np.arange(len(tables)), [t.num_rows for t in tables])
    table = dedupe(table, order)
    if "trial_number" in table.column_names and dedupe is latest_trial_rows:
        table = table.sort_by([("trial_number", "ascending")])
    return table


def _remove_empty_dirs(location: StudyLocation, root: str, folders: set[str]) -> None:
    """Drop the per-trial epoch folders that compaction emptied."""
    for folder in sorted(folders):
        if folder.rstrip("/") == root.rstrip("/"):
            continue
        selector = pafs.FileSelector(folder, allow_not_found=True)
        if not location.fs.get_file_info(selector):
            try:
                location.fs.delete_dir(folder)
            except (FileNotFoundError, OSError):
                pass
