"""Results in Parquet, written as the study runs (schema: analysis.schema).

A trial's row is rewritten whenever it starts, reports or ends; each reported epoch gets its own
file. Rows of a trial are held back until Ray Tune's experiment snapshot knows that trial, so that
after a hard kill every row on disk belongs to a trial that `rvsm resume` will continue: results
never hold a trial that the resumed study forgets (and then replaces, making one too many).
"""
from __future__ import annotations

import json
import math
import threading
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from ray import tune

from analysis import schema
from study.provenance import code_version, library_versions_json
from study.storage import StudyLocation


def now() -> datetime:
    return datetime.now(timezone.utc)


def param_types(config: dict[str, Any]) -> dict[str, pa.DataType]:
    return {k: schema.param_type(v) for k, v in config.items()}


def _param_value(value: Any) -> Any:
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def _metric_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    t = schema.METRICS[name]
    if t == pa.int64():
        return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    if t == pa.float64():
        return float(value)
    if t == pa.bool_():
        return bool(value)
    return str(value)


def ended_state(result: dict) -> str:
    """How a trial that Tune saw complete ended: only a trial that ran to its end reports test
    accuracy, so a completed trial without it was stopped early by the scheduler."""
    if result.get("diverged"):
        return schema.DIVERGED
    return schema.FINISHED if result.get("test_acc") is not None else schema.STOPPED


class ResultsWriter:
    """Builds and writes rows for one study; knows nothing of Ray."""

    def __init__(self, location: StudyLocation, study: str, types: dict[str, pa.DataType],
                 searched: list[str]):
        self.location = location
        self.study = study
        self.trial_schema = schema.trial_schema(types)
        self.epoch_schema = schema.epoch_schema()
        self.searched_json = json.dumps(sorted(searched))

    def trial_row(self, *, trial_id: str, trial_number: int, state: str, config: dict,
                  metrics: dict, started_at: datetime | None, ended_at: datetime | None,
                  node: str | None, device: str | None, error: str | None = None) -> dict:
        row = {
            "schema_version": schema.SCHEMA_VERSION, "study": self.study, "trial_id": trial_id,
            "trial_number": trial_number, "state": state, "error": error,
            "epochs_completed": metrics.get("epoch", 0), "started_at": started_at,
            "ended_at": ended_at, "node": node, "device": device,
            "searched_json": self.searched_json, "config_json": json.dumps(config, sort_keys=True),
            "code_version": code_version(), "library_versions_json": library_versions_json(),
        }
        for name in self.trial_schema.names:
            if name.startswith(schema.PARAM_PREFIX):
                row[name] = _param_value(config.get(name[len(schema.PARAM_PREFIX):]))
        for name in schema.METRICS:
            row[schema.METRIC_PREFIX + name] = _metric_value(name, metrics.get(name))
        return row

    def epoch_row(self, *, trial_id: str, trial_number: int, metrics: dict) -> dict:
        row = {"schema_version": schema.SCHEMA_VERSION, "study": self.study, "trial_id": trial_id,
               "trial_number": trial_number, "reported_at": now()}
        for name in schema.METRICS:
            row[schema.METRIC_PREFIX + name] = _metric_value(name, metrics.get(name))
        return row

    def write_trial(self, row: dict) -> None:
        table = pa.Table.from_pylist([row], schema=self.trial_schema)
        self.location.write_table(table, schema.RESULTS_DIR, schema.TRIALS_DIR,
                                  f"{row['trial_id']}.parquet")

    def write_epoch(self, row: dict) -> None:
        table = pa.Table.from_pylist([row], schema=self.epoch_schema)
        epoch = row[schema.METRIC_PREFIX + "epoch"] or 0
        self.location.write_table(table, schema.RESULTS_DIR, schema.EPOCHS_DIR, row["trial_id"],
                                  f"{epoch:05d}.parquet")


class ResultsCallback(tune.Callback):
    """Ray Tune callback that lands every trial event in Parquet (see module docstring)."""

    def __init__(self, writer: ResultsWriter, trial_offset: int):
        self.writer = writer
        self.trial_offset = trial_offset
        self._started: dict[str, str] = {}  # trial id -> ISO start time
        self._snapshotted: set[str] = set()  # in a snapshot that has had time to sync
        self._in_last_snapshot: set[str] = set()
        self._pending: dict[str, list] = {}
        self._lock = threading.Lock()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lock"] = None
        state["_pending"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- Ray Tune hooks ------------------------------------------------------------------------
    def on_trial_start(self, iteration, trials, trial, **info):
        self._started.setdefault(trial.trial_id, now().isoformat())
        self._emit(trial, [("trial", self._row(trial, schema.RUNNING, trial.last_result or {}))])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        number = self.number(trial)
        self._emit(trial, [
            ("epoch", self.writer.epoch_row(trial_id=trial.trial_id, trial_number=number,
                                            metrics=result)),
            ("trial", self._row(trial, schema.RUNNING, result)),
        ])

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        self._emit(trial, [("trial", self._row(trial, ended_state(result), result, ended=True))])

    def on_trial_error(self, iteration, trials, trial, **info):
        self._emit(trial, [("trial", self._row(trial, schema.ERRORED, trial.last_result or {},
                                                ended=True, error=_error_message(trial)))])

    def on_experiment_end(self, trials, **info):
        self._flush(all_trials=True)

    # Called by Tune right after it wrote its experiment snapshot to a staging folder; the copy to
    # the storage follows in the background. Rows of trials that were already in the previous
    # snapshot (synced by now) may land; those first seen in this one wait for the next.
    def get_state(self) -> dict:
        with self._lock:
            ready = self._in_last_snapshot - self._snapshotted
            self._snapshotted |= ready
            self._in_last_snapshot = set(self._started) | set(self._pending)
        self._flush(trial_ids=[t for t in ready if t in self._pending])
        return {"started": dict(self._started)}

    def set_state(self, state: dict) -> None:
        self._started.update(state.get("started", {}))
        self._snapshotted.update(self._started)

    # -- helpers -------------------------------------------------------------------------------
    def number(self, trial) -> int:
        """Ray's experiment tag starts with a per-experiment counter (from 1); offset it by the
        trials of the study's earlier runs."""
        return self.trial_offset + int(trial.experiment_tag.split("_", 1)[0]) - 1

    def _row(self, trial, state: str, result: dict, *, ended: bool = False,
             error: str | None = None) -> dict:
        started = self._started.get(trial.trial_id)
        return self.writer.trial_row(
            trial_id=trial.trial_id, trial_number=self.number(trial), state=state,
            config=dict(trial.config), metrics=result,
            started_at=datetime.fromisoformat(started) if started else None,
            ended_at=now() if ended else None,
            node=result.get("node") or result.get("hostname"), device=result.get("device"),
            error=error)

    def _emit(self, trial, rows: list) -> None:
        with self._lock:
            self._pending.setdefault(trial.trial_id, []).extend(rows)
            if trial.trial_id not in self._snapshotted:
                return
        self._flush(trial_ids=[trial.trial_id])

    def _flush(self, *, trial_ids=None, all_trials: bool = False) -> None:
        with self._lock:
            if all_trials:
                self._snapshotted |= set(self._pending) | set(self._started)
                trial_ids = list(self._pending)
            batches = [(t, self._pending.pop(t, [])) for t in trial_ids or []]
        for _, rows in batches:
            latest_trial_row = None
            for kind, row in rows:
                if kind == "epoch":
                    self.writer.write_epoch(row)
                else:
                    latest_trial_row = row
            if latest_trial_row is not None:
                self.writer.write_trial(latest_trial_row)


def _error_message(trial) -> str:
    """The last line of the trial's traceback: what a person needs to see first."""
    try:
        with open(trial.error_file, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1][:2000] if lines else "the trial raised an error (see Ray's logs)"
