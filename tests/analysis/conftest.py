"""Fabricated study folders: tiny trials Parquet files written with analysis.schema.trial_schema."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis import schema

DEFAULT_PARAMS = {"lam": 1e-4, "beta": 10.0, "lr": 1e-3, "dataset": "mnist", "model": "lenet5", "rule": "rvsm"}


def write_study(root: Path, name: str, rows: list[dict], *, searched=("lam", "beta", "lr")) -> Path:
    """Write ``<root>/<name>/results/trials/<trial_id>.parquet``, one file per row.

    A row gives any of the trial columns, params (bare field names: DEFAULT_PARAMS' and the
    searched ones) and metrics (bare names);
    the rest takes defaults: finished, mnist, chance-level nothing.
    """
    folder = root / name / schema.RESULTS_DIR / schema.TRIALS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    extra = {k: v for row in rows for k, v in row.items() if k in searched and k not in DEFAULT_PARAMS}
    param_types = {k: schema.param_type(v) for k, v in {**DEFAULT_PARAMS, **extra}.items()}
    table_schema = schema.trial_schema(param_types)
    for number, row in enumerate(rows):
        record = {
            "schema_version": schema.SCHEMA_VERSION, "study": name, "trial_id": f"t{number:04d}",
            "trial_number": number, "state": schema.FINISHED, "epochs_completed": 3,
            "searched_json": json.dumps(list(searched)),
        }
        for key, value in {**DEFAULT_PARAMS, **row}.items():
            if key in schema.TRIAL_COLUMNS:
                record[key] = value
            elif key in param_types:
                record[schema.PARAM_PREFIX + key] = value
            else:
                record[schema.METRIC_PREFIX + key] = value
        lam, beta = record["param_lam"], record["param_beta"]
        record.setdefault("metric_threshold", float(np.sqrt(2 * lam / beta)))
        table = pa.Table.from_pylist([record], schema=table_schema)
        pq.write_table(table, folder / f"{record['trial_id']}.parquet")
    return root / name


def realistic_rows(n: int, seed: int = 0) -> list[dict]:
    """Trials that look like an RVSM study: a larger threshold prunes more and costs accuracy."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        lam, beta, lr = 10 ** rng.uniform(-7, -2), 10 ** rng.uniform(0, 2), 10 ** rng.uniform(-4, -2)
        threshold = np.sqrt(2 * lam / beta)
        sparsity = float(np.clip(1 - np.exp(-(threshold / 2e-3) ** 0.8), 0, 0.9995))
        loss = 0.008 + 0.02 * max(0.0, sparsity - 0.9) ** 2 * 100 + rng.gamma(2, 0.002)
        val_acc = float(np.clip(1 - loss - 0.5 * max(0.0, sparsity - 0.995) * 100, 0.1, 1))
        params = 61706
        nonzeros = max(1, int(round(params * (1 - sparsity))))
        rows.append({
            "lam": lam, "beta": beta, "lr": lr, "val_acc": val_acc,
            "test_acc": float(np.clip(val_acc - rng.normal(0.001, 0.002), 0, 1)),
            "sparsity": sparsity, "sparsity_all": sparsity * 0.98, "nonzeros": nonzeros,
            "params": params, "compression": params / nonzeros,
        })
    rows.append({"lam": 0.0, "val_acc": 0.9915, "test_acc": 0.991, "sparsity": 0.0,
                 "sparsity_all": 0.0, "nonzeros": 61706, "params": 61706, "compression": 1.0})
    return rows


@pytest.fixture
def make_study(tmp_path):
    """``make_study(name, rows, root=None, searched=...)``: a study folder under tmp_path (or root)."""
    def make(name: str, rows: list[dict], *, root: Path | None = None, **kwargs) -> Path:
        return write_study(root or tmp_path, name, rows, **kwargs)
    return make


@pytest.fixture
def rvsm_rows():
    """``rvsm_rows(n, seed)``: rows of a plausible RVSM study plus one lambda = 0 trial."""
    return realistic_rows
