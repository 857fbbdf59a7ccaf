"""The study's Ray Tune scheduler: no trial the results record as ended runs again, and
Pareto-aware early stopping, a multi-objective form of successive halving.

ASHA ranks trials on one metric and would discard the sparse, slightly less accurate trials the
study is looking for. This rule stops a trial at epoch k only when at least `min_dominating`
finished trials were strictly better at epoch k in the Pareto sense (no worse in every objective,
better in one), i.e. when the trial is heading somewhere the front already covers.
"""
from __future__ import annotations

import json
import math
import posixpath
import zipfile
from collections import defaultdict
from collections.abc import Callable, Sequence

import pyarrow as pa
import pyarrow.fs as pafs
from ray.train._internal.session import _TrainingResult
from ray.tune import Checkpoint
from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from analysis import schema
from study.results import ran_to_end
from study.spec import Objective, StudySpec
from trainables.tune_trainable import EPOCH_FILE, STATE_FILE


def dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[float]) -> bool:
    """a dominates b, both given as raw metric values; sign +1 maximises, -1 minimises."""
    better_somewhere = False
    for x, y, s in zip(a, b, signs):
        if s * x < s * y:
            return False
        better_somewhere |= s * x > s * y
    return better_somewhere


class ParetoEarlyStopping:
    """The rule itself, on plain numbers: fed epochs of trials, it says which to stop."""

    def __init__(self, objectives: Sequence[Objective], *, min_dominating: int, grace_epochs: int):
        self.metrics = [o.metric for o in objectives]
        self.signs = [1.0 if o.direction == "max" else -1.0 for o in objectives]
        self.min_dominating = min_dominating
        self.grace_epochs = grace_epochs
        self.history: dict[str, dict[int, tuple[float, ...]]] = defaultdict(dict)
        self.finished: set[str] = set()

    def record(self, trial_id: str, epoch: int, result: dict) -> tuple[float, ...] | None:
        values = tuple(result.get(m) for m in self.metrics)
        if any(not isinstance(v, (int, float)) or v != v for v in values):
            return None
        self.history[trial_id][epoch] = values
        return values

    def should_stop(self, trial_id: str, epoch: int, result: dict) -> bool:
        values = self.record(trial_id, epoch, result)
        if values is None or epoch <= self.grace_epochs:
            return False
        dominating = sum(1 for other in self.finished if other != trial_id
                         and epoch in self.history[other]
                         and dominates(self.history[other][epoch], values, self.signs))
        return dominating >= self.min_dominating

    def finish(self, trial_id: str) -> None:
        self.finished.add(trial_id)

    def remember(self, finished: dict[str, dict[int, dict]]) -> None:
        """Take in trials that finished before this rule existed (an earlier run of the study,
        or before the driver was restarted): trial id -> epoch -> that epoch's metrics."""
        for trial_id, epochs in finished.items():
            for epoch, result in epochs.items():
                self.record(trial_id, epoch, result)
            self.finish(trial_id)


class StudyScheduler(FIFOScheduler):
    """First in, first out; and a trial that Ray Tune restores from its snapshot carries on from
    where the results say it is, not from where the (older) snapshot says:
    - recorded ended (it ended after the snapshot, then the driver was killed): closed at once,
      not trained again; Tune marks it terminated and the searcher is told how it ended (which
      releases its concurrency slot);
    - unfinished: it continues from its newest checkpoint no later than its last recorded epoch,
      so it reports no epoch twice and leaves no epoch unrecorded (see `_resume_point`);
    - ended in the snapshot, but its ended row lost with an unreadable results file: it runs
      again from its final checkpoint (which trains nothing: the row is rewritten).

    `recorded()` gives every trial in the results (study.results.recorded_trials); it is read
    once per driver process, when the first trial is added (restored trials come first).
    """

    def __init__(self, recorded: Callable[[], dict[str, dict]]):
        super().__init__()
        self.recorded = recorded
        self._rows: dict[str, dict] | None = None

    def _first_read(self, rows: dict[str, dict]) -> None:
        """Called once per driver process with the results' trials, before any trial runs."""

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_rows"] = None  # read again by the driver that restores this scheduler
        return state

    def on_trial_add(self, tune_controller, trial) -> None:
        super().on_trial_add(tune_controller, trial)
        if self._rows is None:
            self._rows = self.recorded()
            self._first_read(self._rows)
        row = self._rows.get(trial.trial_id)
        ended = row is not None and row["state"] in schema.TERMINAL_STATES
        lost = trial.status in (Trial.TERMINATED, Trial.ERROR) and not ended
        if lost:
            # Ended in Tune's snapshot, but the results lost its ended row (an unreadable
            # results file set aside): it runs again from its final checkpoint, which reports
            # the trial's last epoch again without training (trainables.tune_trainable), and
            # so rewrites the row; with no checkpoint, it starts over.
            trial.set_status(Trial.PENDING)
            tune_controller.get_live_trials().add(trial)
        if trial.status != Trial.PENDING:
            return
        if not ended:
            _resume_point(trial, recorded_epochs=math.inf if lost
                          else 0 if row is None else _epochs(row))
            return
        # Tune's controller adds the trial to its sets by the status it has after this hook.
        trial.set_status(Trial.TERMINATED)
        tune_controller.get_live_trials().discard(trial)
        tune_controller.search_alg.on_trial_complete(
            trial.trial_id, result=_as_result(row), error=row["state"] == schema.ERRORED)


def _resume_point(trial, *, recorded_epochs: float) -> None:
    """Point a restored trial at the newest complete checkpoint in its folder whose epoch the
    results have recorded (or at none: it starts over), and delete its other checkpoints.

    Tune's snapshot lags: the killed driver may have recorded epochs after it (continuing from
    the snapshot's checkpoint would report them twice), or the snapshot may name a checkpoint
    whose epochs were never recorded (their rows wait for the next snapshot, which never came),
    or one already deleted (Tune rotates checkpoints, CheckpointConfig.num_to_keep, without
    waiting for the snapshot: it would fail to restore the trial, or to delete the checkpoint
    again, with a traceback)."""
    manager = trial.run_metadata.checkpoint_manager
    latest = manager.latest_checkpoint_result
    if latest is None:
        return  # never checkpointed: it starts over, as Tune would have it
    fs, folder = latest.checkpoint.filesystem, posixpath.dirname(latest.checkpoint.path)
    found = [info for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
             if info.type == pafs.FileType.Directory and info.base_name.startswith("checkpoint_")]
    usable = sorted((epoch, info.base_name, info.path) for info in found
                    if (epoch := _checkpoint_epoch(fs, info.path)) is not None
                    and epoch <= recorded_epochs)
    chosen = usable[-1] if usable else None
    for info in found:
        if chosen is None or info.path != chosen[2]:
            fs.delete_dir(info.path)
    manager._checkpoint_results = []
    manager._latest_checkpoint_result = None
    trial.storage.current_checkpoint_index = 0
    if chosen is not None:
        result = _TrainingResult(checkpoint=Checkpoint(chosen[2], filesystem=fs),
                                 metrics={"epoch": chosen[0]})
        manager._checkpoint_results.append(result)
        manager._latest_checkpoint_result = result
        trial.storage.current_checkpoint_index = int(chosen[1].rsplit("_", 1)[1]) + 1
    trial.invalidate_json_state()
    trial.run_metadata.invalidate_cache()


def _checkpoint_epoch(fs: pafs.FileSystem, folder: str) -> int | None:
    """The epoch a checkpoint holds; None unless it was copied whole (its epoch file reads, and
    its state file, a zip from torch.save, has the directory that ends a zip)."""
    try:
        with fs.open_input_stream(posixpath.join(folder, EPOCH_FILE)) as f:
            epoch = json.loads(f.read())["epoch"]
        with fs.open_input_file(posixpath.join(folder, STATE_FILE)) as f:
            whole = zipfile.is_zipfile(f)
    except (OSError, pa.ArrowException, ValueError, KeyError, TypeError):
        return None
    return int(epoch) if whole and isinstance(epoch, int) else None


def _epochs(row: dict) -> int:
    value = row["epochs_completed"]
    return 0 if _missing(value) else int(value)


def _as_result(row: dict) -> dict:
    """A results row as the last report Tune would have had (what the searcher is told)."""
    result = {name[len(schema.METRIC_PREFIX):]: value for name, value in row.items()
              if name.startswith(schema.METRIC_PREFIX) and not _missing(value)}
    result["epoch"] = _epochs(row)
    result["diverged"] = row["state"] == schema.DIVERGED
    if row["state"] != schema.FINISHED:
        result.pop("test_acc", None)  # how study.results.ended_state tells stopped from finished
    return result


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


class ParetoStoppingScheduler(StudyScheduler):
    """Ray Tune adapter around `ParetoEarlyStopping`. The rule's memory of finished trials is
    rebuilt from the results when a driver starts (`recorded_epochs`): Tune restores a scheduler
    as it was built, so after a resume, or in an `extend`, the rule would otherwise judge new
    trials against none of the study's earlier ones."""

    def __init__(self, rule: ParetoEarlyStopping, recorded: Callable[[], dict[str, dict]],
                 recorded_epochs: Callable[[set[str]], dict[str, dict[int, dict]]] | None = None):
        super().__init__(recorded)
        self.rule = rule
        self.recorded_epochs = recorded_epochs
        self.stopped: set[str] = set()

    def _first_read(self, rows: dict[str, dict]) -> None:
        finished = {t for t, row in rows.items() if row["state"] == schema.FINISHED}
        read = getattr(self, "recorded_epochs", None)  # absent from a scheduler pickled before it existed
        if finished and read is not None:
            self.rule.remember(read(finished))

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        dominated = self.rule.should_stop(trial.trial_id, int(result.get("epoch", 0)), result)
        # The last epoch has nothing left to save: stopping it would only leave a trial that ran
        # to the end out of the rule's finished trials.
        if dominated and not ran_to_end(result):
            self.stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.trial_id not in self.stopped:
            self.rule.finish(trial.trial_id)


def make_scheduler(spec: StudySpec, recorded: Callable[[], dict[str, dict]],
                   recorded_epochs: Callable[[set[str]], dict[str, dict[int, dict]]] | None = None,
                   ) -> StudyScheduler:
    """The study's scheduler; `recorded` and `recorded_epochs` as for ParetoStoppingScheduler."""
    if not spec.search.early_stopping:
        return StudyScheduler(recorded)
    grace = spec.search.early_stopping_grace_epochs
    return ParetoStoppingScheduler(ParetoEarlyStopping(
        spec.search.objectives, min_dominating=spec.search.early_stopping_min_dominating,
        grace_epochs=default_grace(spec) if grace is None else grace), recorded, recorded_epochs)


GRACE_SHARE = {"constant": 0.25, "cosine": 0.5}  # of the epochs after the ramp; a choice, not measured


def default_grace(spec: StudySpec) -> int:
    """Epochs before early stopping may judge a trial: the threshold ramp, plus a share of the
    remaining epochs (a quarter at a constant learning rate, half under cosine, whose early
    epochs at a high rate say little of the end), at least 1. Searched epochs, ramp_epochs or
    schedule count at their largest (grid values or range high)."""
    base = spec.base_config()
    searched = {p.name: p for p in spec.search.params}

    def largest(name: str) -> float:
        p = searched.get(name)
        if p is None:
            return base[name]
        return max(p.values) if p.values is not None else p.high

    schedules = searched["schedule"].values if "schedule" in searched else (base["schedule"],)
    share = max(GRACE_SHARE.get(s, 0.25) for s in schedules)
    epochs, ramp = int(largest("epochs")), int(largest("ramp_epochs"))
    return max(1, min(epochs, ramp + math.ceil(share * max(0, epochs - ramp))))
