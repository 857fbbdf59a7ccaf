"""TrainConfig: defaults, validation messages that name field, value and what is allowed, plain-data
round trips, presets, and a docs table that lists every field."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from trainables.config import FIELD_NAMES, ConfigError, TrainConfig
from trainables.presets import PRESETS
from trainables.train import METRIC_ORDER

DOCS = Path(__file__).resolve().parents[2] / "docs" / "training.md"


def test_defaults_are_valid_and_frozen():
    config = TrainConfig()
    assert (config.dataset, config.model, config.rule, config.sparsify) == ("mnist", "lenet5", "modified", "all")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0


@pytest.mark.parametrize("field, value, allowed", [
    ("dataset", "imagenet", "'mnist', 'fashion_mnist', 'cifar10', 'synthetic'"),
    ("model", "resnet", "'lenet5', 'lenet300_100', 'notebook_cnn'"),
    ("init", "xavier", "'default', 'normal'"),
    ("rule", "admm", "'classic', 'modified'"),
    ("optimizer", "rmsprop", "'adam', 'sgd'"),
    ("schedule", "step", "'constant', 'cosine'"),
    ("lam", -1e-4, ">= 0"),
    ("beta", 0.0, "> 0"),
    ("lr", -0.1, "> 0"),
    ("lr", float("nan"), "> 0"),
    ("momentum", 1.0, "[0, 1)"),
    ("dropout", 1.0, "[0, 1)"),
    ("weight_decay", -1.0, ">= 0"),
    ("epochs", 0, "[1, 1000000]"),
    ("epochs", 10**7, "[1, 1000000]"),
    ("lr", float("inf"), "> 0"),
    ("lam", float("-inf"), ">= 0"),
    ("beta", float("nan"), "> 0"),
    ("max_steps", -1, "[0, 1000000000000]"),
    ("batch_size", 0, "[1, 1000000000]"),
    ("eval_batch_size", 0, "[1, 1000000000]"),
    ("val_size", 0, "[1, 1000000000]"),
    ("train_subset", -5, "[0, 1000000000]"),
    ("synthetic_size", 5, "[10, 1000000]"),
    ("synthetic_size", 10**9, "[10, 1000000]"),
    ("seed", -1, "[0, 4294967295]"),
    ("seed", 2**32, "[0, 4294967295]"),
    ("data_seed", -1, "[0, 4294967295]"),
    ("device", "tpu", "'auto', 'cpu', 'cuda', 'cuda:N'"),
    ("sparsify", "conv", "'all', 'fc1'"),
])
def test_a_bad_value_is_named_with_what_is_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as error:
        TrainConfig(**{field: value})
    message = str(error.value)
    assert message.startswith(f"{field}={value!r}") and allowed in message


@pytest.mark.parametrize("field, value, expected", [
    ("epochs", 2.5, "int"), ("epochs", True, "int"), ("lr", "fast", "float"), ("download", "yes", "bool"),
    ("data_root", 3, "str"), ("sparsify", 7, "'all', 'fc1' or a non-empty list"), ("sparsify", [], "non-empty"),
])
def test_a_wrong_type_is_named_with_the_expected_type(field, value, expected):
    with pytest.raises(ConfigError, match=rf"^{field}=.*expected .*{expected}"):
        TrainConfig.from_dict({field: value})


def test_unknown_keys_are_named_and_the_known_ones_listed():
    with pytest.raises(ConfigError) as error:
        TrainConfig.from_dict({"lamda": 1e-3, "lr": 0.1})
    assert "'lamda'" in str(error.value) and "known fields: dataset, data_root" in str(error.value)


def test_fields_that_only_one_choice_uses_are_refused_elsewhere():
    with pytest.raises(ConfigError, match="^dropout=0.5: only model 'notebook_cnn'"):
        TrainConfig(model="lenet5", dropout=0.5)
    with pytest.raises(ConfigError, match="^coupling=True applies to rule 'modified' only"):
        TrainConfig(rule="classic", coupling=True)
    with pytest.raises(ConfigError, match="^notebook_dense_pass=True applies"):
        TrainConfig(rule="classic", notebook_dense_pass=True)


def test_plain_data_is_converted_and_round_trips_through_json():
    config = TrainConfig.from_dict({"lr": 1, "sparsify": ["conv1", "fc1.weight"], "epochs": 3})
    assert config.lr == 1.0 and isinstance(config.lr, float)
    assert config.sparsify == ("conv1", "fc1.weight")
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_numpy_scalars_from_a_search_space_are_accepted():
    np = pytest.importorskip("numpy")
    config = TrainConfig.from_dict({"lam": np.float64(1e-3), "batch_size": np.int64(64)})
    assert type(config.lam) is float and type(config.batch_size) is int


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_configs(name):
    TrainConfig.from_dict(PRESETS[name])


def test_the_notebook_preset_is_the_notebook():
    config = TrainConfig.from_dict(PRESETS["notebook"])
    assert (config.model, config.init, config.rule, config.sparsify, config.notebook_dense_pass) == (
        "notebook_cnn", "normal", "modified", "fc1", True)
    assert (config.optimizer, config.lr, config.lam, config.beta, config.batch_size, config.dropout,
            config.max_steps, config.normalize, config.epochs) == ("adam", 1e-3, 5e-4, 0.1, 128, 0.25,
                                                                   500, False, 2)


def test_the_docs_table_lists_every_field_and_every_metric():
    docs = DOCS.read_text()
    missing = [f for f in FIELD_NAMES if f"| `{f}` |" not in docs]
    missing += [m for m in METRIC_ORDER if f"`{m}`" not in docs]
    assert not missing
