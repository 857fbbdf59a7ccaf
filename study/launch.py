"""Launching a study: Ray (local or a cluster), Optuna through OptunaSearch, Ray Tune's Tuner.

A study is a sequence of Tune experiments ("runs") that share one Optuna study and one results
folder: run 0 is `rvsm run`, each `rvsm extend` adds a run, `rvsm resume` restores the last one.
"""
from __future__ import annotations

import logging
import os
import posixpath
import sqlite3
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

# Read by Ray Tune when the Tuner is built: snapshot the experiment every 2 s (not every 10+ s)
# and leave out the CSV/JSON/TensorBoard loggers, which the Parquet results replace.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
# Tune forces a snapshot whenever a trial has checkpointed num_to_keep times since the last one;
# that is the durability wanted here, not a problem to warn about.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")

import optuna  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.fs as pafs  # noqa: E402
import ray  # noqa: E402
import sqlalchemy.exc  # noqa: E402
from ray import tune  # noqa: E402

from study import compaction, search  # noqa: E402
from study.bookkeeping import (RunInfo, StudyFolderError, plan_run, runs, target_trials,  # noqa: E402
                               terminal_trials)
from study.progress import ProgressCallback  # noqa: E402
from study.scheduler import ParetoStoppingScheduler, StudyScheduler, make_scheduler  # noqa: E402
from study.results import (ResultsCallback, ResultsWriter, param_types, recorded_ends,  # noqa: E402
                           recorded_epochs, recorded_trials)
from study.searcher import StudySearch  # noqa: E402
from study.spec import SpecError, StudySpec  # noqa: E402
from study.storage import OPTUNA_DIR, RUNS_DIR, StudyLocation  # noqa: E402
from trainables.config import TrainConfig  # noqa: E402
from trainables.tune_trainable import rvsm_trainable  # noqa: E402

# Without Tune's file loggers its result analysis warns that result.json is missing: the
# results are in Parquet.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyInterrupted(Exception):
    """The study stopped before its trials were done (Ctrl-C, a lost driver)."""


# -- Ray ------------------------------------------------------------------------------------------

def connect(spec: StudySpec, *, verbose: bool) -> None:
    """Join the cluster named in the study, or start a local Ray owned by this process;
    study.cluster.ClusterError (one line) when the cluster cannot be joined."""
    from study import cluster
    cluster.connect(spec.cluster.address, timeout_s=spec.cluster.connect_timeout_s,
                    verbose=verbose)


def check_resources(spec: StudySpec) -> None:
    """A request the cluster can never satisfy would leave trials pending forever: refuse it."""
    available = ray.cluster_resources()
    need_gpu, need_cpu = spec.resources.gpus_per_trial, spec.resources.cpus_per_trial
    if need_gpu > 0 and available.get("GPU", 0) < need_gpu:
        raise SpecError(f"resources.gpus_per_trial = {need_gpu!r}, but the Ray cluster has "
                        f"{available.get('GPU', 0):g} GPUs; set gpus_per_trial = 0 to train on CPUs")
    if available.get("CPU", 0) < need_cpu:
        raise SpecError(f"resources.cpus_per_trial = {need_cpu!r}, but the Ray cluster has "
                        f"{available.get('CPU', 0):g} CPUs")


def _searcher(spec: StudySpec, location: StudyLocation, run: RunInfo) -> StudySearch:
    metrics = [o.metric for o in spec.search.objectives]
    modes = [o.direction for o in spec.search.objectives]
    storage = search.open_storage(_optuna_dir(location))
    return StudySearch(objectives=metrics, space=search.search_space(spec),
                       metric=metrics if len(metrics) > 1 else metrics[0],
                       mode=modes if len(modes) > 1 else modes[0],
                       # A new seed per run, or an extension with the random sampler would
                       # replay the first run's points.
                       sampler=search.make_sampler(spec, seed=spec.study.seed + run.index),
                       study_name=spec.study.name, storage=storage,
                       after_ask=_optuna_uploader(location))


def _optuna_uploader(location: StudyLocation) -> Callable[[], None] | None:
    """For a remote study, the upload of its Optuna database that follows each asked trial
    (StudySearch.after_ask): Tune's snapshot, synced every second, may name a trial asked after
    the last trial end, and a resume after a hard kill restores the searcher from it."""
    return None if location.is_local else partial(_upload_optuna, location)


def _optuna_dir(location: StudyLocation) -> Path:
    return location.local_cache() / OPTUNA_DIR


def _callbacks(spec: StudySpec, location: StudyLocation, run: RunInfo):
    base = TrainConfig.from_dict(spec.train).to_dict()
    # searched per-layer multipliers (threshold_multipliers.<name>) are flat float params too
    types = param_types(base) | {p.name: pa.float64() for p in spec.search.params if p.name not in base}
    writer = ResultsWriter(location, spec.study.name, types, [p.name for p in spec.search.params])
    from study.tracking import tracking_callbacks
    upload = [] if location.is_local else [OptunaUpload(location)]  # first: see OptunaUpload
    return [*upload, ResultsCallback(writer, run.trial_offset), ProgressCallback(spec, location),
            *tracking_callbacks(spec.tracking, spec.study.name)]


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _trainable(spec: StudySpec):
    return tune.with_resources(rvsm_trainable, {"cpu": spec.resources.cpus_per_trial,
                                                "gpu": spec.resources.gpus_per_trial})


def start_run(spec: StudySpec, location: StudyLocation, run: RunInfo, *, verbose: bool) -> None:
    tuner = tune.Tuner(
        _trainable(spec),
        param_space=spec.base_config(),
        tune_config=tune.TuneConfig(search_alg=_searcher(spec, location, run),
                                    num_samples=run.num_samples,
                                    scheduler=make_scheduler(spec, partial(recorded_trials, location),
                                                             partial(recorded_epochs, location)),
                                    max_concurrent_trials=spec.study.max_concurrent,
                                    # a trial process starts once per slot, not once per trial:
                                    # importing torch and Ray costs seconds each time
                                    # (RVSM_REUSE_TRIAL_PROCESSES=0 is the benchmark's baseline)
                                    reuse_actors=os.environ.get("RVSM_REUSE_TRIAL_PROCESSES") != "0",
                                    trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(
            name=run.name, storage_path=location.uri_join(RUNS_DIR),
            callbacks=_callbacks(spec, location, run),
            failure_config=tune.FailureConfig(max_failures=2),
            # Two, not one: Tune deletes the older checkpoint as soon as a newer one registers,
            # before its experiment snapshot naming the newer one has reached the storage; a
            # hard kill in between would leave the snapshot pointing at a deleted checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            sync_config=tune.SyncConfig(sync_period=1),
            verbose=2 if verbose else 0),
    )
    _fit(tuner, location, run)


def restore_run(spec: StudySpec, location: StudyLocation, run: RunInfo, *, verbose: bool) -> bool:
    """Continue run `run` from Tune's snapshot; False when it never wrote one."""
    path = location.uri_join(RUNS_DIR, run.name)
    if not tune.Tuner.can_restore(path):
        return False
    try:
        tuner = tune.Tuner.restore(path, _trainable(spec), resume_unfinished=True,
                                   resume_errored=False, restart_errored=False)
    except sqlalchemy.exc.OperationalError as error:
        # Tune's snapshot of a run started by a version before search.StudyStorage names the
        # Optuna database where the study was then, and opening it there failed.
        raise StudyFolderError(
            f"{path}: this run's snapshot (written by an older rvsm-study) names the Optuna "
            f"database where the study was created, which cannot be opened ({error.orig}); "
            "move the study folder back to resume it there") from None
    _rebind(tuner, location)
    _fit(tuner, location, run)
    return True


def _rebind(tuner: tune.Tuner, location: StudyLocation) -> None:
    """Point the restored scheduler, searcher and callbacks at the study where it is now. Tune
    unpickles them as the run built them, naming the study's location then: a study copied or
    moved since would read the old copy's results (trials whose rows were lost here count as
    ended), write its rows there and tell the old Optuna database."""
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:  # Ray Client: the tuner lives on the cluster; nothing to reach here
        return
    scheduler = internal._tune_config.scheduler
    if isinstance(scheduler, StudyScheduler):
        scheduler.recorded = partial(recorded_trials, location)
    if isinstance(scheduler, ParetoStoppingScheduler):
        scheduler.recorded_epochs = partial(recorded_epochs, location)
    searcher = internal._tune_config.search_alg
    while searcher is not None and not isinstance(searcher, StudySearch):
        searcher = getattr(searcher, "searcher", None)  # ConcurrencyLimiter, SearchGenerator
    if searcher is not None:
        searcher.rebind(search.open_storage(_optuna_dir(location)))
        searcher.after_ask = _optuna_uploader(location)
    for callback in internal._run_config.callbacks or []:
        for holder in (callback, getattr(callback, "writer", None)):
            if isinstance(getattr(holder, "location", None), StudyLocation):
                holder.location = location


def _fit(tuner: tune.Tuner, location: StudyLocation, run: RunInfo) -> None:
    _compact(location)  # finishes what a killed run left half compacted
    try:
        grid = tuner.fit()
    finally:
        _compact(location)
        _upload_optuna(location)
    # After a Ctrl-C, Tune returns normally with trials left over (and marks them terminated in
    # memory): the results tell.
    if _ended_in_run(grid, location) < run.num_samples:
        raise StudyInterrupted("the study was interrupted")


def _ended_in_run(grid: tune.ResultGrid, location: StudyLocation) -> int:
    """How many of the run's trials the results record as ended. By trial id (each trial's folder
    is named by `_trial_dirname`), not by number: the results' trial numbers are Optuna's, which
    skip the orphans of a killed driver."""
    ended = recorded_ends(location)
    return sum(1 for result in grid
               if posixpath.basename(result.path.rstrip("/")).removeprefix("trial_") in ended)


def _compact(location: StudyLocation) -> None:
    """All ended trials' rows into one part file per results folder (study.compaction)."""
    try:
        compaction.compact(location, full=True)
    except (OSError, pa.ArrowException) as error:
        logging.getLogger(__name__).warning(
            "results compaction failed (every row stays readable; the next run retries): %s", error)


class OptunaUpload(tune.Callback):
    """Keeps the stored Optuna database of a remote study in step with its results: uploaded
    at every trial end, after Tune told the searcher and before ResultsCallback (listed after
    this one) writes the trial's ended row, so the stored copy never lags the stored results."""

    def __init__(self, location: StudyLocation):
        self.location = location

    def on_trial_complete(self, iteration, trials, trial, **info):
        _upload_optuna(self.location)

    def on_trial_error(self, iteration, trials, trial, **info):
        _upload_optuna(self.location)


def _upload_optuna(location: StudyLocation) -> None:
    if location.is_local:
        return
    db = _optuna_dir(location) / search.OPTUNA_DB
    if db.exists():
        location.write_bytes(_sqlite_snapshot(db), OPTUNA_DIR, search.OPTUNA_DB)


def _sqlite_snapshot(db: Path) -> bytes:
    """A consistent copy of a SQLite database, even while Optuna writes to it (online backup)."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / search.OPTUNA_DB
        source, target = sqlite3.connect(db), sqlite3.connect(copy)
        try:
            source.backup(target)
        finally:
            source.close()
            target.close()
        return copy.read_bytes()


def download_optuna(location: StudyLocation) -> None:
    if location.is_local or not location.exists(OPTUNA_DIR, search.OPTUNA_DB):
        return
    folder = _optuna_dir(location)
    folder.mkdir(parents=True, exist_ok=True)
    with location.fs.open_input_stream(location.join(OPTUNA_DIR, search.OPTUNA_DB)) as f:
        (folder / search.OPTUNA_DB).write_bytes(f.read())


def complete_study(spec: StudySpec, location: StudyLocation, *, verbose: bool) -> None:
    """Resume the last run, then sample new trials until the study's target is met."""
    download_optuna(location)
    *earlier, last = runs(location)
    for run in _runs_with_lost_rows(location, earlier):
        restore_run(spec, location, run, verbose=verbose)
    if not restore_run(spec, location, last, verbose=verbose):
        location.delete(RUNS_DIR, last.name)
        start_run(spec, location, last, verbose=verbose)
    missing = target_trials(location) - terminal_trials(location)
    if missing > 0:
        start_run(spec, location, plan_run(location, missing, adds_to_target=False),
                  verbose=verbose)


def _runs_with_lost_rows(location: StudyLocation, candidates: list[RunInfo]) -> list[RunInfo]:
    """The runs (earlier, finished ones) with a trial folder whose trial the results do not
    record as ended: its rows were in a results file set aside as unreadable (one compacted
    part holds every run's trials). Restoring such a run re-runs just those trials from their
    final checkpoints (study.scheduler.StudyScheduler); otherwise the study would sample new
    trials in their place and the lost ones' configurations would be gone from the results."""
    ended = recorded_ends(location)
    lost = []
    for run in candidates:
        found = location.fs.get_file_info(pafs.FileSelector(
            location.join(RUNS_DIR, run.name), allow_not_found=True))
        ids = {info.base_name.removeprefix("trial_") for info in found
               if info.type == pafs.FileType.Directory and info.base_name.startswith("trial_")}
        if ids - ended.keys():
            lost.append(run)
    return lost
