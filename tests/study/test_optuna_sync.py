"""Optuna's storage tells the same story as the Parquet results: one Optuna trial per trial, with
the same number, a state that matches (finished COMPLETE, stopped PRUNED, diverged and errored
FAIL), the user attributes trial_id / state / epochs_completed, and the objective names; orphans
of a killed driver end FAIL before new trials are asked."""
from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from analysis.load import load_results
from study import search
from study.cli import main
from tests.study.conftest import study_text

IN_OPTUNA = {"finished": "COMPLETE", "stopped": "PRUNED", "diverged": "FAIL", "errored": "FAIL"}
TRAIN = """
[train]
dataset = "synthetic"
synthetic_size = 600
val_size = 100
model = "lenet300_100"
epochs = 3
batch_size = 64
"""


# -- the rules, on an in-memory Optuna study ------------------------------------------------------

@pytest.fixture
def study():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "maximize"])


@pytest.mark.parametrize("state, values, expected", [
    ("finished", [0.9, 0.5], TrialState.COMPLETE),
    ("finished", [math.nan, 0.5], TrialState.FAIL),
    ("diverged", [math.nan, 0.1], TrialState.FAIL),
    ("errored", [None, None], TrialState.FAIL),
    ("stopped", [0.8, 0.4], TrialState.PRUNED),
])
def test_an_ended_trial_gets_the_matching_state_and_attributes(study, state, values, expected):
    trial = study.ask()
    assert search.tell_ended(study, trial, trial_id="abc", state=state, values=values,
                             epochs=2) == expected
    frozen = study.trials[0]
    assert frozen.state == expected
    assert {k: frozen.user_attrs[k] for k in search.ATTRS} == {
        "trial_id": "abc", "state": state, "epochs_completed": 2}
    if expected == TrialState.COMPLETE:
        assert frozen.values == values


def test_a_trial_told_before_a_kill_is_not_told_again(study):
    trial = study.ask()
    search.tell_ended(study, trial, trial_id="abc", state="finished", values=[0.9, 0.5], epochs=3)
    assert search.tell_ended(study, trial, trial_id="abc", state="stopped", values=[0.1, 0.1],
                             epochs=1) is None
    assert study.trials[0].state == TrialState.COMPLETE
    assert study.trials[0].user_attrs["state"] == "finished"


def test_orphans_fail_and_live_trials_stay_running(study):
    live, orphan = study.ask(), study.ask()
    done = study.ask()
    study.tell(done, [0.5, 0.5])
    assert search.fail_orphans(study, live={live.number}) == [orphan.number]
    states = {t.number: t.state for t in study.trials}
    assert states == {live.number: TrialState.RUNNING, orphan.number: TrialState.FAIL,
                      done.number: TrialState.COMPLETE}
    assert study.trials[orphan.number].user_attrs["state"] == search.ORPHANED


# -- a whole study ----------------------------------------------------------------------------------

def _compare(folder, name: str):
    """Every results row against its Optuna trial; returns both."""
    trials = load_results([str(folder)]).trials.set_index("trial_number").sort_index()
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna' / 'optuna.db'}")
    ot = optuna.load_study(study_name=name, storage=storage)
    assert ot.metric_names == ["val_acc", "sparsity"]
    by_number = {t.number: t for t in ot.trials}
    for number, row in trials.iterrows():
        t = by_number[number]
        assert t.state.name == IN_OPTUNA[row["state"]], (number, row["state"], t.state)
        assert t.user_attrs["trial_id"] == row["trial_id"]
        assert t.user_attrs["state"] == row["state"]
        assert t.user_attrs["epochs_completed"] == row["epochs_completed"]
        if row["state"] == "finished":
            assert t.values == pytest.approx([row["metric_val_acc"], row["metric_sparsity"]])
    return trials, ot


def test_optuna_storage_matches_the_results(ray_session, tmp_path):
    # One trial at a time from a seeded grid: the same trials, in the same order, every run.
    # lr = 1e30 overflows in the first epoch (those trials diverge, a NaN objective); a trial
    # with little lam is stopped at epoch 2 when a sparser one finished before it (early stopping).
    text = study_text("sync", tmp_path / "studies", trials=8, concurrent=1, sampler="grid",
                      early_stopping=True, train=TRAIN)
    text = text.replace('sampler = "grid"', 'sampler = "grid"\nearly_stopping_min_dominating = 1')
    for param, values in (("lam", "[1e-6, 1e-4, 2e-3]"), ("beta", "[1.0, 2.0]"),
                          ("lr", "[0.005, 1e30]")):
        start = text.index(f"[search.params.{param}]")
        end = text.index("log = true", start) + len("log = true")
        text = text[:start] + f"[search.params.{param}]\nvalues = {values}" + text[end:]
    path = tmp_path / "sync.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "sync"

    trials, ot = _compare(folder, "sync")
    assert len(ot.trials) == len(trials) == 8
    assert sorted(trials.index) == list(range(8))
    states = set(trials["state"])
    assert {"finished", "diverged", "stopped"} <= states, trials[["state", "param_lr"]]
    assert (trials.loc[trials["state"] == "diverged", "param_lr"] == 1e30).all()
    print(f"\nresults {trials['state'].value_counts().to_dict()}; Optuna "
          f"{pd.Series([t.state.name for t in ot.trials]).value_counts().to_dict()}")

    # an orphan of a killed driver: asked for, never told; the next run fails it before it asks
    orphan = ot.ask()
    assert main(["extend", str(folder), "--trials", "1"]) == 0
    trials, ot = _compare(folder, "sync")
    assert ot.trials[orphan.number].state == TrialState.FAIL
    assert ot.trials[orphan.number].user_attrs["state"] == search.ORPHANED
    assert len(trials) == 9 and len(ot.trials) == 10
    assert trials.index.max() == orphan.number + 1, "numbers are Optuna's: the orphan's is skipped"
    assert not any(t.state == TrialState.RUNNING for t in ot.trials)


@pytest.mark.parametrize("how", ["copied", "moved"])
def test_a_restored_searcher_tells_the_database_where_the_study_is_now(tmp_path, how):
    """Tune restores the searcher pickled where the run began; a study copied since must tell
    its own Optuna database, never the original's, and a moved one must restore at all (the
    pickled storage used to connect to the old path while being unpickled)."""
    import pickle
    import shutil

    from optuna.distributions import FloatDistribution

    from study.searcher import StudySearch
    here, there = tmp_path / "original", tmp_path / "copy"
    here.mkdir()
    searcher = StudySearch(objectives=["val_acc", "sparsity"], space={"lr": FloatDistribution(1e-3, 1e-2)},
                           metric=["val_acc", "sparsity"], mode=["max", "max"],
                           sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                           storage=search.open_storage(here))
    searcher.suggest("t1")
    searcher.save(str(tmp_path / "searcher.pkl"))
    pickled = pickle.dumps(searcher)  # as Tune's tuner.pkl holds it
    (shutil.copytree if how == "copied" else shutil.move)(here, there)
    restored = pickle.loads(pickled)
    restored.rebind(search.open_storage(there))
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("t1", {"val_acc": 0.9, "sparsity": 0.5, "test_acc": 0.9, "epoch": 1})

    def states(folder) -> list[str]:
        return [t.state.name for t in optuna.load_study(study_name="s", storage=search.storage_url(folder)).trials]
    assert states(there) == ["COMPLETE"]
    if how == "copied":
        assert states(here) == ["RUNNING"]
    else:
        assert not here.exists(), "nothing is created where the study was"


def test_the_grid_samplers_last_trial_is_told_without_error():
    """Optuna's GridSampler calls study.stop() when its grid is done, which raises outside
    Study.optimize: the last grid trial of a study used to fail inside Tune and start over."""
    import optuna

    from study.search import make_sampler, search_space, tell_ended
    from study.spec import parse_spec
    spec = parse_spec('[study]\nname = "g"\ntrials = 2\n[search]\nsampler = "grid"\n'
                      '[search.params.lam]\nvalues = [1e-4, 2e-4]\n[train]\ndataset = "synthetic"\n')
    study = optuna.create_study(directions=["maximize", "maximize"], sampler=make_sampler(spec, seed=0))
    for number in range(2):
        trial = study.ask(fixed_distributions=search_space(spec))
        tell_ended(study, trial, trial_id=f"t{number}", state="finished", values=[0.9, 0.5], epochs=1)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2


def test_an_error_while_optuna_is_told_does_not_reach_tune(tmp_path, caplog):
    """Tune runs a trial again from scratch when the searcher raises in its completion (and the
    re-run overwrites the epochs it recorded): the searcher logs the error and the trial stays
    ended, told once, in the state Optuna stored before the sampler raised."""
    from optuna.distributions import FloatDistribution

    from study.searcher import StudySearch

    class Raising(optuna.samplers.RandomSampler):
        def after_trial(self, study, trial, state, values):
            raise RuntimeError("sampler\nbroke")

    searcher = StudySearch(objectives=["val_acc", "sparsity"], space={"lr": FloatDistribution(1e-3, 1e-2)},
                           metric=["val_acc", "sparsity"], mode=["max", "max"],
                           sampler=Raising(seed=0), study_name="s", storage=search.open_storage(tmp_path))
    searcher.suggest("t1")
    with caplog.at_level("WARNING", logger="study.searcher"):
        searcher.on_trial_complete("t1", {"val_acc": 0.9, "sparsity": 0.5, "test_acc": 0.9, "epoch": 1})
        searcher.on_trial_complete("t1", {"val_acc": 0.1, "sparsity": 0.1, "test_acc": 0.1, "epoch": 1})
    assert [r.getMessage() for r in caplog.records] == [
        "Optuna could not record trial t1 as finished (RuntimeError: sampler broke); its results are kept"]
    (trial,) = optuna.load_study(study_name="s", storage=search.storage_url(tmp_path)).trials
    assert trial.state == TrialState.COMPLETE and trial.values == [0.9, 0.5]
