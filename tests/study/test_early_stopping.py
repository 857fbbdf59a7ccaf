"""The Pareto-aware early-stopping rule on scripted results, and a study that uses it."""
from __future__ import annotations

import pandas as pd

from study.cli import main
from study.scheduler import ParetoEarlyStopping, dominates
from study.spec import Objective

OBJECTIVES = (Objective("val_acc", "max"), Objective("sparsity", "max"))


def rule(min_dominating: int = 2, grace_epochs: int = 1) -> ParetoEarlyStopping:
    return ParetoEarlyStopping(OBJECTIVES, min_dominating=min_dominating, grace_epochs=grace_epochs)


def finish(r: ParetoEarlyStopping, trial: str, per_epoch: dict[int, tuple[float, float]]) -> None:
    for epoch, (acc, sparsity) in per_epoch.items():
        assert not r.should_stop(trial, epoch, {"val_acc": acc, "sparsity": sparsity})
    r.finish(trial)


def test_dominates_is_strict_pareto_dominance():
    signs = (1.0, 1.0)
    assert dominates((0.9, 0.5), (0.8, 0.5), signs)
    assert not dominates((0.9, 0.5), (0.9, 0.5), signs), "equal points do not dominate"
    assert not dominates((0.9, 0.4), (0.8, 0.5), signs), "a trade-off does not dominate"
    assert dominates((0.9, 10.0), (0.9, 12.0), (1.0, -1.0)), "a minimised objective"
    assert not dominates((0.8, 10.0), (0.9, 12.0), (1.0, -1.0))


def test_stops_a_trial_dominated_by_enough_finished_trials_at_the_same_epoch():
    r = rule(min_dominating=2)
    finish(r, "a", {1: (0.90, 0.50), 2: (0.95, 0.60)})
    finish(r, "b", {1: (0.92, 0.55), 2: (0.96, 0.70)})
    # worse than both a and b at epoch 2: stopped there, not at epoch 1 (grace)
    assert not r.should_stop("c", 1, {"val_acc": 0.5, "sparsity": 0.1})
    assert r.should_stop("c", 2, {"val_acc": 0.90, "sparsity": 0.55})


def test_keeps_a_sparse_trial_that_trades_accuracy_for_sparsity():
    r = rule(min_dominating=1)
    finish(r, "a", {1: (0.90, 0.50), 2: (0.95, 0.60)})
    finish(r, "b", {1: (0.92, 0.55), 2: (0.96, 0.70)})
    # less accurate than both but sparser: on the front, so it goes on (ASHA on accuracy would stop it)
    assert not r.should_stop("sparse", 2, {"val_acc": 0.80, "sparsity": 0.99})


def test_needs_the_required_number_of_dominating_trials():
    r = rule(min_dominating=3)
    finish(r, "a", {1: (0.9, 0.5), 2: (0.95, 0.6)})
    finish(r, "b", {1: (0.9, 0.5), 2: (0.96, 0.7)})
    assert not r.should_stop("c", 2, {"val_acc": 0.5, "sparsity": 0.1}), "only 2 dominate"


def test_running_trials_and_missing_epochs_do_not_count():
    r = rule(min_dominating=1)
    r.should_stop("running", 2, {"val_acc": 0.99, "sparsity": 0.99})  # not finished
    finish(r, "short", {1: (0.99, 0.99)})                             # never reached epoch 2
    assert not r.should_stop("c", 2, {"val_acc": 0.5, "sparsity": 0.1})


def test_nan_results_are_never_stopped_by_the_rule():
    r = rule(min_dominating=1)
    finish(r, "a", {1: (0.9, 0.5), 2: (0.95, 0.6)})
    assert not r.should_stop("nan", 2, {"val_acc": float("nan"), "sparsity": 0.1})


def test_a_study_with_early_stopping_records_stopped_trials(ray_session, write_study, tmp_path):
    train = """
[train]
dataset = "synthetic"
synthetic_size = 600
val_size = 100
model = "lenet300_100"
epochs = 3
batch_size = 64
"""
    path = write_study("es", trials=8, concurrent=2, train=train, sampler="random",
                       early_stopping=True)
    text = path.read_text().replace('sampler = "random"', 'sampler = "random"\n'
                                    'early_stopping_min_dominating = 1')
    path.write_text(text)
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "es"
    trials = pd.read_parquet(folder / "results" / "trials")
    assert len(trials) == 8 and trials["trial_id"].is_unique
    assert set(trials["state"]) <= {"finished", "stopped", "diverged"}
    stopped = trials[trials["state"] == "stopped"]
    assert len(stopped) >= 1, trials[["state", "metric_val_acc", "metric_sparsity", "epochs_completed"]]
    assert (stopped["epochs_completed"] < 3).all() and stopped["metric_test_acc"].isna().all()
    epochs = pd.read_parquet(folder / "results" / "epochs")
    assert set(epochs["trial_id"]) == set(trials["trial_id"])


def test_the_rule_remembers_trials_that_finished_before_it_existed():
    """After a resume, or in an extend, the finished trials of earlier runs still count."""
    earlier = {"a": {1: {"val_acc": 0.90, "sparsity": 0.50}, 2: {"val_acc": 0.95, "sparsity": 0.60}},
               "b": {1: {"val_acc": 0.92, "sparsity": 0.55}, 2: {"val_acc": 0.96, "sparsity": 0.70}}}
    fresh = rule(min_dominating=2)
    assert not fresh.should_stop("c", 2, {"val_acc": 0.90, "sparsity": 0.55})  # knows nothing yet
    restored = rule(min_dominating=2)
    restored.remember(earlier)
    assert restored.should_stop("c", 2, {"val_acc": 0.90, "sparsity": 0.55})


def test_a_resumed_study_reads_its_finished_trials_epochs_back(tmp_path):
    from study.results import recorded_epochs
    from tests.study.test_compaction import EPOCHS, build_study
    writer = build_study(tmp_path, ended=3, running=1, parts=True)  # t0000-t0002 partly compacted
    epochs = recorded_epochs(writer.location, {"t0000", "t0002"})  # t0003 is still running
    assert set(epochs) == {"t0000", "t0002"}
    assert all(set(by_epoch) == set(range(1, EPOCHS + 1)) for by_epoch in epochs.values())
    assert epochs["t0002"][3]["val_acc"] == 0.52 and epochs["t0002"][3]["sparsity"] == 0.3


def test_the_scheduler_judges_against_the_studys_earlier_finished_trials():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from study.scheduler import make_scheduler
    from study.spec import parse_spec
    spec = parse_spec('[study]\nname = "s"\n[search]\nearly_stopping_grace_epochs = 1\n'
                      '[train]\ndataset = "synthetic"\nepochs = 4\n')
    rows = {"a": {"state": "finished"}, "b": {"state": "finished"}, "x": {"state": "stopped"}}
    earlier = {"a": {2: {"val_acc": 0.95, "sparsity": 0.60}}, "b": {2: {"val_acc": 0.96, "sparsity": 0.70}}}
    asked = []
    scheduler = make_scheduler(spec, lambda: rows, lambda ids: asked.append(ids) or earlier)
    scheduler._first_read(rows)
    assert asked == [{"a", "b"}]  # only finished trials count for the rule
    trial = SimpleNamespace(trial_id="c")
    assert scheduler.on_trial_result(None, trial, {"epoch": 2, "val_acc": 0.9, "sparsity": 0.5}) \
        == TrialScheduler.STOP


def test_the_scheduler_never_stops_a_trial_at_its_last_epoch():
    """The last epoch's result (the only one with test accuracy) is let through: the trial ran to
    the end, is recorded finished and counts among the rule's finished trials."""
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from study.scheduler import make_scheduler
    from study.spec import parse_spec
    spec = parse_spec('[study]\nname = "s"\n[search]\nearly_stopping_grace_epochs = 1\n'
                      '[train]\ndataset = "synthetic"\nepochs = 2\n')
    earlier = {"a": {2: {"val_acc": 0.95, "sparsity": 0.60}}, "b": {2: {"val_acc": 0.96, "sparsity": 0.70}}}
    rows = {"a": {"state": "finished"}, "b": {"state": "finished"}}
    scheduler = make_scheduler(spec, lambda: rows, lambda ids: earlier)
    scheduler._first_read(rows)
    last = {"epoch": 2, "val_acc": 0.9, "sparsity": 0.5, "test_acc": 0.9}
    trial = SimpleNamespace(trial_id="c")
    assert scheduler.on_trial_result(None, trial, last) == TrialScheduler.CONTINUE
    scheduler.on_trial_complete(None, trial, last)
    assert "c" in scheduler.rule.finished
    assert scheduler.on_trial_result(None, SimpleNamespace(trial_id="d"), {**last, "test_acc": None}) \
        == TrialScheduler.STOP
