"""Read one or several studies' trials tables (local folders or pyarrow filesystem URIs).

A study argument is the folder that holds ``results/`` (see :mod:`analysis.schema`), as a path
or as a URI that ``pyarrow.fs.FileSystem.from_uri`` understands (``s3://bucket/study``,
``file:///data/study``, ``gs://...``). Every trials file is checked on its own, so a bad one is
reported by name; with ``skip_bad`` the others still load.
"""
from __future__ import annotations

import posixpath
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from analysis import schema
from analysis.errors import AnalysisError

REQUIRED_COLUMNS = ("trial_id", "trial_number", "state", "metric_val_acc", "metric_sparsity")
SOURCE_COLUMN = "source"  # added by the loader: the study argument a row came from
_IGNORED_PREFIXES = (".", "_")  # temporary and marker files, as pyarrow.dataset ignores them
_MAX_LISTED = 10


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


class _BadFileError(Exception):
    def __init__(self, bad: BadFile):
        super().__init__(str(bad))
        self.bad = bad


def load_results(sources: Sequence[str], *, skip_bad: bool = False) -> Results:
    """Every trial of every study in ``sources`` as one table; bad files raise unless skipped."""
    frames, bad_files = [], []
    for source in sources:
        filesystem, root = open_study(source)
        tables, bad = _read_folder(filesystem, _trials_dir(filesystem, root, source))
        bad_files += bad
        frame = _concat(tables)
        frame["study"] = frame["study"].fillna(posixpath.basename(root.rstrip("/")) or source)
        frame[SOURCE_COLUMN] = source
        frames.append(frame)
    if bad_files and not skip_bad:
        raise AnalysisError(_describe_bad(bad_files) + "\n(use --skip-bad to load the other files)")
    trials = pd.concat(frames, ignore_index=True) if frames else _concat([])
    return Results(trials=_disambiguate_studies(trials), bad_files=tuple(bad_files))


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


def _read_folder(filesystem: pafs.FileSystem, folder: str) -> tuple[list[pa.Table], list[BadFile]]:
    """Read every trials file of a folder (in parallel: it helps on object stores)."""
    infos = filesystem.get_file_info(pafs.FileSelector(folder))
    paths = sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File and not info.base_name.startswith(_IGNORED_PREFIXES)
    )

    def read(path: str) -> pa.Table | BadFile:
        try:
            return read_trial_file(filesystem, path)
        except _BadFileError as error:
            return error.bad

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(read, paths))
    tables = [outcome for outcome in outcomes if isinstance(outcome, pa.Table)]
    return tables, [outcome for outcome in outcomes if isinstance(outcome, BadFile)]


def read_trial_file(filesystem: pafs.FileSystem, path: str) -> pa.Table:
    """One trials file, checked: a readable Parquet file of a known schema version with trial columns."""
    if not path.endswith(".parquet"):
        raise _BadFileError(BadFile(path, "not a results file (expected <trial_id>.parquet)"))
    try:
        table = pq.read_table(path, filesystem=filesystem)
    except (pa.ArrowException, OSError, ValueError) as error:
        raise _BadFileError(BadFile(path, f"not a readable Parquet file ({error})")) from None
    version = (table.schema.metadata or {}).get(b"rvsm_schema_version")
    if version is None or not version.isdigit():
        reason = "not a results file: no rvsm_schema_version in its Parquet metadata"
        raise _BadFileError(BadFile(path, reason))
    if int(version) > schema.SCHEMA_VERSION:
        reason = (
            f"written with results schema version {int(version)}, newer than the"
            f" {schema.SCHEMA_VERSION} this analysis reads: update analysis"
        )
        raise _BadFileError(BadFile(path, reason))
    missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
    if missing:
        raise _BadFileError(BadFile(path, f"not a trials file: no column {', '.join(missing)}"))
    return table


def _concat(tables: list[pa.Table]) -> pd.DataFrame:
    """One frame; Arrow's concatenation is fast, pandas' copes when column types differ."""
    if not tables:
        return schema.trial_schema({}).empty_table().to_pandas()
    try:
        return pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except (pa.ArrowTypeError, pa.ArrowInvalid):
        return pd.concat([table.to_pandas() for table in tables], ignore_index=True)


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
