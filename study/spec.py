"""The study file: TOML parsed once, at the edge, into frozen dataclasses.

Every problem in a study file is reported as one `SpecError` naming the key and the value, so
the command line can print it and exit 2 before anything is started or written.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from analysis.schema import EPOCH_METRICS
from trainables.config import ConfigError, TrainConfig

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random", "qmc", "grid")
DEFAULT_SAMPLER = "tpe"
# Metrics that may be objectives, with their default direction. Test accuracy is absent on
# purpose: it is reported, never used for selection.
OBJECTIVE_DIRECTIONS = {
    "val_acc": "max", "val_acc_dense": "max", "sparsity": "max", "sparsity_all": "max",
    "compression": "max", "nonzeros": "min", "train_loss": "min",
    "epoch_time_s": "min", "samples_per_s": "max",
}
DEFAULT_OBJECTIVES = ("val_acc", "sparsity")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
TRAIN_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))


class SpecError(ValueError):
    """A study file that cannot be run; the message names the key and the value."""


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "max" | "min"


@dataclass(frozen=True)
class Param:
    """One searched training field: a float/int range (optionally log) or a list of values."""
    name: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    values: tuple | None = None


@dataclass(frozen=True)
class StudySettings:
    name: str
    storage: str = "rvsm-studies"
    trials: int = 20
    max_concurrent: int = 2
    seed: int = 0


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = DEFAULT_SAMPLER
    params: tuple[Param, ...] = ()
    objectives: tuple[Objective, ...] = tuple(Objective(m, "max") for m in DEFAULT_OBJECTIVES)
    # On by default: measured to reach the same hypervolume for less CPU (docs/performance.md).
    early_stopping: bool = True
    early_stopping_min_dominating: int = 2
    early_stopping_grace_epochs: int = 1


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one


@dataclass(frozen=True)
class StudySpec:
    study: StudySettings
    search: SearchSettings
    train: dict[str, Any] = field(default_factory=dict)  # fixed training fields
    resources: Resources = Resources()
    cluster: ClusterSettings = ClusterSettings()

    def base_config(self) -> dict[str, Any]:
        """Every training field's fixed value (defaults filled in), searched ones excluded."""
        searched = {p.name for p in self.search.params}
        full = TrainConfig.from_dict(self.train).to_dict()
        return {k: v for k, v in full.items() if k not in searched}


# ---------------------------------------------------------------------------------------------
# Parsing


def read_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """The study file as a dict, with `--set key.path=value` overrides applied."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read study file {str(path)!r}: {exc.strerror or exc}") from None
    raw = loads(text, source=str(path))
    for item in overrides:
        apply_override(raw, item)
    return raw


def load_spec(path: str | Path, overrides: list[str] = ()) -> StudySpec:
    return spec_from_raw(read_raw(path, overrides))


def loads(text: str, source: str = "<study>") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source} is not valid TOML: {exc}") from None


def parse_spec(text: str, source: str = "<study>") -> StudySpec:
    return spec_from_raw(loads(text, source))


def apply_override(raw: dict, item: str) -> None:
    """`train.lr=0.01`: the value is read as TOML (numbers, booleans, lists), else as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SpecError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=2")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    *tables, last = key.strip().split(".")
    target = raw
    for name in tables:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise SpecError(f"--set {item!r}: {name!r} is not a table")
    target[last] = value


def dump_toml(raw: dict) -> str:
    """Write a study dict back as TOML (the subset study files use), for the study folder."""
    lines: list[str] = []

    def table(prefix: str, t: dict) -> None:
        scalars = {k: v for k, v in t.items() if not isinstance(v, dict)}
        if prefix and (scalars or not t):
            lines.append(f"\n[{prefix}]")
        lines.extend(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items())
        for k, v in t.items():
            if isinstance(v, dict):
                table(f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k), v)

    table("", raw)
    return "\n".join(lines).lstrip("\n") + "\n"


def _toml_key(key: str) -> str:
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else
                                                         ("inf" if value > 0 else "-inf"))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def spec_from_raw(raw: dict) -> StudySpec:
    _only_keys(raw, ("study", "search", "train", "resources", "cluster"), "")
    study = _parse_study(_table(raw, "study", required=True))
    search = _parse_search(_table(raw, "search"))
    train = _table(raw, "train")
    resources = _parse_resources(_table(raw, "resources"))
    cluster = _parse_cluster(_table(raw, "cluster"))
    _check_train(train, search)
    return StudySpec(study=study, search=search, train=dict(train), resources=resources,
                     cluster=cluster)


def _table(raw: dict, key: str, *, required: bool = False) -> dict:
    if key not in raw:
        if required:
            raise SpecError(f"missing table [{key}]")
        return {}
    value = raw[key]
    if not isinstance(value, dict):
        raise SpecError(f"{key} must be a table ([{key}]), got {value!r}")
    return value


def _only_keys(table: dict, allowed: tuple[str, ...], prefix: str) -> None:
    for key in table:
        if key not in allowed:
            where = f"{prefix}{key}"
            raise SpecError(f"unknown key {where!r}; allowed here: {', '.join(allowed)}")


def _get(table: dict, key: str, kind: type | tuple[type, ...], default: Any, prefix: str) -> Any:
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise SpecError(f"{prefix}{key} must be {names}, got {value!r}")
    return value


def _parse_study(t: dict) -> StudySettings:
    _only_keys(t, ("name", "storage", "trials", "max_concurrent", "seed"), "study.")
    if "name" not in t:
        raise SpecError("missing key 'study.name'")
    name = _get(t, "name", str, None, "study.")
    if not NAME_PATTERN.match(name):
        raise SpecError(f"study.name must be letters, digits, '_', '-' or '.', got {name!r}")
    s = StudySettings(
        name=name,
        storage=_get(t, "storage", str, StudySettings.storage, "study."),
        trials=_get(t, "trials", int, StudySettings.trials, "study."),
        max_concurrent=_get(t, "max_concurrent", int, StudySettings.max_concurrent, "study."),
        seed=_get(t, "seed", int, StudySettings.seed, "study."),
    )
    if s.trials < 1:
        raise SpecError(f"study.trials must be >= 1, got {s.trials!r}")
    if s.max_concurrent < 1:
        raise SpecError(f"study.max_concurrent must be >= 1, got {s.max_concurrent!r}")
    if not s.storage:
        raise SpecError("study.storage must not be empty")
    return s


def _parse_search(t: dict) -> SearchSettings:
    _only_keys(t, ("sampler", "params", "objectives", "early_stopping",
                   "early_stopping_min_dominating", "early_stopping_grace_epochs"), "search.")
    sampler = _get(t, "sampler", str, DEFAULT_SAMPLER, "search.")
    if sampler not in SAMPLERS:
        raise SpecError(f"search.sampler = {sampler!r} is unknown; allowed: {', '.join(SAMPLERS)}")
    params_table = t.get("params", _default_params())
    if not isinstance(params_table, dict):
        raise SpecError(f"search.params must be a table, got {params_table!r}")
    params = tuple(_parse_param(name, value) for name, value in params_table.items())
    if sampler == "grid":
        for p in params:
            if p.values is None:
                raise SpecError(f"search.params.{p.name}: the grid sampler needs 'values = [...]'"
                                f" for every parameter, got a range")
    objectives = _parse_objectives(t.get("objectives", list(DEFAULT_OBJECTIVES)))
    min_dom = _get(t, "early_stopping_min_dominating", int, 2, "search.")
    grace = _get(t, "early_stopping_grace_epochs", int, 1, "search.")
    if min_dom < 1:
        raise SpecError(f"search.early_stopping_min_dominating must be >= 1, got {min_dom!r}")
    if grace < 0:
        raise SpecError(f"search.early_stopping_grace_epochs must be >= 0, got {grace!r}")
    return SearchSettings(sampler=sampler, params=params, objectives=objectives,
                          early_stopping=_get(t, "early_stopping", bool, True, "search."),
                          early_stopping_min_dominating=min_dom,
                          early_stopping_grace_epochs=grace)


def _default_params() -> dict:
    # Thresholds sqrt(2 lam / beta) from 1e-4 to 0.14: the scale of PyTorch-initialised weights.
    return {"lam": {"low": 1e-7, "high": 1e-3, "log": True},
            "beta": {"low": 0.1, "high": 10.0, "log": True},
            "lr": {"low": 1e-4, "high": 1e-2, "log": True}}


def _parse_param(name: str, t: Any) -> Param:
    where = f"search.params.{name}"
    if name not in TRAIN_FIELDS:
        raise SpecError(f"{where}: {name!r} is not a training field; known: {', '.join(TRAIN_FIELDS)}")
    if not isinstance(t, dict):
        raise SpecError(f"{where} must be a table like {{low = 1e-4, high = 1e-2, log = true}}"
                        f" or {{values = [...]}}, got {t!r}")
    _only_keys(t, ("low", "high", "log", "int", "values"), where + ".")
    if "values" in t:
        if set(t) - {"values"}:
            raise SpecError(f"{where}: give either 'values' or 'low'/'high', not both")
        values = t["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.values must be a non-empty list, got {values!r}")
        for v in values:
            # Optuna's categorical choices are scalars; a list (a set of tensors) is not one.
            if not isinstance(v, (str, int, float, bool)):
                raise SpecError(f"{where}.values: each value must be a string, number or boolean,"
                                f" got {v!r}")
        return Param(name=name, values=tuple(values))
    for key in ("low", "high"):
        if key not in t:
            raise SpecError(f"missing key '{where}.{key}'")
    integer = _get(t, "int", bool, False, where + ".")
    kind = int if integer else float
    low = _get(t, "low", kind, None, where + ".")
    high = _get(t, "high", kind, None, where + ".")
    log = _get(t, "log", bool, False, where + ".")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpecError(f"{where}: low and high must be finite, got low={low!r}, high={high!r}")
    if low >= high:
        raise SpecError(f"{where}: low must be < high, got low={low!r}, high={high!r}")
    if log and low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0, got low={low!r}")
    return Param(name=name, low=low, high=high, log=log, integer=integer)


def _parse_objectives(value: Any) -> tuple[Objective, ...]:
    if not isinstance(value, list) or not value:
        raise SpecError(f"search.objectives must be a non-empty list such as "
                        f"[\"val_acc\", \"sparsity\"], got {value!r}")
    objectives = []
    for item in value:
        if not isinstance(item, str):
            raise SpecError(f"search.objectives: each entry must be a string like "
                            f"\"val_acc\" or \"epoch_time_s:min\", got {item!r}")
        metric, _, direction = item.partition(":")
        if metric == "test_acc" or metric == "test_acc_dense":
            raise SpecError(f"search.objectives: {metric!r} cannot be an objective: test accuracy "
                            f"is reported, never used for selection; use 'val_acc'")
        if metric not in OBJECTIVE_DIRECTIONS:
            raise SpecError(f"search.objectives: {metric!r} is unknown; allowed: "
                            f"{', '.join(OBJECTIVE_DIRECTIONS)}")
        direction = direction or OBJECTIVE_DIRECTIONS[metric]
        if direction not in ("max", "min"):
            raise SpecError(f"search.objectives: direction of {metric!r} must be 'max' or 'min',"
                            f" got {direction!r}")
        objectives.append(Objective(metric, direction))
    names = [o.metric for o in objectives]
    if len(set(names)) != len(names):
        raise SpecError(f"search.objectives lists a metric twice: {names!r}")
    assert all(o.metric in EPOCH_METRICS for o in objectives)
    return tuple(objectives)


def _parse_resources(t: dict) -> Resources:
    _only_keys(t, ("cpus_per_trial", "gpus_per_trial"), "resources.")
    r = Resources(cpus_per_trial=_get(t, "cpus_per_trial", float, 1.0, "resources."),
                  gpus_per_trial=_get(t, "gpus_per_trial", float, 0.0, "resources."))
    if r.cpus_per_trial <= 0:
        raise SpecError(f"resources.cpus_per_trial must be > 0, got {r.cpus_per_trial!r}")
    g = r.gpus_per_trial
    if g < 0 or (g > 1 and g != int(g)):
        raise SpecError(f"resources.gpus_per_trial must be a fraction in [0, 1] (e.g. 0.25, so "
                        f"four trials share a GPU) or a whole number, got {g!r}")
    return r


def _parse_cluster(t: dict) -> ClusterSettings:
    _only_keys(t, ("address",), "cluster.")
    address = _get(t, "address", str, None, "cluster.")
    if address in ("", "local"):
        address = None
    if address is not None and not (address == "auto" or address.startswith("ray://")
                                    or re.match(r"^[\w.-]+:\d+$", address)):
        raise SpecError(f"cluster.address must be empty (start a local Ray), 'auto', "
                        f"'ray://host:port' or 'host:port', got {address!r}")
    return ClusterSettings(address=address)


def _check_train(train: dict, search: SearchSettings) -> None:
    """Validate the fixed fields through TrainConfig itself, with each searched field at a value
    from its range, so a bad fixed value fails here rather than inside every trial."""
    for p in search.params:
        if p.name in train:
            raise SpecError(f"train.{p.name} is fixed and also searched (search.params.{p.name});"
                            f" keep one")
    for key in train:
        if key not in TRAIN_FIELDS:
            raise SpecError(f"unknown key 'train.{key}'; known: {', '.join(TRAIN_FIELDS)}")
    probe = dict(train)
    for p in search.params:
        for value in (p.values if p.values is not None else (p.low, p.high)):
            try:
                TrainConfig.from_dict({**probe, p.name: value})
            except ConfigError as exc:
                where = f"search.params.{p.name}" if p.name in str(exc) else "train"
                raise SpecError(f"{where}: {exc}") from None
    try:
        TrainConfig.from_dict(probe)
    except ConfigError as exc:
        raise SpecError(f"train: {exc}") from None
