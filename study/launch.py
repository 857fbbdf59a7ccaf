"""Launching a study: Ray (local or a cluster), Optuna through OptunaSearch, Ray Tune's Tuner.

A study is a sequence of Tune experiments ("runs") that share one Optuna study and one results
folder: run 0 is `rvsm run`, each `rvsm extend` adds a run, `rvsm resume` restores the last one.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
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
import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from analysis import schema  # noqa: E402
from study import search  # noqa: E402
from study.progress import ProgressCallback  # noqa: E402
from study.scheduler import make_scheduler  # noqa: E402
from study.results import ResultsCallback, ResultsWriter, param_types  # noqa: E402
from study.spec import SpecError, StudySpec  # noqa: E402
from study.storage import OPTUNA_DIR, RUNS_DIR, StudyLocation  # noqa: E402
from trainables.config import TrainConfig  # noqa: E402
from trainables.tune_trainable import rvsm_trainable  # noqa: E402

# Without Tune's file loggers its result analysis warns that result.json is missing: the
# results are in Parquet.
logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
optuna.logging.set_verbosity(optuna.logging.WARNING)
TERMINAL = (schema.FINISHED, schema.DIVERGED, schema.ERRORED, schema.STOPPED)


@dataclass(frozen=True)
class RunInfo:
    index: int
    num_samples: int
    trial_offset: int
    adds_to_target: int  # 0 for a run that only replaces trials an earlier run lost
    created_at: str = ""  # ISO time (UTC)

    @property
    def name(self) -> str:
        return f"{self.index:03d}"


class StudyInterrupted(Exception):
    """The study stopped before its trials were done (Ctrl-C, a lost driver)."""


# -- Ray ------------------------------------------------------------------------------------------

def connect(spec: StudySpec, *, verbose: bool) -> None:
    """Join the cluster named in the study, or start a local Ray owned by this process."""
    if ray.is_initialized():
        return
    kwargs = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.WARNING,
                  include_dashboard=False if spec.cluster.address is None else None)
    # "local" rather than None: a stale /tmp/ray/ray_current_cluster would make Ray try to join
    # a cluster that is gone.
    ray.init(address=spec.cluster.address or "local",
             **{k: v for k, v in kwargs.items() if v is not None})


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


# -- runs -----------------------------------------------------------------------------------------

def runs(location: StudyLocation) -> list[RunInfo]:
    metas = location.list_files(RUNS_DIR, suffix=".run.json")
    infos = [RunInfo(**json.loads(location.fs.open_input_stream(p).read())) for p in metas]
    return sorted(infos, key=lambda r: r.index)


def plan_run(location: StudyLocation, num_samples: int, *, adds_to_target: bool = True) -> RunInfo:
    previous = runs(location)
    offset = previous[-1].trial_offset + previous[-1].num_samples if previous else 0
    info = RunInfo(index=len(previous), num_samples=num_samples, trial_offset=offset,
                   adds_to_target=num_samples if adds_to_target else 0,
                   created_at=datetime.now(timezone.utc).isoformat())
    location.write_text(json.dumps(info.__dict__), RUNS_DIR, f"{info.name}.run.json")
    return info


def target_trials(location: StudyLocation) -> int:
    return sum(r.adds_to_target for r in runs(location))


def terminal_trials(location: StudyLocation, run: RunInfo | None = None) -> int:
    """Trials recorded as ended (finished, diverged, errored or stopped), of one run or all."""
    from analysis.load import load_results
    if not location.list_files(schema.RESULTS_DIR, schema.TRIALS_DIR):
        return 0
    trials = load_results([location.uri]).trials
    if run is not None:
        numbers = range(run.trial_offset, run.trial_offset + run.num_samples)
        trials = trials[trials["trial_number"].isin(numbers)]
    return int(trials["state"].isin(TERMINAL).sum())


def _searcher(spec: StudySpec, location: StudyLocation, run: RunInfo) -> OptunaSearch:
    metrics = [o.metric for o in spec.search.objectives]
    modes = [o.direction for o in spec.search.objectives]
    storage = search.open_storage(_optuna_dir(location))
    return OptunaSearch(space=search.search_space(spec),
                        metric=metrics if len(metrics) > 1 else metrics[0],
                        mode=modes if len(modes) > 1 else modes[0],
                        # A new seed per run, or an extension with the random sampler would
                        # replay the first run's points.
                        sampler=search.make_sampler(spec, seed=spec.study.seed + run.index),
                        study_name=spec.study.name, storage=storage)


def _optuna_dir(location: StudyLocation) -> Path:
    return location.local_cache() / OPTUNA_DIR


def _callbacks(spec: StudySpec, location: StudyLocation, run: RunInfo):
    base = TrainConfig.from_dict(spec.train).to_dict()
    types = param_types(base)
    writer = ResultsWriter(location, spec.study.name, types, [p.name for p in spec.search.params])
    return [ResultsCallback(writer, run.trial_offset), ProgressCallback(spec, location)]


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
                                    num_samples=run.num_samples, scheduler=make_scheduler(spec),
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
    tuner = tune.Tuner.restore(path, _trainable(spec), resume_unfinished=True,
                               resume_errored=False, restart_errored=False)
    _fit(tuner, location, run)
    return True


def _fit(tuner: tune.Tuner, location: StudyLocation, run: RunInfo) -> None:
    try:
        tuner.fit()
    finally:
        _upload_optuna(location)
    # After a Ctrl-C, Tune returns normally with trials left over: the results tell.
    if terminal_trials(location, run) < run.num_samples:
        raise StudyInterrupted("the study was interrupted")


def _upload_optuna(location: StudyLocation) -> None:
    if location.is_local:
        return
    db = _optuna_dir(location) / search.OPTUNA_DB
    if db.exists():
        location.write_bytes(db.read_bytes(), OPTUNA_DIR, search.OPTUNA_DB)


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
    last = runs(location)[-1]
    if not restore_run(spec, location, last, verbose=verbose):
        location.delete(RUNS_DIR, last.name)
        start_run(spec, location, last, verbose=verbose)
    missing = target_trials(location) - terminal_trials(location)
    if missing > 0:
        start_run(spec, location, plan_run(location, missing, adds_to_target=False),
                  verbose=verbose)

