"""The results schema: the one contract between the study runner (writer) and analysis (reader).

Layout (version 2) of a study folder's ``results/``:

- ``trials/part-<generation>.parquet``: compacted trial rows, many trials per file;
  ``trials/<trial_id>.parquet``: the live row of a trial not compacted yet (its latest state,
  rewritten at every event).
- ``epochs/part-<generation>.parquet``: compacted epoch rows; ``epochs/<trial_id>/<epoch:05d>.parquet``:
  live epoch rows, one per file.

The writer lands each event in a live file (written whole under a temporary name outside these
folders, then renamed); compaction (``study.compaction``) moves ended trials' rows into part
files, writing each part before deleting what it replaces. A row can therefore sit in a part and
in a live file for a moment (or until the next compaction after a kill): readers keep one row per
trial (``latest_trial_rows``: an ended state beats ``running``, then more epochs, then the later
file) and one per ``(trial_id, metric_epoch)`` (``unique_epoch_rows``). Version 1 (one live file
per trial and per epoch, no parts) reads with the same rules. A metric that was not measured is
null (version 1 wrote NaN for a diverged trial's accuracies).

Columns are fixed per schema version so that pyarrow, pandas, polars and DuckDB read each folder
as one dataset; ``param_*`` columns depend on the study's training fields (every field, searched
or fixed), ``metric_*`` columns are the ones below.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2

RESULTS_DIR = "results"
TRIALS_DIR = "trials"
EPOCHS_DIR = "epochs"
PART_PREFIX = "part-"  # compacted files; a live file is named for its trial id, which never starts so

# Trial states, in the trials table's `state` column.
RUNNING, FINISHED, DIVERGED, ERRORED, STOPPED = "running", "finished", "diverged", "errored", "stopped"
STATES = (RUNNING, FINISHED, DIVERGED, ERRORED, STOPPED)
TERMINAL_STATES = (FINISHED, DIVERGED, ERRORED, STOPPED)  # final: no later row replaces one

# Metrics the trainable reports every epoch (fractions in [0, 1] unless said otherwise).
EPOCH_METRICS: dict[str, pa.DataType] = {
    "epoch": pa.int64(),
    "step": pa.int64(),
    "train_loss": pa.float64(),
    "val_acc": pa.float64(),             # validation accuracy of u (the sparse model)
    "val_acc_dense": pa.float64(),       # validation accuracy of w
    "val_acc_complement": pa.float64(),  # weights that u zeroed only: should be near chance
    "sparsity": pa.float64(),            # zero fraction of the sparsified tensors
    "sparsity_all": pa.float64(),        # zero fraction of all parameters
    "nonzeros": pa.int64(),              # non-zero parameters of u, all tensors
    "params": pa.int64(),                # all parameters
    "compression": pa.float64(),         # params / nonzeros
    "threshold": pa.float64(),           # sqrt(2 lambda / beta)
    "epoch_time_s": pa.float64(),
    "samples_per_s": pa.float64(),
    "diverged": pa.bool_(),
    "layer_sparsity_json": pa.string(),  # {"conv1.weight": 0.93, ...}
    "layer_threshold_json": pa.string(),  # per-tensor thresholds t_l: {"conv1.weight": 0.012, ...}
}
# Reported once, in the last report of a trial that completed.
FINAL_METRICS: dict[str, pa.DataType] = {
    "test_acc": pa.float64(),        # test accuracy of u: reported, never used for selection
    "test_acc_dense": pa.float64(),
}
METRICS: dict[str, pa.DataType] = {**EPOCH_METRICS, **FINAL_METRICS}

TRIAL_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "study": pa.string(),
    "trial_id": pa.string(),           # stable across resumes
    "trial_number": pa.int64(),        # order in which the trial was sampled (0-based)
    "state": pa.string(),
    "error": pa.string(),              # message of an errored trial, else null
    "epochs_completed": pa.int64(),
    "started_at": pa.timestamp("us", tz="UTC"),
    "ended_at": pa.timestamp("us", tz="UTC"),
    "node": pa.string(),               # hostname / Ray node IP the trial ran on
    "device": pa.string(),             # "cpu", "cuda:0", ...
    "searched_json": pa.string(),      # JSON list of the searched field names
    "config_json": pa.string(),        # the full training config
    "code_version": pa.string(),       # package version + git commit when known
    "library_versions_json": pa.string(),
}
EPOCH_COLUMNS: dict[str, pa.DataType] = {
    "schema_version": pa.int32(),
    "study": pa.string(),
    "trial_id": pa.string(),
    "trial_number": pa.int64(),
    "reported_at": pa.timestamp("us", tz="UTC"),
}

PARAM_PREFIX = "param_"
METRIC_PREFIX = "metric_"


def param_type(value: object) -> pa.DataType:
    """Arrow type of a training field's value; lists are stored as JSON strings."""
    if isinstance(value, bool):
        return pa.bool_()
    if isinstance(value, int):
        return pa.int64()
    if isinstance(value, float):
        return pa.float64()
    return pa.string()


def trial_schema(param_types: dict[str, pa.DataType]) -> pa.Schema:
    fields = [pa.field(name, t) for name, t in TRIAL_COLUMNS.items()]
    fields += [pa.field(PARAM_PREFIX + name, t) for name, t in sorted(param_types.items())]
    fields += [pa.field(METRIC_PREFIX + name, t) for name, t in METRICS.items()]
    return pa.schema(fields, metadata={"rvsm_schema_version": str(SCHEMA_VERSION)})


def epoch_schema() -> pa.Schema:
    fields = [pa.field(name, t) for name, t in EPOCH_COLUMNS.items()]
    fields += [pa.field(METRIC_PREFIX + name, t) for name, t in METRICS.items()]
    return pa.schema(fields, metadata={"rvsm_schema_version": str(SCHEMA_VERSION)})
