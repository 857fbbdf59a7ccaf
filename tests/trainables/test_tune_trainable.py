"""The Ray Tune adapter, without a Ray cluster: its checkpoints are data (loaded with
weights_only=True) that resume a trial exactly, and a configuration that cannot run is reported
once as the trial's error instead of raised for FailureConfig to retry."""
from __future__ import annotations

import itertools
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from ray import tune

from analysis.schema import EPOCH_METRICS
from trainables import tune_trainable
from trainables.tune_trainable import STATE_FILE, TRIAL_ERROR, rvsm_trainable

from .helpers import tiny_config

TIMING = ("epoch_time_s", "samples_per_s", "node", "device")


@pytest.fixture
def session(monkeypatch, tmp_path):
    """Stands in for Tune's session: keeps every reported result and a copy of its checkpoint."""
    reports: list[tuple[dict, Path | None]] = []
    numbers = itertools.count()

    def report(metrics, checkpoint=None):
        kept = None
        if checkpoint is not None:
            kept = tmp_path / f"checkpoint_{next(numbers)}"
            shutil.copytree(checkpoint.path, kept)
        reports.append((dict(metrics), kept))

    monkeypatch.setattr(tune_trainable.tune, "report", report)
    monkeypatch.setattr(tune_trainable.tune, "get_checkpoint", lambda: None)
    monkeypatch.setattr(tune_trainable, "_limit_threads", lambda: None)
    monkeypatch.setattr(tune_trainable, "_node_name", lambda: "node")
    return reports


def _without_timing(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_a_trial_resumed_from_its_checkpoint_ends_exactly_like_an_uninterrupted_one(session, monkeypatch):
    config = tiny_config(epochs=2, model="lenet300_100").to_dict()
    rvsm_trainable(config)
    (first, checkpoint), (whole, _) = session
    assert first["epoch"] == 1 and whole["epoch"] == 2
    # the state holds only tensors and plain values: weights_only=True reads it
    state = torch.load(checkpoint / STATE_FILE, weights_only=True)
    assert isinstance(state["state"]["order"], torch.Tensor)  # the data-order generator's state
    assert set(state["state"]["optimizer"]) == {"state", "param_groups"}

    session.clear()
    monkeypatch.setattr(tune_trainable.tune, "get_checkpoint",
                        lambda: tune.Checkpoint.from_directory(str(checkpoint)))
    rvsm_trainable(config)
    assert [m["epoch"] for m, _ in session] == [2]
    assert _without_timing(session[0][0]) == _without_timing(whole)


def test_a_checkpoint_that_holds_code_is_refused(session, monkeypatch, tmp_path):
    folder = tmp_path / "evil"
    folder.mkdir()
    torch.save({"state": {}, "metrics": {}, "call": shutil.rmtree}, folder / STATE_FILE)
    monkeypatch.setattr(tune_trainable.tune, "get_checkpoint",
                        lambda: tune.Checkpoint.from_directory(str(folder)))
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        tune_trainable._load_checkpoint()


def test_a_configuration_that_cannot_run_is_reported_once_not_raised(session, tmp_path):
    rvsm_trainable({"dataset": "mnist", "data_root": str(tmp_path / "nowhere"), "device": "cpu"})
    assert len(session) == 1
    metrics, checkpoint = session[0]
    assert checkpoint is None and metrics[TRIAL_ERROR].startswith("DatasetNotFound: mnist not found")
    assert metrics["epoch"] == 0 and set(EPOCH_METRICS) <= set(metrics)  # Tune requires the keys
    assert all(metrics[name] is None for name in EPOCH_METRICS if name not in ("epoch", "step"))


def test_the_results_record_such_a_trial_errored_with_its_message():
    from study.results import ended_state
    assert ended_state({TRIAL_ERROR: "ConfigError: device='cuda:3' is not available here"}) == "errored"
    assert ended_state({"test_acc": 0.9}) == "finished"
