"""Write the flat trials table (every state, every study) as CSV or Parquet for other tools."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis import schema
from analysis.errors import AnalysisError
from analysis.objectives import Objective
from analysis.summary import RANK_COLUMN, rank_trials

FORMATS = ("csv", "parquet")


def with_ranks(trials: pd.DataFrame, objectives: Sequence[Objective]) -> pd.DataFrame:
    """Add ``pareto_rank`` per study: 0 = front, -1 = a NaN objective, empty if not finished."""
    ranks = pd.Series(pd.NA, index=trials.index, dtype="Int64")
    done = trials["state"] == schema.FINISHED
    for _, group in trials[done].groupby("study", sort=False):
        ranks.loc[group.index] = rank_trials(group, objectives).astype("Int64")
    return trials.assign(**{RANK_COLUMN: ranks})


def export_trials(trials: pd.DataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``trials`` to ``path``; the format is ``fmt`` or the file extension."""
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".")).lower()
    if fmt not in FORMATS:
        raise AnalysisError(f"export format {fmt!r}: expected one of {', '.join(FORMATS)} (--format)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        trials.to_csv(path, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(trials, preserve_index=False), path)
    return path
