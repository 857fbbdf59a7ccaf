"""A study end to end on the shared local Ray: rows in Parquet, extend, status."""
from __future__ import annotations

import json

import optuna
import pandas as pd

from study.cli import main


def trials_of(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "results" / "trials")


def epochs_of(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "results" / "epochs")


def test_study_writes_one_row_per_trial_and_epoch_rows(ray_session, write_study, tmp_path, capsys):
    path = write_study("e2e", trials=6, concurrent=2)
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "e2e"
    trials = trials_of(folder)
    assert len(trials) == 6 and trials["trial_id"].is_unique
    assert sorted(trials["trial_number"]) == list(range(6))
    assert set(trials["state"]) <= {"finished", "diverged"}
    assert trials["param_lam"].between(1e-6, 1e-2).all()
    assert trials["param_beta"].between(0.1, 10.0).all()
    assert trials["param_lr"].between(1e-3, 1e-2).all()
    assert (trials["param_model"] == "lenet300_100").all()  # fixed fields are recorded too
    assert set(json.loads(trials["searched_json"].iloc[0])) == {"lam", "beta", "lr"}
    assert trials["node"].notna().all() and (trials["device"] == "cpu").all()
    assert trials["ended_at"].notna().all() and (trials["ended_at"] >= trials["started_at"]).all()
    finished = trials[trials["state"] == "finished"]
    assert finished["metric_test_acc"].notna().all()
    epochs = epochs_of(folder)
    per_trial = epochs.groupby("trial_id")["metric_epoch"].apply(sorted)
    assert set(per_trial.index) == set(trials["trial_id"])
    assert all(e == [1, 2] for tid, e in per_trial.items()
               if trials.set_index("trial_id").loc[tid, "state"] == "finished")
    out = capsys.readouterr().out
    assert out.count("finished:") + out.count("diverged:") == 6
    assert "[6/6]" in out and "hypervolume" in out

    # extend: exactly N more, and Optuna's own storage holds every trial
    assert main(["extend", str(folder), "--trials", "3"]) == 0
    trials = trials_of(folder)
    assert len(trials) == 9 and trials["trial_id"].is_unique
    assert sorted(trials["trial_number"]) == list(range(9))
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'optuna' / 'optuna.db'}")
    ot = optuna.load_study(study_name="e2e", storage=storage)
    assert len(ot.trials) == 9
    assert all(t.state.is_finished() for t in ot.trials)
    capsys.readouterr()
    assert main(["status", str(folder)]) == 0
    status = capsys.readouterr().out
    assert "9/9 recorded" in status and "Pareto front" in status


def test_running_a_study_twice_is_refused(ray_session, write_study, tmp_path, capsys):
    path = write_study("twice", trials=1, concurrent=1)
    assert main(["run", str(path)]) == 0
    assert main(["run", str(path)]) == 2
    assert "already exists" in capsys.readouterr().err
