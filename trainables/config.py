"""The training configuration: one frozen, validated dataclass, the single source of its fields.

Every field carries its help text and its allowed values, so the CLI flags, the error messages
and the docs table all come from here. A study file (TOML) is parsed once, at the edge, into a
`TrainConfig`; nothing downstream re-validates.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from .models import MODELS

DATASETS = ("mnist", "fashion_mnist", "cifar10", "synthetic")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


class ConfigError(ValueError):
    """A configuration value is wrong; the message names the field, the value and what is allowed."""


@dataclass(frozen=True)
class Range:
    """An interval of allowed numbers; `str` renders it for error messages ("[0, 1)", "> 0")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return False
        return self.high is None or (value < self.high or (not self.high_open and value == self.high))

    def __str__(self) -> str:
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def _field(default: Any, help: str, *, choices: tuple | None = None, range: Range | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "range": range})


NONNEGATIVE, POSITIVE, AT_LEAST_ONE = Range(0), Range(0, low_open=True), Range(1)
UNIT_INTERVAL_OPEN = Range(0, 1, high_open=True)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; two equal configs give the same run (on CPU)."""

    # data
    dataset: str = _field("mnist", "dataset to train on", choices=DATASETS)
    data_root: str = _field("data", "folder holding the datasets in torchvision's layout")
    download: bool = _field(False, "download the dataset into data_root when it is missing")
    val_size: int = _field(5000, "training images held out for validation", range=AT_LEAST_ONE)
    data_seed: int = _field(0, "seed of the validation split and of train_subset", range=NONNEGATIVE)
    normalize: bool = _field(True, "standardise pixels with the training split's mean and std")
    train_subset: int = _field(0, "train on a fixed seeded subset of this size (0 = all)", range=NONNEGATIVE)
    synthetic_size: int = _field(2000, "training images of the synthetic dataset (after validation)",
                                 range=Range(10))
    # model
    model: str = _field("lenet5", "network architecture", choices=tuple(MODELS))
    init: str = _field("default", "'default' = PyTorch's; 'normal' = every parameter N(0, 1), as the notebook",
                       choices=("default", "normal"))
    dropout: float = _field(0.0, "drop probability of notebook_cnn's dropout layer", range=UNIT_INTERVAL_OPEN)
    # RVSM
    rule: str = _field("modified", "RVSM update rule", choices=("classic", "modified"))
    lam: float = _field(1e-4, "lambda, the l0 penalty weight (0 = plain training)", range=NONNEGATIVE)
    beta: float = _field(1.0, "beta, the weight coupling w and u", range=POSITIVE)
    sparsify: str | tuple[str, ...] = _field(
        "all", "tensors to sparsify: 'all' conv and linear weights, 'fc1', or a list of names")
    coupling: bool = _field(False, "modified rule: add beta (w - u) to the gradient")
    notebook_dense_pass: bool = _field(
        False, "modified rule: non-sparsified tensors take their gradient from a dense pass at w")
    # optimisation
    optimizer: str = _field("adam", "optimizer", choices=("adam", "sgd"))
    lr: float = _field(1e-3, "learning rate", range=POSITIVE)
    momentum: float = _field(0.9, "SGD momentum (unused by adam)", range=UNIT_INTERVAL_OPEN)
    weight_decay: float = _field(0.0, "L2 weight decay applied by the optimizer", range=NONNEGATIVE)
    schedule: str = _field("constant", "learning-rate schedule; cosine decays to 0 over all steps",
                           choices=("constant", "cosine"))
    epochs: int = _field(10, "passes over the training data", range=AT_LEAST_ONE)
    max_steps: int = _field(0, "stop after this many optimizer steps, even mid-epoch (0 = no cap)",
                            range=NONNEGATIVE)
    batch_size: int = _field(128, "training batch size", range=AT_LEAST_ONE)
    eval_batch_size: int = _field(1000, "evaluation batch size (no effect on results)", range=AT_LEAST_ONE)
    seed: int = _field(0, "seed of initialisation, data order and dropout", range=NONNEGATIVE)
    device: str = _field("auto", "'auto' (cuda when available, else cpu), 'cpu', 'cuda' or 'cuda:N'")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _checked(f, getattr(self, f.name)))
        if self.dropout > 0 and self.model != "notebook_cnn":
            raise ConfigError(f"dropout={self.dropout!r}: only model 'notebook_cnn' has a dropout layer "
                              f"(model={self.model!r}); allowed for it: 0.0")
        for name in ("coupling", "notebook_dense_pass"):
            if getattr(self, name) and self.rule != "modified":
                raise ConfigError(f"{name}=True applies to rule 'modified' only (rule={self.rule!r}); "
                                  "allowed with it: False")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from plain data (TOML, JSON, a search space sample); unknown keys are an error."""
        unknown = sorted(set(d) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                              f"known fields: {', '.join(FIELD_NAMES)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), so that `from_dict(to_dict())` round-trips through JSON."""
        d = dataclasses.asdict(self)
        if isinstance(self.sparsify, tuple):
            d["sparsify"] = list(self.sparsify)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
FIELD_NAMES = tuple(FIELDS)


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """The value converted to the field's type (int -> float, list -> tuple), else `ConfigError`."""
    if f.name == "sparsify":
        return _checked_sparsify(value)
    value = _typed(f.name, value, f.type)
    choices, allowed = f.metadata["choices"], f.metadata["range"]
    if choices is not None and value not in choices:
        raise ConfigError(f"{f.name}={value!r} is not allowed; allowed: {', '.join(map(repr, choices))}")
    if allowed is not None and (math.isnan(value) or value not in allowed):
        raise ConfigError(f"{f.name}={value!r} is out of range; allowed: {allowed}")
    if f.name == "device" and not DEVICE_PATTERN.fullmatch(value):
        raise ConfigError(f"device={value!r} is not allowed; allowed: 'auto', 'cpu', 'cuda', 'cuda:N'")
    return value


def _typed(name: str, value: Any, type_name: str) -> Any:
    if type_name == "bool" and isinstance(value, bool):
        return value
    if type_name == "int" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if type_name == "float" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if type_name == "str" and isinstance(value, str):
        return value
    raise ConfigError(f"{name}={value!r} has type {type(value).__name__}; expected {type_name}")


def _checked_sparsify(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value not in ("all", "fc1"):
            raise ConfigError(f"sparsify={value!r} is not allowed; allowed: 'all', 'fc1' "
                              "or a list of parameter names")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"sparsify={list(value)!r} names a tensor twice")
        return tuple(value)
    raise ConfigError(f"sparsify={value!r} has type {type(value).__name__}; "
                      "expected 'all', 'fc1' or a non-empty list of parameter names")
