"""Pareto-aware early stopping: a multi-objective form of successive halving.

ASHA ranks trials on one metric and would discard the sparse, slightly less accurate trials the
study is looking for. This rule stops a trial at epoch k only when at least `min_dominating`
finished trials were strictly better at epoch k in the Pareto sense (no worse in every objective,
better in one), i.e. when the trial is heading somewhere the front already covers.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.spec import Objective, StudySpec


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


class ParetoStoppingScheduler(FIFOScheduler):
    """Ray Tune adapter around `ParetoEarlyStopping`."""

    def __init__(self, rule: ParetoEarlyStopping):
        super().__init__()
        self.rule = rule
        self.stopped: set[str] = set()

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if self.rule.should_stop(trial.trial_id, int(result.get("epoch", 0)), result):
            self.stopped.add(trial.trial_id)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if trial.trial_id not in self.stopped:
            self.rule.finish(trial.trial_id)


def make_scheduler(spec: StudySpec) -> FIFOScheduler | None:
    if not spec.search.early_stopping:
        return None
    return ParetoStoppingScheduler(ParetoEarlyStopping(
        spec.search.objectives, min_dominating=spec.search.early_stopping_min_dominating,
        grace_epochs=spec.search.early_stopping_grace_epochs))
