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
DIAGNOSTICS = ("val_acc_dense", "val_acc_complement")  # None on epochs between diagnostics_every


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
        assert all(type(v) in (int, float, bool, str) for k, v in m.items() if k not in DIAGNOSTICS)
        assert all(0 <= m[k] <= 1 for k in ("val_acc", "sparsity", "sparsity_all"))
        assert type(m["nonzeros"]) is int and type(m["params"]) is int and m["diverged"] is False
        assert m["compression"] == m["params"] / m["nonzeros"]
        assert set(json.loads(m["layer_sparsity_json"])) == {"conv1.weight", "conv2.weight", "fc1.weight",
                                                              "fc2.weight"}
    assert metrics[-1]["val_acc"] > 0.9  # the synthetic classes are separable


@pytest.mark.parametrize("every, measured", [(1, [1, 2, 3, 4, 5]), (2, [2, 4, 5]), (5, [5]), (9, [5])])
def test_diagnostic_passes_run_every_k_epochs_and_at_the_last_with_none_in_between(every, measured):
    metrics, _ = run(tiny_config(epochs=5, diagnostics_every=every))
    for m in metrics:
        if m["epoch"] in measured:
            assert all(type(m[k]) is float and 0 <= m[k] <= 1 for k in DIAGNOSTICS)
        else:
            assert all(m[k] is None for k in DIAGNOSTICS)
        assert type(m["val_acc"]) is float  # u is validated every epoch: the objective needs it


def test_skipping_the_diagnostic_passes_changes_no_other_metric():
    every_epoch, _ = run(tiny_config(epochs=3, diagnostics_every=1))
    default, _ = run(tiny_config(epochs=3))
    strip = lambda ms: [{k: v for k, v in m.items() if k not in DIAGNOSTICS} for m in without_timing(ms)]  # noqa: E731
    assert strip(every_epoch) == strip(default)
    assert without_timing(every_epoch)[-1] == without_timing(default)[-1]


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


# --- per-tensor thresholds, the ramp and masked fine-tuning (issue 11) -----------------------

LENET5_SPARSIFIED = ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")


def layer_thresholds(m: dict) -> dict[str, float]:
    return json.loads(m["layer_threshold_json"])


def test_by_default_every_tensor_gets_the_one_threshold_and_naming_it_changes_nothing():
    t = math.sqrt(2 * 1e-3 / 0.5)
    default, _ = run(tiny_config(epochs=2, lam=1e-3, beta=0.5))
    assert all(layer_thresholds(m) == dict.fromkeys(LENET5_SPARSIFIED, t) for m in default)
    explicit, _ = run(tiny_config(epochs=2, lam=1e-3, beta=0.5, threshold_scale="global",
                                  threshold_multipliers={"conv1": 1.0, "fc*": 1.0}, ramp_epochs=0))
    assert without_timing(explicit) == without_timing(default)


def test_a_threshold_given_directly_derives_lambda_and_trains_like_that_lambda():
    config = tiny_config(epochs=1, threshold=0.03, beta=2.0)
    assert config.lam == pytest.approx(2.0 * 0.03 ** 2 / 2)
    metrics, _ = run(config)
    assert metrics[-1]["threshold"] == 0.03
    assert set(layer_thresholds(metrics[-1]).values()) == {0.03}


@pytest.mark.parametrize("scale_kind", ["std", "fan_in"])
def test_per_tensor_thresholds_are_t_times_scale_times_multiplier_and_cut_u(scale_kind):
    config = tiny_config(epochs=1, lam=1e-2, threshold_scale=scale_kind, threshold_multipliers={"fc2": 3.0})
    metrics, states = run(config)
    t, per = metrics[-1]["threshold"], layer_thresholds(metrics[-1])
    torch.manual_seed(config.seed)  # the network as initialised: s_l comes from it
    from trainables.models import build_model
    w0 = dict(build_model("lenet5", in_shape=states[-1]["in_shape"], num_classes=10).named_parameters())
    for name in LENET5_SPARSIFIED:
        s = w0[name].std().item() if scale_kind == "std" else 1 / math.sqrt(w0[name][0].numel())
        assert per[name] == pytest.approx(t * s * (3.0 if name == "fc2.weight" else 1.0), rel=1e-6)
    u = sparse_weights(states[-1])
    for name in LENET5_SPARSIFIED:  # u keeps exactly the entries above its own tensor's threshold
        w = states[-1]["model"][name]
        assert torch.equal(u[name] != 0, w.abs() > per[name])
    assert len(set(per.values())) == 4


def test_a_multiplier_naming_no_sparsified_tensor_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^threshold_multipliers: \['conv9'\]"):
        run(tiny_config(threshold_multipliers={"conv9": 2.0}))


@pytest.mark.parametrize("ramp, shares", [("linear", [0.5, 1.0, 1.0]), ("cubic", [0.875, 1.0, 1.0])])
def test_the_ramp_raises_every_threshold_from_zero_over_ramp_epochs(ramp, shares):
    t = math.sqrt(2 * 1e-3)
    metrics, _ = run(tiny_config(epochs=3, lam=1e-3, ramp_epochs=2, ramp=ramp))
    assert [m["threshold"] for m in metrics] == pytest.approx([t * s for s in shares])
    for m in metrics:
        assert list(layer_thresholds(m).values()) == pytest.approx([m["threshold"]] * 4)
    assert metrics[0]["sparsity"] <= metrics[-1]["sparsity"]


def test_ramp_epochs_longer_than_the_run_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^ramp_epochs=4 is longer than the run"):
        tiny_config(epochs=3, ramp_epochs=4)


def test_fine_tuning_freezes_the_support_so_no_frozen_zero_becomes_non_zero():
    config = tiny_config(epochs=2, finetune_epochs=2, lam=2e-4, finetune_lr_factor=0.5, weight_decay=1e-3)
    metrics, states = run(config)
    assert [m["epoch"] for m in metrics] == [1, 2, 3, 4] and "test_acc" in metrics[-1]
    assert states[1]["masks"] is None and states[2]["masks"] is not None
    frozen = sparse_weights(states[1])  # u after the RVSM epochs
    for state in states[2:]:
        u = sparse_weights(state)
        for name in LENET5_SPARSIFIED:
            mask = state["masks"][name]
            assert torch.equal(mask != 0, frozen[name] != 0)  # the support of the last RVSM u
            assert not u[name][mask == 0].any()              # frozen zeros stay zero
            assert torch.equal(u[name], state["model"][name])  # the kept model is u = w
    assert all(0 < s < 1 for s in json.loads(metrics[1]["layer_sparsity_json"]).values())
    last = sparse_weights(states[-1])
    assert all(not torch.equal(last[name], frozen[name]) for name in LENET5_SPARSIFIED)  # non-zeros trained
    assert metrics[-1]["nonzeros"] == metrics[1]["nonzeros"]
    assert metrics[-1]["threshold"] == metrics[1]["threshold"]


def test_fine_tuning_runs_at_its_own_learning_rate_factor():
    from trainables.train import lr_factor
    f = partial(lr_factor, schedule="cosine", total_steps=8, finetune_steps=4, finetune_lr_factor=0.1)
    assert f(0) == 1.0 and f(8) == pytest.approx(0.1) and f(10) == pytest.approx(0.05) and f(12) == 0.0


def test_fine_tuning_needs_whole_epochs():
    with pytest.raises(ConfigError, match=r"^finetune_epochs=1 follows whole RVSM epochs"):
        tiny_config(finetune_epochs=1, max_steps=3)


class StopAt:
    """Saves the state of epoch `epoch`, then crashes."""

    def __init__(self, epoch: int):
        self.epoch, self.file = epoch, io.BytesIO()

    def __call__(self, metrics: dict, state: dict) -> None:
        if metrics["epoch"] == self.epoch:
            torch.save(state, self.file)
            raise Interrupted

    def state(self) -> dict:
        return torch.load(io.BytesIO(self.file.getvalue()), weights_only=True)


@pytest.mark.parametrize("changes, stop", [
    (dict(epochs=3, ramp_epochs=3, ramp="cubic", threshold_scale="std", threshold_multipliers={"fc1": 2.0}), 1),
    (dict(epochs=2, ramp_epochs=1, ramp="linear", finetune_epochs=2, schedule="cosine"), 2),  # at the boundary
    (dict(epochs=1, finetune_epochs=3, threshold_scale="fan_in"), 2),  # mid fine-tuning
])
def test_a_run_resumed_mid_ramp_or_mid_fine_tuning_ends_exactly_like_an_uninterrupted_one(changes, stop):
    config = tiny_config(lam=1e-3, **changes)
    whole, _ = run(config)
    stopper = StopAt(stop)
    with pytest.raises(Interrupted):
        train(config, stopper)
    rest, _ = run(config, state=stopper.state())
    assert [m["epoch"] for m in rest] == [m["epoch"] for m in whole[stop:]]
    assert without_timing(rest) == without_timing(whole[stop:])
