"""Published or earlier results to draw beside a front, read from a small TOML or CSV file.

Each entry has a ``name``, an ``accuracy`` (or ``error``) and a ``sparsity`` (or
``compression`` = parameters / non-zeros, so sparsity = 1 - 1/compression), all as fractions,
plus an optional ``note``. TOML holds them as an array of tables ``[[reference]]``; CSV has one
row per entry with those column names. Files shipped in ``analysis/references/`` can be named
without their path: ``--references mnist_lenet5``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import NamedTuple

from analysis.errors import AnalysisError

SHIPPED_DIR = Path(__file__).with_name("references")


class Reference(NamedTuple):
    name: str
    accuracy: float  # fraction in [0, 1]
    sparsity: float  # fraction in [0, 1)
    note: str = ""


def shipped_references() -> dict[str, Path]:
    """Reference files that come with analysis, by name (file name without extension)."""
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob("*.toml"))}


def read_references(spec: str) -> tuple[Reference, ...]:
    """Read a reference file given by path or by the name of a shipped file."""
    path = shipped_references().get(spec, Path(spec))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        shipped = ", ".join(shipped_references())
        raise AnalysisError(f"cannot read references {spec}: {error.strerror} (shipped: {shipped})") from None
    if path.suffix.lower() == ".toml":
        entries = _toml_entries(text, path)
    elif path.suffix.lower() == ".csv":
        entries = list(csv.DictReader(io.StringIO(text)))
    else:
        raise AnalysisError(f"references {path}: expected a .toml or .csv file")
    return tuple(_reference(entry, f"{path} entry {i + 1}") for i, entry in enumerate(entries))


def _toml_entries(text: str, path: Path) -> list[dict]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        entries = tomllib.loads(text).get("reference", [])
    except tomllib.TOMLDecodeError as error:
        raise AnalysisError(f"references {path}: {error}") from None
    if not isinstance(entries, list):
        raise AnalysisError(f"references {path}: expected [[reference]] tables")
    return entries


def _reference(entry: dict, where: str) -> Reference:
    """Validate one entry; error and compression are converted to accuracy and sparsity."""
    name = str(entry.get("name") or "").strip()
    if not name:
        raise AnalysisError(f"{where}: no name")
    accuracy = _number(entry, "accuracy", where)
    error = _number(entry, "error", where)
    sparsity = _number(entry, "sparsity", where)
    compression = _number(entry, "compression", where)
    if (accuracy is None) == (error is None) or (sparsity is None) == (compression is None):
        raise AnalysisError(f"{where} ({name}): give accuracy or error, and sparsity or compression")
    accuracy = 1.0 - error if accuracy is None else accuracy
    if sparsity is None:
        if compression < 1:
            raise AnalysisError(f"{where} ({name}): compression {compression} is below 1")
        sparsity = 1.0 - 1.0 / compression
    if not (0 <= accuracy <= 1 and 0 <= sparsity < 1):
        raise AnalysisError(
            f"{where} ({name}): accuracy {accuracy} and sparsity {sparsity} must be fractions in [0, 1]"
        )
    return Reference(name, accuracy, sparsity, str(entry.get("note") or ""))


def _number(entry: dict, key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise AnalysisError(f"{where}: {key} = {value!r} is not a number") from None
    if math.isnan(number):
        raise AnalysisError(f"{where}: {key} is NaN")
    return number
