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

from .importpath import is_import_path
from .models import MODEL_CHOICES, MODELS, is_model_name
from .thresholds import RAMPS, SCALES, lam_of

EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")
DATASETS = ("mnist", "fashion_mnist", "cifar10", "synthetic", "kmnist",
            *(f"emnist_{split}" for split in EMNIST_SPLITS), "cifar100", "svhn")
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
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        return (f"{'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}"
                f"{')' if self.high_open else ']'}")


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _field(default: Any, help: str, *, choices: tuple | None = None, range: Range | None = None) -> Any:
    return field(default=default, metadata={"help": help, "choices": choices, "range": range})


NONNEGATIVE, POSITIVE, AT_LEAST_ONE = Range(0), Range(0, low_open=True), Range(1)
UNIT_INTERVAL_OPEN = Range(0, 1, high_open=True)
# Upper bounds far above any real use: a larger number is a typo that would only fail or never end.
SEEDS = Range(0, 2**32 - 1)  # what numpy's and torch's generators all accept
MAX_IMAGES = 10**9


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on; two equal configs give the same run (on CPU)."""

    # data
    dataset: str = _field("mnist", "dataset to train on: a name, or 'package.module:loader' (your own code)",
                          choices=DATASETS)
    data_root: str = _field("data", "folder holding the datasets in torchvision's layout")
    download: bool = _field(False, "download the dataset into data_root when it is missing")
    val_size: int = _field(5000, "training images held out for validation", range=Range(1, MAX_IMAGES))
    data_seed: int = _field(0, "seed of the validation split and of train_subset", range=SEEDS)
    normalize: bool = _field(True, "standardise pixels with the training split's mean and std")
    train_subset: int = _field(0, "train on a fixed seeded subset of this size (0 = all)", range=Range(0, MAX_IMAGES))
    synthetic_size: int = _field(2000, "training images of the synthetic dataset (after validation)",
                                 range=Range(10, 10**6))
    # model
    model: str = _field("lenet5", "network: a built-in name, a torchvision.models classifier "
                        "('resnet18'), or 'package.module:factory' (your own code)", choices=tuple(MODELS))
    init: str = _field("default", "'default' = PyTorch's; 'normal' = every parameter N(0, 1), as the notebook",
                       choices=("default", "normal"))
    dropout: float = _field(0.0, "drop probability of notebook_cnn's dropout layer", range=UNIT_INTERVAL_OPEN)
    # RVSM
    rule: str = _field("modified", "RVSM update rule", choices=("classic", "modified"))
    lam: float = _field(1e-4, "lambda, the l0 penalty weight (0 = plain training)", range=NONNEGATIVE)
    beta: float = _field(1.0, "beta, the weight coupling w and u", range=POSITIVE)
    sparsify: str | tuple[str, ...] = _field(
        "all", "tensors to sparsify: 'all' conv and linear weights, 'fc1', or a list of names and glob "
        "patterns ('layer1.*'), '!' before one excludes")
    coupling: bool = _field(False, "modified rule: add beta (w - u) to the gradient")
    notebook_dense_pass: bool = _field(
        False, "modified rule: non-sparsified tensors take their gradient from a dense pass at w")
    threshold: float = _field(0.0, "the threshold t itself; > 0: lam is derived as beta t^2 / 2 (0 = t "
                              "from lam and beta)", range=NONNEGATIVE)
    threshold_scale: str = _field("global", "per-tensor scale s_l of t_l = t s_l m_l: 'global' (1), 'std' "
                                  "(the tensor's std at init) or 'fan_in' (1/sqrt(fan-in))", choices=SCALES)
    threshold_multipliers: tuple[tuple[str, float], ...] = _field(
        (), "per-tensor multipliers m_l: a table {layer, parameter name or glob = number > 0}; "
        "unnamed tensors get 1")
    ramp_epochs: int = _field(0, "epochs over which the thresholds grow from 0 to their value (0 = none)",
                              range=Range(0, 10**6))
    ramp: str = _field("cubic", "shape of the threshold ramp: 'linear' or 'cubic' (Zhu & Gupta 2017)",
                       choices=RAMPS)
    finetune_epochs: int = _field(0, "epochs after the RVSM epochs that train only u's non-zeros, its "
                                  "support frozen", range=Range(0, 10**6))
    finetune_lr_factor: float = _field(0.1, "learning rate of the fine-tuning epochs, as a factor of lr",
                                       range=POSITIVE)
    # optimisation
    optimizer: str = _field("adam", "optimizer", choices=("adam", "sgd"))
    lr: float = _field(1e-3, "learning rate", range=POSITIVE)
    momentum: float = _field(0.9, "SGD momentum (unused by adam)", range=UNIT_INTERVAL_OPEN)
    weight_decay: float = _field(0.0, "L2 weight decay applied by the optimizer", range=NONNEGATIVE)
    schedule: str = _field("constant", "learning-rate schedule; cosine decays to 0 over all steps",
                           choices=("constant", "cosine"))
    epochs: int = _field(10, "passes over the training data", range=Range(1, 10**6))
    max_steps: int = _field(0, "stop after this many optimizer steps, even mid-epoch (0 = no cap)",
                            range=Range(0, 10**12))
    batch_size: int = _field(128, "training batch size", range=Range(1, MAX_IMAGES))
    eval_batch_size: int = _field(1000, "evaluation batch size (no effect on results)",
                                  range=Range(1, MAX_IMAGES))
    diagnostics_every: int = _field(
        5, "epochs between the diagnostic validation passes (val_acc_dense, val_acc_complement; null in"
        " between); the last epoch always has them, 1 = every epoch", range=AT_LEAST_ONE)
    seed: int = _field(0, "seed of initialisation, data order and dropout", range=SEEDS)
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
        if self.threshold > 0:  # t given: lambda follows, so lam and beta only matter through t
            object.__setattr__(self, "lam", lam_of(self.threshold, self.beta))
        if self.ramp_epochs > self.epochs:
            raise ConfigError(f"ramp_epochs={self.ramp_epochs!r} is longer than the run "
                              f"(epochs={self.epochs!r}); allowed: 0 to {self.epochs}")
        if self.finetune_epochs and self.max_steps:
            raise ConfigError(f"finetune_epochs={self.finetune_epochs!r} follows whole RVSM epochs; "
                              f"max_steps={self.max_steps!r} would cut them: allowed with it: 0")

    @property
    def multipliers(self) -> dict[str, float]:
        """`threshold_multipliers` as a dict (key -> m_l), in the order given."""
        return dict(self.threshold_multipliers)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from plain data (TOML, JSON, a search space sample); unknown keys are an error.
        A key `threshold_multipliers.<name>` (a searched multiplier: Optuna's parameters are flat
        scalars) sets that entry of `threshold_multipliers`. With `threshold` > 0, a `lam` given
        must be the one it implies (beta t^2 / 2), as `to_dict` writes it."""
        d = _folded_multipliers(d)
        unknown = sorted(set(d) - set(FIELD_NAMES))
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                              f"known fields: {', '.join(FIELD_NAMES)}")
        config = cls(**d)
        if "lam" in d and config.threshold > 0 and not math.isclose(d["lam"], config.lam, rel_tol=1e-9):
            raise ConfigError(f"lam={d['lam']!r} contradicts threshold={config.threshold!r} (which implies "
                              f"lam = beta t^2 / 2 = {config.lam:g}); give one of them")
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), so that `from_dict(to_dict())` round-trips through JSON."""
        d = dataclasses.asdict(self)
        if isinstance(self.sparsify, tuple):
            d["sparsify"] = list(self.sparsify)
        d["threshold_multipliers"] = self.multipliers
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
FIELD_NAMES = tuple(FIELDS)


def _checked(f: dataclasses.Field, value: Any) -> Any:
    """The value converted to the field's type (int -> float, list -> tuple), else `ConfigError`."""
    if f.name == "sparsify":
        return _checked_sparsify(value)
    if f.name == "threshold_multipliers":
        return _checked_multipliers(value)
    if f.name in ("model", "dataset"):
        return _checked_name(f.name, _typed(f.name, value, f.type))
    value = _typed(f.name, value, f.type)
    choices, allowed = f.metadata["choices"], f.metadata["range"]
    if choices is not None and value not in choices:
        raise ConfigError(f"{f.name}={value!r} is not allowed; allowed: {', '.join(map(repr, choices))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{f.name}={value!r} is not a finite number; allowed: {allowed or 'finite'}")
    if allowed is not None and value not in allowed:
        raise ConfigError(f"{f.name}={value!r} is out of range; allowed: {allowed}")
    if isinstance(value, str) and "\x00" in value:
        raise ConfigError(f"{f.name}={value!r} contains a NUL character")
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


def _checked_name(name: str, value: str) -> str:
    """A model or dataset: built in, torchvision's (models), or an import path to the user's code
    (only its form is checked here; `models.check_model` imports it)."""
    if name == "model" and not is_model_name(value):
        raise ConfigError(f"model={value!r} is not allowed; allowed: {MODEL_CHOICES}")
    if name == "dataset" and value not in DATASETS and not is_import_path(value):
        raise ConfigError(f"dataset={value!r} is not allowed; allowed: {', '.join(map(repr, DATASETS))} "
                          "or 'package.module:loader'")
    return value


def _checked_sparsify(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value not in ("all", "fc1") and not (value.startswith("!") or set("*?[") & set(value)):
            raise ConfigError(f"sparsify={value!r} is not allowed; allowed: 'all', 'fc1', a glob pattern "
                              "('layer1.*', '!fc3') or a list of parameter names and patterns")
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        if len(set(value)) != len(value):
            raise ConfigError(f"sparsify={list(value)!r} names a tensor twice")
        return tuple(value)
    raise ConfigError(f"sparsify={value!r} has type {type(value).__name__}; "
                      "expected 'all', 'fc1' or a non-empty list of parameter names")


MULTIPLIER_PREFIX = "threshold_multipliers."


def _folded_multipliers(d: dict[str, Any]) -> dict[str, Any]:
    """`threshold_multipliers.<name>` keys moved into the `threshold_multipliers` table."""
    flat = {k: v for k, v in d.items() if isinstance(k, str) and k.startswith(MULTIPLIER_PREFIX)}
    if not flat:
        return d
    table = d.get("threshold_multipliers", {})
    table = dict(table) if isinstance(table, dict) else dict(_checked_multipliers(table))
    table |= {k[len(MULTIPLIER_PREFIX):]: v for k, v in flat.items()}
    return {**{k: v for k, v in d.items() if k not in flat}, "threshold_multipliers": table}


def _checked_multipliers(value: Any) -> tuple[tuple[str, float], ...]:
    """A table {name: m > 0} (or its pairs) as (str, float) pairs in the order given."""
    pairs = value.items() if isinstance(value, dict) else value
    if not isinstance(pairs, (list, tuple, type({}.items()))):
        raise ConfigError(f"threshold_multipliers={value!r} has type {type(value).__name__}; expected a "
                          "table such as {conv1 = 0.5, 'fc*' = 2.0}")
    out = []
    for pair in pairs:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str) and pair[0]):
            raise ConfigError(f"threshold_multipliers={value!r}: each entry must be a name and a number")
        name, m = pair
        m = _typed(f"threshold_multipliers.{name}", m, "float")
        if not math.isfinite(m) or m <= 0:
            raise ConfigError(f"threshold_multipliers.{name}={m!r} is out of range; allowed: > 0, finite")
        out.append((name, m))
    return tuple(out)
