"""Read one or several studies' trials tables (local folders or pyarrow filesystem URIs).

A study argument is the folder that holds ``results/`` (see :mod:`analysis.schema`), as a path
or as a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/study``,
``file:///data/study``, ``gs://...``). Every results file is checked on its own, so a bad one is
reported by name; with ``skip_bad`` the others still load.

Safe while a study runs and compacts: a file that vanishes between listing and reading was
replaced by a part file written before it was deleted, so the folder is listed again and the new
files read; rows found twice (a part and a live file, or two parts after a killed compaction)
are kept once by the schema's rules (``latest_trial_rows``, ``unique_epoch_rows``).
"""
from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis import schema
from analysis.errors import AnalysisError

REQUIRED_COLUMNS = ("trial_id", "trial_number", "state", "metric_val_acc", "metric_sparsity")
EPOCH_REQUIRED_COLUMNS = ("trial_id", "metric_epoch")
SOURCE_COLUMN = "source"  # added by the loader: the study argument a row came from
_IGNORED_PREFIXES = (".", "_")  # temporary and marker files, as pyarrow.dataset ignores them
_MAX_LISTED = 10
_MAX_LISTINGS = 50  # a folder still changing under the reader after this many listings: give up


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass(frozen=True)
class Results:
    trials: pd.DataFrame  # one row per trial, every state, with `study` and `source` columns
    bad_files: tuple[BadFile, ...]


class BadFileError(Exception):
    """A results file that cannot be used (named, with the reason, in ``bad``)."""

    def __init__(self, bad: BadFile):
        super().__init__(str(bad))
        self.bad = bad


class _Vanished(FileNotFoundError):
    """The file was deleted (by a compaction) after the folder was listed."""


def load_results(sources: Sequence[str], *, skip_bad: bool = False) -> Results:
    """Every trial of every study in ``sources`` as one table; bad files raise unless skipped."""
    frames, bad_files = [], []
    for source in sources:
        filesystem, root = open_study(source)
        table, bad = read_trials(filesystem, _trials_dir(filesystem, root, source))
        bad_files += bad
        frame = _to_pandas(table)
        frame["study"] = frame["study"].fillna(posixpath.basename(root.rstrip("/")) or source)
        frame[SOURCE_COLUMN] = source
        frames.append(frame)
    if bad_files and not skip_bad:
        raise AnalysisError(_describe_bad(bad_files) + "\n(use --skip-bad to load the other files)")
    trials = pd.concat(frames, ignore_index=True) if frames else _to_pandas(None)
    return Results(trials=_disambiguate_studies(trials), bad_files=tuple(bad_files))


def load_epochs(source: str, *, skip_bad: bool = False) -> pa.Table:
    """Every epoch row of one study, once per ``(trial_id, metric_epoch)``, ordered by trial and
    epoch; an empty table when the study has no epochs yet. Bad files raise unless skipped."""
    filesystem, root = open_study(source)
    _trials_dir(filesystem, root, source)  # the same checks and hints as for trials
    folder = posixpath.join(root, schema.RESULTS_DIR, schema.EPOCHS_DIR)
    table, bad = read_epochs(filesystem, folder)
    if bad and not skip_bad:
        raise AnalysisError(_describe_bad(bad) + "\n(use --skip-bad to load the other files)")
    return table


def open_study(source: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and path of a study argument: a URI if it has a scheme, else a local path."""
    if "://" not in source:
        return pafs.LocalFileSystem(), Path(source).expanduser().resolve().as_posix()
    try:
        return pafs.FileSystem.from_uri(source)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise AnalysisError(f"cannot open {source}: {error}") from None


def _trials_dir(filesystem: pafs.FileSystem, root: str, source: str) -> str:
    """``<root>/results/trials``, with a hint when the user pointed at the wrong folder."""
    trials = posixpath.join(root, schema.RESULTS_DIR, schema.TRIALS_DIR)
    if _is_dir(filesystem, trials):
        return trials
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        raise AnalysisError(f"study folder {source} does not exist")
    if not _is_dir(filesystem, root):
        raise AnalysisError(f"{source} is not a folder: pass the study folder (the one holding results/)")
    if _is_dir(filesystem, posixpath.join(root, schema.TRIALS_DIR)):
        raise AnalysisError(f"{source} looks like a results folder: pass the study folder above it")
    raise AnalysisError(
        f"{source} holds no {schema.RESULTS_DIR}/{schema.TRIALS_DIR} folder:"
        " is it a study folder (the one holding results/)?"
    )


def _is_dir(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type == pafs.FileType.Directory


# -- reading a results folder ---------------------------------------------------------------------

def read_trials(filesystem: pafs.FileSystem, folder: str) -> tuple[pa.Table | None, list[BadFile]]:
    """The trials of a ``results/trials`` folder, one row per trial (None when it holds none)."""
    tables, bad = _read_files(filesystem, folder, read_trial_file, recursive=False)
    return _combine(tables, latest_trial_rows), bad


def read_epochs(filesystem: pafs.FileSystem, folder: str) -> tuple[pa.Table, list[BadFile]]:
    """The epochs of a ``results/epochs`` folder, one row per ``(trial_id, metric_epoch)``."""
    tables, bad = _read_files(filesystem, folder, read_epoch_file, recursive=True)
    table = _combine(tables, unique_epoch_rows)
    return (table if table is not None else schema.epoch_schema().empty_table()), bad


def list_results_files(filesystem: pafs.FileSystem, folder: str, *, recursive: bool) -> list[str]:
    """The Parquet files of a results folder in precedence order: part files first (oldest
    generation first), then live files; hidden and ``_`` names are left out."""
    infos = filesystem.get_file_info(pafs.FileSelector(folder, recursive=recursive,
                                                       allow_not_found=True))
    paths = [i.path for i in infos
             if i.type == pafs.FileType.File and not i.base_name.startswith(_IGNORED_PREFIXES)]
    return sorted(paths, key=_precedence)


def is_part(path: str) -> bool:
    return posixpath.basename(path).startswith(schema.PART_PREFIX)


def _precedence(path: str) -> tuple[int, str]:
    return (0 if is_part(path) else 1, path)


def _read_files(filesystem: pafs.FileSystem, folder: str,
                read: Callable[[pafs.FileSystem, str], pa.Table], *,
                recursive: bool) -> tuple[list[tuple[str, pa.Table]], list[BadFile]]:
    """Read every file of a folder (in parallel: it helps on object stores), listing again while
    files vanish under the reader; returns (path, table) pairs in precedence order."""
    found: dict[str, pa.Table | BadFile] = {}

    def attempt(path: str) -> pa.Table | BadFile | None:
        try:
            return read(filesystem, path)
        except BadFileError as error:
            return error.bad
        except _Vanished:
            return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(_MAX_LISTINGS):
            todo = [p for p in list_results_files(filesystem, folder, recursive=recursive)
                    if p not in found]
            outcomes = list(pool.map(attempt, todo))
            found.update((p, o) for p, o in zip(todo, outcomes) if o is not None)
            if all(o is not None for o in outcomes):
                break
        else:
            raise AnalysisError(f"{folder}: files kept vanishing while reading it; try again")
    ordered = sorted(found.items(), key=lambda item: _precedence(item[0]))
    tables = [(p, o) for p, o in ordered if isinstance(o, pa.Table)]
    return tables, [o for _, o in ordered if isinstance(o, BadFile)]


def _read_checked(filesystem: pafs.FileSystem, path: str, required: Sequence[str],
                  kind: str) -> pa.Table:
    if not path.endswith(".parquet"):
        raise BadFileError(BadFile(path, f"not a results file (expected a {kind} .parquet file)"))
    for attempt in (1, 2):
        try:
            # One open file: its size and its bytes come from the same version of a live file
            # that a writer replaces (by rename) while we read; by path, pyarrow may take the
            # size from one version and the bytes from the next.
            with filesystem.open_input_file(path) as source:
                table = pq.read_table(source)
            break
        except (pa.ArrowException, OSError, ValueError) as error:
            if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
                raise _Vanished(path) from None
            if attempt == 2:  # a replaced file reads whole the second time; a corrupt one never
                raise BadFileError(BadFile(path, f"not a readable Parquet file ({error})")) from None
    version = (table.schema.metadata or {}).get(b"rvsm_schema_version")
    if version is None or not version.isdigit():
        reason = "not a results file: no rvsm_schema_version in its Parquet metadata"
        raise BadFileError(BadFile(path, reason))
    if int(version) > schema.SCHEMA_VERSION:
        reason = (
            f"written with results schema version {int(version)}, newer than the"
            f" {schema.SCHEMA_VERSION} this analysis reads: update analysis"
        )
        raise BadFileError(BadFile(path, reason))
    missing = [column for column in required if column not in table.column_names]
    if missing:
        raise BadFileError(BadFile(path, f"not a {kind} file: no column {', '.join(missing)}"))
    return table


def read_trial_file(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    """One trials file (live or part), checked: a readable Parquet file of a known schema version
    with trial columns."""
    return _read_checked(filesystem, path, REQUIRED_COLUMNS, "trials")


def read_epoch_file(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    """One epochs file (live or part), checked like a trials file."""
    return _read_checked(filesystem, path, EPOCH_REQUIRED_COLUMNS, "epochs")


def _combine(tables: list[tuple[str, pa.Table]],
             dedupe: Callable[[pa.Table, np.ndarray], pa.Table]) -> pa.Table | None:
    """One table from files in precedence order, duplicates resolved by `dedupe`."""
    if not tables:
        return None
    order = np.repeat(np.arange(len(tables)), [t.num_rows for _, t in tables])
    try:
        table = pa.concat_tables([t for _, t in tables], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        # Column types that differ between files (hand-made or foreign): let pandas reconcile.
        frame = pd.concat([t.to_pandas() for _, t in tables], ignore_index=True)
        table = pa.Table.from_pandas(frame, preserve_index=False)
    return dedupe(table, order)


# -- one row per key ------------------------------------------------------------------------------

def latest_trial_rows(table: pa.Table, order: np.ndarray | None = None) -> pa.Table:
    """One row per trial: an ended state beats ``running`` (an ended row is final), then more
    epochs completed, then a later file (``order``: the file's precedence, higher is newer)."""
    keys = pd.DataFrame({
        "trial_id": table["trial_id"].to_pandas(),
        "ended": pc.is_in(table["state"], pa.array(schema.TERMINAL_STATES)).to_numpy(
            zero_copy_only=False),
        "epochs": table["epochs_completed"].to_pandas().fillna(-1)
        if "epochs_completed" in table.column_names else 0,
        "order": _order(table, order),
    })
    return _keep_last(table, keys, ["trial_id"], ["ended", "epochs", "order"])


def unique_epoch_rows(table: pa.Table, order: np.ndarray | None = None) -> pa.Table:
    """One row per ``(trial_id, metric_epoch)``: the later file's, ordered by trial and epoch."""
    keys = pd.DataFrame({"trial_id": table["trial_id"].to_pandas(),
                         "epoch": table["metric_epoch"].to_pandas(), "order": _order(table, order)})
    kept = _keep_last(table, keys, ["trial_id", "epoch"], ["order"])
    return kept.sort_by([("trial_id", "ascending"), ("metric_epoch", "ascending")])


def _order(table: pa.Table, order: np.ndarray | None) -> np.ndarray:
    return np.zeros(table.num_rows, dtype=np.int64) if order is None else order


def _keep_last(table: pa.Table, keys: pd.DataFrame, by: list[str], rank: list[str]) -> pa.Table:
    """Per `by` group the row that sorts last by `rank` (ties: the later row); the table
    unchanged when no key repeats (the usual case, and cheap to check)."""
    if not keys.duplicated(by).any():
        return table
    keys = keys.assign(_position=np.arange(len(keys)))
    survivors = (keys.sort_values(by + rank + ["_position"], kind="stable")
                 .drop_duplicates(by, keep="last")["_position"].to_numpy())
    return table.take(np.sort(survivors))


def nan_to_null(table: pa.Table) -> pa.Table:
    """Floating-point ``metric_*`` columns with NaN replaced by null (schema version 1 stored
    NaN for what a diverged trial never measured)."""
    for index, field in enumerate(table.schema):
        if field.name.startswith(schema.METRIC_PREFIX) and pa.types.is_floating(field.type):
            column = table.column(index)
            if pc.any(pc.is_nan(column)).as_py():
                fixed = pc.if_else(pc.is_nan(column), pa.scalar(None, field.type), column)
                table = table.set_column(index, field, fixed)
    return table


def _to_pandas(table: pa.Table | None) -> pd.DataFrame:
    """The trials as a frame ordered by trial number (an empty frame of the schema for None)."""
    if table is None:
        return schema.trial_schema({}).empty_table().to_pandas()
    frame = table.to_pandas()
    if "trial_number" in frame:
        frame = frame.sort_values("trial_number", kind="stable", na_position="last")
    return frame.reset_index(drop=True)


def _disambiguate_studies(trials: pd.DataFrame) -> pd.DataFrame:
    """Two sources with the same study name get the source appended, so legends tell them apart."""
    sources_per_study = trials.groupby("study")[SOURCE_COLUMN].nunique()
    clashing = trials["study"].isin(sources_per_study.index[sources_per_study > 1])
    trials.loc[clashing, "study"] = trials["study"] + " (" + trials[SOURCE_COLUMN] + ")"
    return trials


def _describe_bad(bad_files: list[BadFile]) -> str:
    lines = [f"{len(bad_files)} bad results file(s):"]
    lines += [f"  {bad}" for bad in bad_files[:_MAX_LISTED]]
    if len(bad_files) > _MAX_LISTED:
        lines.append(f"  ... and {len(bad_files) - _MAX_LISTED} more")
    return "\n".join(lines)


def state_counts(trials: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Number of trials per study and state (every known state present, zeros included)."""
    counts: dict[str, dict[str, int]] = {}
    for study, group in trials.groupby("study", sort=False):
        found = group["state"].fillna("unknown").value_counts()
        states = list(schema.STATES) + sorted(set(found.index) - set(schema.STATES))
        counts[str(study)] = {state: int(found.get(state, 0)) for state in states}
    return counts


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that are analysed; the other states are only counted."""
    return trials[trials["state"] == schema.FINISHED].reset_index(drop=True)
