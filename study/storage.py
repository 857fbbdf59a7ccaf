"""Where a study lives: a local folder or a URI (s3://, gs://, file://) through pyarrow.fs.

Layout of a study folder `<storage>/<name>/`:
    study.toml            the study file, as given (resume and extend read it back)
    results/trials/       trial rows: compacted part files and one live file per recent trial
    results/epochs/       epoch rows: compacted part files and live files per recent trial
                          (layout and compaction: analysis.schema, study.compaction)
    .tmp/                 temporary files of atomic writes (never inside a dataset folder)
    .corrupt/             unreadable results files that `rvsm resume` set aside (study.status)
    runs/<k>/             Ray Tune experiments: run 0 is the first launch, each extend adds one
    optuna/optuna.db      the Optuna study (SQLite); for a remote storage, a local working copy
                          lives under ~/.cache/rvsm-study and is uploaded after each trial
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

STUDY_FILE = "study.toml"
RUNS_DIR = "runs"
OPTUNA_DIR = "optuna"
TMP_DIR = ".tmp"  # hidden, and outside results/: Parquet readers never meet a half-written file


@dataclass(frozen=True)
class StudyLocation:
    """A study folder on some filesystem; `uri` is what Ray Tune's storage_path gets."""
    fs: pafs.FileSystem
    path: str   # the folder, in `fs`'s own path syntax
    uri: str    # the same folder as a local absolute path or a URI
    is_local: bool

    def join(self, *parts: str) -> str:
        return "/".join([self.path.rstrip("/"), *parts])

    def uri_join(self, *parts: str) -> str:
        return "/".join([self.uri.rstrip("/"), *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.join(*parts)).type != pafs.FileType.NotFound

    def read_text(self, *parts: str) -> str:
        with self.fs.open_input_stream(self.join(*parts)) as f:
            return f.read().decode("utf-8")

    def write_text(self, text: str, *parts: str) -> None:
        self.write_bytes(text.encode("utf-8"), *parts)

    def write_bytes(self, data: bytes, *parts: str) -> None:
        final = self.join(*parts)
        self._atomically(final, lambda tmp: _put(self.fs, tmp, data))

    def write_table(self, table: pa.Table, *parts: str, **options) -> None:
        """`options` go to pyarrow.parquet.write_table (row_group_size, compression ...)."""
        final = self.join(*parts)
        self._atomically(final, lambda tmp: pq.write_table(table, tmp, filesystem=self.fs,
                                                           **options))

    def delete(self, *parts: str) -> None:
        target = self.join(*parts)
        info = self.fs.get_file_info(target)
        if info.type == pafs.FileType.File:
            self.fs.delete_file(target)
        elif info.type == pafs.FileType.Directory:
            self.fs.delete_dir(target)

    def list_files(self, *parts: str, suffix: str = ".parquet") -> list[str]:
        selector = pafs.FileSelector(self.join(*parts), recursive=True, allow_not_found=True)
        return sorted(i.path for i in self.fs.get_file_info(selector)
                      if i.type == pafs.FileType.File and i.path.endswith(suffix)
                      and not os.path.basename(i.path).startswith((".", "_")))

    def local_cache(self) -> Path:
        """A local folder for what must be on a local disk (SQLite): the study folder itself
        when local, else a per-study cache folder."""
        if self.is_local:
            return Path(self.path)
        root = Path(os.environ.get("RVSM_CACHE", Path.home() / ".cache" / "rvsm-study"))
        return root / "studies" / self.uri.replace("://", "/").replace("/", "_")

    def _atomically(self, final: str, write) -> None:
        """Write to a temporary name in the study's `.tmp/` folder, then rename: readers never
        see half a file, and no temporary file ever sits in a folder that Parquet readers scan
        (polars and DuckDB refuse a folder holding one). On object stores a PUT is already
        atomic and a rename is a copy, so write in place."""
        if not self.is_local:
            write(final)
            return
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp_dir = self.join(TMP_DIR)
        self.fs.create_dir(tmp_dir, recursive=True)
        tmp = f"{tmp_dir}/{os.path.basename(final)}.{uuid.uuid4().hex}.tmp"
        try:
            write(tmp)
            self.fs.move(tmp, final)
        except BaseException:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
            raise

    def remove_stale_temporaries(self, older_than_s: float = 600.0) -> int:
        """Delete temporary files a killed writer left behind; returns how many."""
        selector = pafs.FileSelector(self.join(TMP_DIR), allow_not_found=True)
        cutoff = time.time() - older_than_s
        stale = [i.path for i in self.fs.get_file_info(selector)
                 if i.type == pafs.FileType.File and i.mtime is not None
                 and i.mtime.timestamp() < cutoff]
        for path in stale:
            self.fs.delete_file(path)
        return len(stale)


def _put(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as f:
        f.write(data)


def locate(storage: str, name: str | None = None) -> StudyLocation:
    """The study folder `<storage>/<name>` (or `storage` itself when name is None)."""
    if "://" in storage:
        fs, path = pafs.FileSystem.from_uri(storage)
        uri = storage.rstrip("/")
        if name:
            path, uri = f"{path.rstrip('/')}/{name}", f"{uri}/{name}"
        local = isinstance(fs, pafs.LocalFileSystem)
        return StudyLocation(fs=fs, path=path, uri=path if local else uri, is_local=local)
    folder = Path(storage).expanduser().resolve()
    if name:
        folder = folder / name
    return StudyLocation(fs=pafs.LocalFileSystem(), path=folder.as_posix(), uri=folder.as_posix(),
                         is_local=True)


# -- checking a storage before anything starts ------------------------------------------------

PROBE_TIMEOUT_S = 20.0  # an object store that has not answered by then is not reachable
PROBE_TIMEOUT_VAR = "RVSM_STORAGE_TIMEOUT_S"  # overrides it (a slow object store)
_abandoned_probes: list[threading.Thread] = []  # timed out, still waiting on the network


def probe_abandoned() -> bool:
    """Whether a storage probe timed out and still runs: its client (AWS SDK) would hold the
    process at exit for minutes, so the command line exits at once instead (`os._exit`)."""
    return any(thread.is_alive() for thread in _abandoned_probes)


class StorageError(ValueError):
    """The study's storage cannot be used; the message names it and says why, in one line."""


def check_storage(storage: str, name: str | None = None, *, writable: bool = True,
                  timeout_s: float | None = None) -> StudyLocation:
    """The study folder `<storage>/<name>`, proven usable before Ray starts: the URI is parsed
    and, if `writable`, a probe file is created in the folder and removed again (with any folder
    made for it, so nothing is left behind). Raises StorageError: an unknown URI scheme, a bucket
    that is missing or unreachable, a path through a regular file, a name longer than the file
    system allows, no permission, or no answer within `timeout_s` seconds (default:
    $RVSM_STORAGE_TIMEOUT_S, else 20; NaN or a negative number is treated as 0)."""
    if timeout_s is None:
        try:
            timeout_s = float(os.environ.get(PROBE_TIMEOUT_VAR, PROBE_TIMEOUT_S))
        except ValueError:
            raise StorageError(f"{PROBE_TIMEOUT_VAR} must be a number of seconds, got "
                               f"{os.environ[PROBE_TIMEOUT_VAR]!r}") from None
    timeout_s = timeout_s if timeout_s > 0 else 0.0  # NaN too
    scheme, sep, rest = storage.partition("://")
    if sep and not rest.strip("/"):
        raise StorageError(f"storage {storage!r} names no location; give a bucket or a folder, "
                           f"e.g. '{scheme}://bucket/studies'")
    outcome: dict = {}

    def work() -> None:
        try:
            location = locate(storage, name)
            if writable:
                _probe(location)
            outcome["location"] = location
        except BaseException as exc:  # handed to the caller's thread
            outcome["error"] = exc

    # In a thread: a client that retries an unreachable endpoint must not hang the command.
    thread = threading.Thread(target=work, name="rvsm-storage-probe", daemon=True)
    thread.start()
    thread.join(timeout_s)
    where = storage if name is None else storage + ("" if storage.endswith("/") else "/") + name
    if thread.is_alive():
        _abandoned_probes.append(thread)
        raise StorageError(f"storage {_short(where)} did not answer within {timeout_s:g} s; check "
                           f"the URI, the network and the credentials")
    error = outcome.get("error")
    if isinstance(error, (pa.ArrowException, OSError, ValueError)):
        raise StorageError(f"cannot use storage {_short(where)}: {_reason(error)}") from None
    if error is not None:
        raise error
    return outcome["location"]


def _probe(location: StudyLocation) -> None:
    probe = f".rvsm-probe-{uuid.uuid4().hex}"
    if not location.is_local:
        _make_and_remove(location.local_cache(), lambda folder: None)  # the SQLite working copy
        path = location.join(probe)
        _put(location.fs, path, b"")
        location.fs.delete_file(path)
        return
    _make_and_remove(Path(location.path), lambda folder: _touch_and_remove(folder / probe))


def _touch_and_remove(path: Path) -> None:
    path.write_bytes(b"")
    path.unlink()


def _make_and_remove(folder: Path, action) -> None:
    """Create `folder` (and missing parents), run `action(folder)`, then remove what was made."""
    missing = []
    existing = folder
    while not existing.exists():
        missing.append(existing)
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(20, "Not a directory (a regular file is in the way)", str(existing))
    made: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            made.append(path)
        action(folder)
    finally:
        for path in reversed(made):
            try:
                path.rmdir()
            except OSError:
                pass


def _reason(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror + (f": {_short(str(error.filename))}" if error.filename else "")
    return _short(" ".join(str(error).split()), 300)


def _short(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else f"{text[:limit // 2]}...{text[-limit // 2:]}"
