"""Where a study lives: a local folder or a URI (s3://, gs://, file://) through pyarrow.fs.

Layout of a study folder `<storage>/<name>/`:
    study.toml            the study file, as given (resume and extend read it back)
    results/trials/       one Parquet file per trial (analysis.schema)
    results/epochs/       one Parquet file per trial and epoch
    runs/<k>/             Ray Tune experiments: run 0 is the first launch, each extend adds one
    optuna/optuna.db      the Optuna study (SQLite); for a remote storage, a local working copy
                          lives under ~/.cache/rvsm-study and is uploaded after each trial
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

STUDY_FILE = "study.toml"
RUNS_DIR = "runs"
OPTUNA_DIR = "optuna"


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

    def write_table(self, table: pa.Table, *parts: str) -> None:
        final = self.join(*parts)
        self._atomically(final, lambda tmp: pq.write_table(table, tmp, filesystem=self.fs))

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
        """Write to a hidden temporary name, then rename: readers never see half a file. On
        object stores a PUT is already atomic and a rename is a copy, so write in place."""
        parent = final.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.is_local:
            write(final)
            return
        tmp = f"{parent}/.{os.path.basename(final)}.{uuid.uuid4().hex}.tmp"
        try:
            write(tmp)
            self.fs.move(tmp, final)
        except BaseException:
            if self.fs.get_file_info(tmp).type != pafs.FileType.NotFound:
                self.fs.delete_file(tmp)
            raise


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
