"""train(): the metrics contract, determinism, exact resume, divergence, and the notebook replica."""
from __future__ import annotations

import io
import json
import math
import time
from functools import partial

import pytest
import torch

from trainables.config import ConfigError, TrainConfig
from trainables.presets import PRESETS
from trainables.rvsm import measure_sparsity
from trainables.train import METRIC_ORDER, sparse_weights, train
from .helpers import tiny_config

EPOCH_KEYS = set(METRIC_ORDER) - {"test_acc", "test_acc_dense"}
TIMING = {"epoch_time_s", "samples_per_s"}


def run(config: TrainConfig, state: dict | None = None) -> tuple[list[dict], list[dict]]:
    reports: list[tuple[dict, dict]] = []
    returned = train(config, lambda metrics, state: reports.append((metrics, state)), state=state)
    assert returned == reports[-1][0]
    return [m for m, _ in reports], [s for _, s in reports]


class Interrupted(Exception):
    pass


def save_then_stop(file: io.BytesIO, metrics: dict, state: dict) -> None:
    """The first epoch's state survives storage (and loads without pickled code); then a crash."""
    torch.save(state, file)
    raise Interrupted


def without_timing(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k not in TIMING} for m in metrics]


def test_every_epoch_reports_exactly_the_agreed_metrics():
    metrics, _ = run(tiny_config(epochs=3))
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert [m["step"] for m in metrics] == [4, 8, 12]  # 256 images, batches of 64
    assert all(set(m) == EPOCH_KEYS for m in metrics[:-1])
    assert set(metrics[-1]) == EPOCH_KEYS | {"test_acc", "test_acc_dense"}
    for m in metrics:
        assert all(type(v) in (int, float, bool, str) for v in m.values())
        assert all(0 <= m[k] <= 1 for k in ("val_acc", "val_acc_dense", "val_acc_complement", "sparsity",
                                            "sparsity_all"))
        assert type(m["nonzeros"]) is int and type(m["params"]) is int and m["diverged"] is False
        assert m["compression"] == m["params"] / m["nonzeros"]
        assert set(json.loads(m["layer_sparsity_json"])) == {"conv1.weight", "conv2.weight", "fc1.weight",
                                                              "fc2.weight"}
    assert metrics[-1]["val_acc"] > 0.9  # the synthetic classes are separable


def test_reported_sparsity_is_measure_sparsity_of_the_kept_model():
    metrics, states = run(tiny_config(epochs=1, lam=1e-3, sparsify="fc1"))
    u = sparse_weights(states[-1])
    s = measure_sparsity(u, ["fc1.weight"])
    assert (s.sparsity, s.nonzeros, json.loads(metrics[-1]["layer_sparsity_json"])) == (
        metrics[-1]["sparsity"], metrics[-1]["nonzeros"], s.layers)
    assert metrics[-1]["threshold"] == math.sqrt(2 * 1e-3 / 1.0)
    assert not (u["fc1.weight"].abs() <= metrics[-1]["threshold"]).logical_and(u["fc1.weight"] != 0).any()


def test_lambda_zero_is_dense_training():
    metrics, _ = run(tiny_config(epochs=1, lam=0.0))
    assert metrics[-1]["threshold"] == 0.0 and metrics[-1]["sparsity"] < 1e-3
    assert metrics[-1]["val_acc"] == metrics[-1]["val_acc_dense"]


def test_the_same_seed_gives_the_same_metrics():
    config = tiny_config(epochs=2, seed=3)
    assert without_timing(run(config)[0]) == without_timing(run(config)[0])
    assert without_timing(run(config)[0]) != without_timing(run(config.replace(seed=4))[0])


@pytest.mark.parametrize("changes", [
    dict(rule="modified", optimizer="adam", schedule="cosine"),
    dict(rule="classic", optimizer="sgd", model="lenet300_100", weight_decay=1e-4),
    dict(model="notebook_cnn", dropout=0.25, notebook_dense_pass=True, sparsify="fc1", synthetic_size=96,
         batch_size=32, val_size=32),
])
def test_a_resumed_run_ends_exactly_like_an_uninterrupted_one(changes):
    config = tiny_config(epochs=3, **changes)
    whole, _ = run(config)
    saved = io.BytesIO()
    with pytest.raises(Interrupted):
        train(config, partial(save_then_stop, saved))
    state = torch.load(io.BytesIO(saved.getvalue()), weights_only=True)
    rest, _ = run(config, state=state)
    assert [m["epoch"] for m in rest] == [2, 3]
    assert without_timing(rest) == without_timing(whole[1:])


def test_resuming_a_finished_run_returns_its_last_metrics():
    metrics, states = run(tiny_config(epochs=1))
    reports = []
    assert train(tiny_config(epochs=1), lambda m, s: reports.append(m), state=states[-1]) == metrics[-1]
    assert reports == []


def test_max_steps_stops_mid_epoch_and_reports_that_epoch_as_the_last():
    metrics, _ = run(tiny_config(epochs=5, max_steps=6))
    assert [(m["epoch"], m["step"]) for m in metrics] == [(1, 4), (2, 6)]
    assert "test_acc" in metrics[-1]


def test_a_diverging_run_reports_it_once_and_returns():
    metrics, _ = run(tiny_config(epochs=3, optimizer="sgd", lr=1e6, model="lenet300_100"))
    assert metrics[-1]["diverged"] is True and len(metrics) == 1
    assert math.isnan(metrics[-1]["train_loss"]) and "test_acc" not in metrics[-1]
    assert set(metrics[-1]) == EPOCH_KEYS


def test_unknown_sparsify_names_fail_at_train_time_naming_the_field():
    with pytest.raises(ConfigError, match=r"^sparsify=\['conv9'\]"):
        run(tiny_config(sparsify=["conv9"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_it_names_the_device_field():
    with pytest.raises(ConfigError, match="^device='cuda' is not available"):
        run(tiny_config(device="cuda"))


@pytest.mark.slow
def test_the_notebook_replica_zeroes_about_eight_percent_of_fc1():
    """500 Adam steps barely move N(0, 1) weights, so fc1's zeros are P(|N(0,1)| <= 0.1) = 7.97%."""
    config = TrainConfig.from_dict({**PRESETS["notebook"], "dataset": "synthetic", "synthetic_size": 32000,
                                    "val_size": 500, "device": "cpu"})
    start = time.perf_counter()
    metrics, _ = run(config)
    assert metrics[-1]["step"] == 500 and metrics[-1]["threshold"] == pytest.approx(0.1)
    assert metrics[-1]["sparsity"] == pytest.approx(0.0797, abs=0.01)
    assert json.loads(metrics[-1]["layer_sparsity_json"]).keys() == {"fc1.weight"}
    print(f"notebook replica: {time.perf_counter() - start:.0f} s, fc1 sparsity {metrics[-1]['sparsity']:.4f}")
