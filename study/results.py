"""Results in Parquet, written as the study runs (schema: analysis.schema).

A trial's row is rewritten whenever it starts, reports or ends; each reported epoch gets its own
file; ended trials' rows are then compacted into a few part files (study.compaction). Rows of a trial are held back until Ray Tune's experiment snapshot knows that trial, so that
after a hard kill every row on disk belongs to a trial that `rvsm resume` will continue: results
never hold a trial that the resumed study forgets (and then replaces, making one too many).
"""
from __future__ import annotations

import json
import logging
import math
import threading
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from ray import tune

from analysis import schema
from study import compaction, search
from study.provenance import code_version, library_versions_json
from study.storage import StudyLocation
from trainables.thresholds import recorded_params


def now() -> datetime:
    return datetime.now(timezone.utc)


def param_types(config: dict[str, Any]) -> dict[str, pa.DataType]:
    return {k: schema.param_type(v) for k, v in config.items()}


def _param_value(value: Any) -> Any:
    if isinstance(value, dict):  # a table of the training config (threshold_multipliers)
        return json.dumps(value, sort_keys=True)
    return json.dumps(list(value)) if isinstance(value, (list, tuple)) else value


def _metric_value(name: str, value: Any) -> Any:
    if value is None:
        return None
    t = schema.METRICS[name]
    if t == pa.int64():
        return int(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    if t == pa.float64():
        value = float(value)
        return None if math.isnan(value) else value  # not measured (a diverged trial): null
    if t == pa.bool_():
        return bool(value)
    return str(value)


def ran_to_end(result: dict) -> bool:
    """Whether `result` is a trial's last epoch: only that one reports test accuracy."""
    return result.get("test_acc") is not None


def ended_state(result: dict) -> str:
    """How a trial that Tune saw complete ended: only a trial that ran to its end reports test
    accuracy, so a completed trial without it was stopped early by the scheduler."""
    if result.get("trial_error"):  # trainables.tune_trainable.TRIAL_ERROR: could not run
        return schema.ERRORED
    if result.get("diverged"):
        return schema.DIVERGED
    return schema.FINISHED if ran_to_end(result) else schema.STOPPED


class ResultsWriter:
    """Builds and writes rows for one study; knows nothing of Ray.

    Each event lands in a live file (one atomic write); after every `compact_every` ended
    trials the ended trials' rows are compacted into part files (study.compaction), and
    launch compacts fully at each run's start and end. Callers write a trial's epoch rows
    before its ended row: compaction takes a trial's epochs once its ended row is on disk.
    """

    def __init__(self, location: StudyLocation, study: str, types: dict[str, pa.DataType],
                 searched: list[str], *, compact_every: int = compaction.COMPACT_EVERY):
        self.location = location
        self.study = study
        self.trial_schema = schema.trial_schema(types)
        self.epoch_schema = schema.epoch_schema()
        self.searched_json = json.dumps(sorted(searched))
        self.compact_every = compact_every
        self._ended_since_compaction = 0
        self._lock = threading.RLock()  # writes and compaction of this process, one at a time

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_lock"] = None
        return state

    def __setstate__(self, state):
        # A study pickled by Tune before compaction existed has neither field.
        self.compact_every = compaction.COMPACT_EVERY
        self._ended_since_compaction = 0
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def trial_row(self, *, trial_id: str, trial_number: int, state: str, config: dict,
                  metrics: dict, started_at: datetime | None, ended_at: datetime | None,
                  node: str | None, device: str | None, error: str | None = None) -> dict:
        config = recorded_params(config)  # a searched threshold: lam derived, as the trial trained
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
        """Write a trial's latest row (replacing its live file); compacts every
        `compact_every` ended trials."""
        table = pa.Table.from_pylist([row], schema=self.trial_schema)
        with self._lock:
            self.location.write_table(table, schema.RESULTS_DIR, schema.TRIALS_DIR,
                                      f"{row['trial_id']}.parquet")
            if row["state"] in schema.TERMINAL_STATES:
                self._ended_since_compaction += 1
                if self._ended_since_compaction >= self.compact_every:
                    self._compact_quietly()

    def write_epoch(self, row: dict) -> None:
        table = pa.Table.from_pylist([row], schema=self.epoch_schema)
        epoch = row[schema.METRIC_PREFIX + "epoch"] or 0
        with self._lock:
            self.location.write_table(table, schema.RESULTS_DIR, schema.EPOCHS_DIR,
                                      row["trial_id"], f"{epoch:05d}.parquet")

    def write_ended(self, trial_rows: list[dict], epoch_rows: list[dict]) -> None:
        """Write rows of ended trials in one go, straight into part files (no live files): the
        batch path, for rows that are final when written. Raises ValueError for a running row."""
        trials = pa.Table.from_pylist(trial_rows, schema=self.trial_schema)
        epochs = pa.Table.from_pylist(epoch_rows, schema=self.epoch_schema)
        with self._lock:
            compaction.append_part(self.location, trials, epochs)

    def compact(self, *, full: bool = False) -> compaction.Compaction:
        """Move ended trials' rows from live files into part files (see study.compaction)."""
        with self._lock:
            self._ended_since_compaction = 0
            return compaction.compact(self.location, full=full)

    def _compact_quietly(self) -> None:
        """A periodic compaction that fails (a storage hiccup) must not stop the study: every
        row stays readable, and the next compaction retries."""
        try:
            self.compact()
        except (OSError, pa.ArrowException) as error:
            logging.getLogger(__name__).warning("results compaction failed: %s", error)


class ResultsCallback(tune.Callback):
    """Ray Tune callback that lands every trial event in Parquet (see module docstring).

    A trial's ended row (finished, diverged, errored, stopped) is final: once the results hold
    it, no later event rewrites the trial (a trial that Tune restores from a snapshot older than
    the results is not run again either: see study.scheduler.StudyScheduler).
    """

    def __init__(self, writer: ResultsWriter, trial_offset: int):
        self.writer = writer
        self.trial_offset = trial_offset
        self._started: dict[str, str] = {}  # trial id -> ISO start time
        self._ended: set[str] = set()  # ended in the results, or about to be
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
        self._ended = state.get("_ended", set())
        self._lock = threading.Lock()

    # -- Ray Tune hooks ------------------------------------------------------------------------
    def setup(self, **info):
        """At every (re)start, before any trial runs: what the results hold as ended stays so."""
        self._ended |= set(recorded_ends(self.writer.location))

    def on_trial_start(self, iteration, trials, trial, **info):
        if trial.trial_id in self._ended or trial.trial_id in self._started:
            # ended: final; started by an earlier driver: its row says more than Tune's older
            # snapshot (the next report brings it up to date)
            return
        self._started[trial.trial_id] = now().isoformat()
        self._emit(trial, [("trial", self._row(trial, schema.RUNNING, {}))])

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.trial_id in self._ended:
            return
        self._started.setdefault(trial.trial_id, now().isoformat())
        number = self.number(trial)
        self._emit(trial, [
            ("epoch", self.writer.epoch_row(trial_id=trial.trial_id, trial_number=number,
                                            metrics=result)),
            ("trial", self._row(trial, schema.RUNNING, result)),
        ])

    def on_trial_complete(self, iteration, trials, trial, **info):
        if trial.trial_id in self._ended:
            return
        self._ended.add(trial.trial_id)
        result = trial.last_result or {}
        self._emit(trial, [("trial", self._row(trial, ended_state(result), result, ended=True,
                                                error=result.get("trial_error")))])

    def on_trial_error(self, iteration, trials, trial, **info):
        if trial.trial_id in self._ended:
            return
        self._ended.add(trial.trial_id)
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
        """The trial's Optuna number (from the searcher); without one, Ray's experiment tag,
        which starts with a per-experiment counter (from 1), offset by the earlier runs' trials."""
        number = search.trial_number(trial.trial_id)
        if number is not None:
            return number
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


def recorded_trials(location: StudyLocation) -> dict[str, dict]:
    """Every trial the results hold, by trial id: its state, epochs_completed and metric_*
    values. A results file that cannot be read counts as missing (its trial runs on and
    rewrites it)."""
    from analysis.load import load_results
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        return {}
    trials = load_results([location.uri], skip_bad=True).trials
    columns = ["state", "epochs_completed"] + [c for c in trials.columns
                                               if c.startswith(schema.METRIC_PREFIX)]
    return {row["trial_id"]: {c: row[c] for c in columns}
            for row in trials[["trial_id", *columns]].to_dict("records")}


def recorded_epochs(location: StudyLocation, trial_ids: set[str]) -> dict[str, dict[int, dict]]:
    """The epochs the results hold for `trial_ids`: trial id -> epoch -> {metric: value} (nulls
    left out). Unreadable files are skipped, as in `recorded_trials`."""
    from analysis.load import load_epochs
    table = load_epochs(location.uri, skip_bad=True)
    if table.num_rows == 0:
        return {}
    frame = table.to_pandas()
    frame = frame[frame["trial_id"].isin(trial_ids)]
    metrics = [c for c in frame.columns if c.startswith(schema.METRIC_PREFIX)]
    out: dict[str, dict[int, dict]] = {}
    for row in frame[["trial_id", *metrics]].to_dict("records"):
        values = {c[len(schema.METRIC_PREFIX):]: v for c, v in row.items()
                  if c.startswith(schema.METRIC_PREFIX) and v is not None and v == v}
        if "epoch" in values:
            out.setdefault(row["trial_id"], {})[int(values["epoch"])] = values
    return out


def recorded_ends(location: StudyLocation) -> dict[str, dict]:
    """The trials the results record as ended (see `recorded_trials`)."""
    return {trial_id: row for trial_id, row in recorded_trials(location).items()
            if row["state"] in schema.TERMINAL_STATES}


def _error_message(trial) -> str:
    """The last line of the trial's traceback: what a person needs to see first."""
    try:
        with open(trial.error_file, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except (OSError, TypeError):
        lines = []
    return lines[-1][:2000] if lines else "the trial raised an error (see Ray's logs)"
