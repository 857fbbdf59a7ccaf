"""The Ray Tune searcher: Ray's OptunaSearch, with Optuna's storage kept in step with the results.

What Ray's OptunaSearch leaves out, and this adds (the rules themselves are in `study.search`):
- the study's objective names (`study.metric_names`), so the dashboard shows them;
- user attributes `trial_id`, `state` and `epochs_completed` on every Optuna trial;
- a trial ends in Optuna in the state that matches the results': a diverged trial (NaN objective,
  which OptunaSearch refuses and leaves RUNNING) is FAIL, an errored one FAIL, a stopped one PRUNED;
- a trial told before a kill is not told again after the resume;
- orphans (RUNNING trials asked for by a killed driver whose Tune trial never reached a snapshot)
  are set FAIL when a run starts or is restored, before any new trial is asked;
- each trial's Optuna number is what the results record as `trial_number`;
- an error while Optuna is told a trial ended is logged, not raised into Tune (which would run
  the finished trial again);
- `after_ask`, when set, runs after each new trial is asked and before Tune's snapshot can name
  it: a remote study uploads its Optuna database there, so the stored database never lacks a
  trial the stored snapshot knows (a resume after a hard kill would not find it).
"""
from __future__ import annotations

import logging
from collections.abc import Callable

import optuna
from ray.tune.search.optuna import OptunaSearch

from analysis import schema
from study import search
from study.results import ended_state


class StudySearch(OptunaSearch):
    """OptunaSearch for one run of a study; `objectives` are the metric names, in order."""

    def __init__(self, *, objectives: list[str], after_ask: Callable[[], None] | None = None, **kwargs):
        self._objectives = list(objectives)
        self._epochs: dict[str, int] = {}  # trial id -> last reported epoch
        self.after_ask = after_ask
        super().__init__(**kwargs)

    def _setup_study(self, mode) -> None:
        """A new run (never a restored one: Tune restores this object from a pickle): no Tune
        trial is alive yet, so every RUNNING Optuna trial is an orphan."""
        super()._setup_study(mode)
        search.set_objective_names(self._ot_study, self._objectives)
        search.fail_orphans(self._ot_study, live=set())

    def rebind(self, storage) -> None:
        """Use `storage`, the Optuna database where the study is now, also once Tune restores
        this searcher's saved state, which names the database where the run began (a study
        copied or moved since would otherwise tell the original, or fail to open it)."""
        self._rebound_storage = storage

    def restore(self, checkpoint_path: str) -> None:
        """Tune restores the run: the trials it continues keep their Optuna trials (and
        numbers); every other RUNNING one is an orphan of the killed driver."""
        rebound = self.__dict__.get("_rebound_storage")
        super().restore(checkpoint_path)
        if rebound is not None:
            self._use_storage(rebound)
        live = {trial.number for trial_id, trial in self._ot_trials.items()
                if trial_id not in self._completed_trials}
        for trial_id, trial in self._ot_trials.items():
            search.remember_number(trial_id, trial.number)
        search.set_objective_names(self._ot_study, self._objectives)
        search.fail_orphans(self._ot_study, live=live)

    def _use_storage(self, storage) -> None:
        self._storage = storage
        self._rebound_storage = storage
        if self._ot_study is None:
            return
        self._ot_study = optuna.load_study(study_name=self._ot_study.study_name, storage=storage,
                                           sampler=self._sampler)
        for trial in self._ot_trials.values():  # the same ids: the database is the same file
            trial.study, trial.storage = self._ot_study, self._ot_study._storage

    def suggest(self, trial_id: str) -> dict | None:
        config = super().suggest(trial_id)
        trial = self._ot_trials[trial_id]
        search.remember_number(trial_id, trial.number)
        search.set_attrs(trial, trial_id=trial_id, state=schema.RUNNING,
                         epochs_completed=self._epochs.get(trial_id, 0))
        if getattr(self, "after_ask", None) is not None:  # absent from older pickles
            self.after_ask()
        return config

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        super().on_trial_result(trial_id, result)
        trial = self._ot_trials.get(trial_id)
        epoch = result.get("epoch")
        if trial is not None and isinstance(epoch, int) and trial_id not in self._completed_trials:
            self._epochs[trial_id] = epoch
            search.set_attrs(trial, epochs_completed=epoch)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        trial = self._ot_trials.get(trial_id)
        if trial_id in self._completed_trials or trial is None:
            return
        result = result or {}
        state = schema.ERRORED if error else ended_state(result)
        try:
            search.tell_ended(self._ot_study, trial, trial_id=trial_id, state=state,
                              values=[result.get(m) for m in self._objectives],
                              epochs=result.get("epoch", self._epochs.get(trial_id, 0)))
        except Exception as failure:  # noqa: BLE001 - raised here, Tune would run the trial again
            # Tune fails a trial whose completion raises and runs it again from scratch, and the
            # re-run overwrites the epochs it recorded (how the grid sampler's study.stop() once
            # looped). The results keep the trial; Optuna stores the state before a sampler's
            # after_trial raises, so only a storage failure leaves it RUNNING (FAIL as an orphan
            # at the next run).
            logging.getLogger(__name__).warning(
                "Optuna could not record trial %s as %s (%s: %s); its results are kept",
                trial_id, state, type(failure).__name__, " ".join(str(failure).split()))
        self._completed_trials.add(trial_id)
