"""The search: Optuna distributions, samplers and the storage that keeps the study's state.

Optuna's storage tells the same story as the Parquet results: each Optuna trial carries the user
attributes `trial_id`, `state` and `epochs_completed` (ATTRS) and ends in the state that matches
the results' (STATE_IN_OPTUNA); its number is the results' `trial_number`. Pure Optuna: the Ray
Tune searcher that calls these lives in `study.searcher`.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)
from optuna.trial import TrialState

from analysis import schema
from study.spec import Param, StudySpec

OPTUNA_DB = "optuna.db"
ATTRS = ("trial_id", "state", "epochs_completed")
# A stopped trial's values are those of an unfinished training: told as PRUNED, the samplers
# count it as a poor region (TPE puts it with the worse trials) without a front point that was
# never reached; docs/performance.md (section 4) has the measurement behind this choice.
STATE_IN_OPTUNA = {schema.FINISHED: TrialState.COMPLETE, schema.STOPPED: TrialState.PRUNED,
                   schema.DIVERGED: TrialState.FAIL, schema.ERRORED: TrialState.FAIL}
ORPHANED = "orphaned"  # user attr `state` of a trial asked by a driver that died before running it


def distribution(p: Param) -> BaseDistribution:
    if p.values is not None:
        return CategoricalDistribution(list(p.values))
    if p.integer:
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.log)


def search_space(spec: StudySpec) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in spec.search.params}


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """Optuna's sampler by name. Multi-objective capable: tpe, nsga2, nsga3, gp, random, qmc."""
    name = spec.search.sampler
    seed = spec.study.seed if seed is None else seed
    if name == "tpe":
        # multivariate TPE models lam and beta jointly: the threshold depends on their ratio.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=min(10, max(2, spec.study.trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(spec))
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=_population(spec))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, spec.study.trials // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if name == "grid":
        grid = {p.name: list(p.values) for p in spec.search.params}
        return _StudyGridSampler(grid, seed=seed)
    raise ValueError(f"unknown sampler {name!r}")  # unreachable: the spec validated it


class _StudyGridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its end-of-grid `study.stop()`: that call raises outside
    `Study.optimize` (this study asks and tells), and it raised from inside Tune's trial
    completion when the grid's last trial ended, leaving the trial unrecorded in Optuna and
    restarted by Tune. The study's trial count already ends the run."""

    def after_trial(self, study, trial, state, values) -> None:
        return None


def _population(spec: StudySpec) -> int:
    """A generation no larger than a quarter of the budget, so evolution gets a few rounds."""
    return max(4, min(50, spec.study.trials // 4))


def storage_url(local_dir: Path) -> str:
    return f"sqlite:///{(local_dir / OPTUNA_DB).resolve()}"


def open_storage(local_dir: Path) -> optuna.storages.RDBStorage:
    local_dir.mkdir(parents=True, exist_ok=True)
    # A generous timeout: the driver is the only writer, but a status reader may hold the file.
    return StudyStorage(storage_url(local_dir), engine_kwargs={"connect_args": {"timeout": 30}})


class StudyStorage(optuna.storages.RDBStorage):
    """Optuna's SQLite storage, which connects when first used after unpickling instead of while
    being unpickled. Tune pickles the searcher (and so this storage, by its absolute path) with
    the run; a study folder moved since would fail `rvsm resume` inside Tune's restore, before
    the restored searcher is pointed at the database where the study is now (launch._rebind),
    and a study copied since would open, and create tables in, the original's database."""

    _CONNECTION = ("engine", "scoped_session", "_version_manager")

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in self._CONNECTION}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def __getattr__(self, name: str):
        """Called only for attributes not set: the connection of an unpickled storage."""
        if name in self._CONNECTION and "url" in self.__dict__:
            super().__setstate__(self.__getstate__())
            return self.__dict__[name]
        raise AttributeError(name)


# -- keeping Optuna in step with the results ------------------------------------------------------

def set_objective_names(study: optuna.Study, names: Sequence[str]) -> None:
    """`study.metric_names`, which the dashboard shows (experimental in Optuna, stable since 3.2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(names))


def set_attrs(trial: optuna.Trial, **attrs) -> bool:
    """Set user attributes of a trial; False when it has already ended (Optuna freezes an ended
    trial, whose attributes were set before it ended)."""
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def tell_ended(study: optuna.Study, trial: optuna.Trial, *, trial_id: str, state: str,
               values: Sequence[float | None], epochs: int) -> TrialState | None:
    """Tell Optuna that `trial` ended in results state `state` (finished, stopped, diverged or
    errored) with objective `values`; None when Optuna already had it ended (told before a kill),
    else the Optuna state it got. A finished trial with a non-finite value is FAIL."""
    finite = all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)
    target = STATE_IN_OPTUNA[state]
    if target == TrialState.COMPLETE and not finite:
        target = TrialState.FAIL
    attrs = {"trial_id": trial_id, "state": state, "epochs_completed": int(epochs)}
    if target == TrialState.PRUNED and finite:
        attrs["values_when_stopped"] = [float(v) for v in values]
    if not set_attrs(trial, **attrs):
        return None
    told = [float(v) for v in values] if target == TrialState.COMPLETE else None
    study.tell(trial, told if told is None or len(told) > 1 else told[0], state=target,
               skip_if_finished=True)
    return target


def fail_orphans(study: optuna.Study, live: set[int]) -> list[int]:
    """Set FAIL every RUNNING trial whose number is not in `live` (the trials Ray Tune will run or
    continue): asked for by a driver that was killed before its trial reached a snapshot, so no
    one will ever tell it. Returns their numbers. Call before new trials are asked."""
    orphans = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.number not in live]
    for frozen in orphans:
        # through the storage: an optuna.Trial object would have the sampler prepare the
        # orphan as a new trial (the grid sampler would spend a grid point on it)
        study._storage.set_trial_user_attr(frozen._trial_id, "state", ORPHANED)
        study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
    return [t.number for t in orphans]


# The searcher and the results callback are separate objects that Ray Tune pickles and restores
# on its own; this map (trial id -> Optuna number, this driver process only) is how the callback
# learns the number the searcher got, to record it as the results' `trial_number`.
_NUMBERS: dict[str, int] = {}


def remember_number(trial_id: str, number: int) -> None:
    _NUMBERS[trial_id] = number


def trial_number(trial_id: str) -> int | None:
    """The Optuna number of a Tune trial this driver's searcher asked for or restored."""
    return _NUMBERS.get(trial_id)
