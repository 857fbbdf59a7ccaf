"""The study file kept in a study folder (``study.toml``): how each parameter was searched.

The plots read it to draw a parameter searched on a log scale on a log axis, whatever values the
sampler happened to draw. Readers of old or copied results may not have it: then None, and the
plots fall back on the values' spread.
"""
from __future__ import annotations

import posixpath

import pyarrow as pa

from analysis.errors import AnalysisError
from analysis.load import open_study

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

STUDY_FILE = "study.toml"
# The search space of a study file without [search.params] (study/spec.py's defaults; a test
# checks that the two agree).
DEFAULT_LOG_SCALES = {"lam": True, "beta": True, "lr": True}


def log_scales(source: str) -> dict[str, bool] | None:
    """{field: searched on a log scale} of the range parameters in ``<source>/study.toml``
    (a list of values has no scale and is left out); None when there is no readable study file."""
    try:
        filesystem, root = open_study(source)
        with filesystem.open_input_stream(posixpath.join(root, STUDY_FILE)) as stream:
            raw = tomllib.loads(stream.read().decode("utf-8"))
    except (AnalysisError, OSError, pa.ArrowException, ValueError):  # TOML and UTF-8 errors included
        return None
    search = raw.get("search") if isinstance(raw.get("search"), dict) else {}
    params = search.get("params")
    if not isinstance(params, dict):
        return dict(DEFAULT_LOG_SCALES)
    return {name: bool(table.get("log", False)) for name, table in params.items()
            if isinstance(table, dict) and "values" not in table}
