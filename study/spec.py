"""The study file: TOML parsed once, at the edge, into frozen dataclasses.

Every problem in a study file is reported as one `SpecError` naming the key and the value, so
the command line can print it and exit 2 before anything is started or written: types are
checked before any conversion, every number must be finite and in range, and the training
fields go through `TrainConfig` and a meta-device build of the network (`trainables.preflight`).
The training code (torch) is imported only for that last check, so readers of a stored study
(`rvsm status`) parse it with `check_train=False` and never import torch.
"""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from analysis.schema import EPOCH_METRICS

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
# Bounds of the numbers a study file holds. Larger values are typos, not studies: each bound is
# far above any real use and below what the libraries downstream accept.
MAX_NAME_LENGTH = 100        # the study's folder name (file systems allow 255 bytes)
MAX_PATH_LENGTH = 4096       # PATH_MAX on Linux
MAX_NAME_BYTES = 255         # NAME_MAX: one folder or file name
MAX_TRIALS = 100_000
MAX_CONCURRENT = 10_000
MAX_SEED = 2**31 - 1         # samplers seed numpy (0 .. 2**32-1); each later run adds its index
MAX_EARLY_STOPPING = 10_000  # early_stopping_min_dominating and early_stopping_grace_epochs
# One trial runs on one node: no machine has more than this (Ray counts in units of 1e-4).
MAX_CPUS_PER_TRIAL = 1024
MAX_GPUS_PER_TRIAL = 16
RESOURCE_UNIT = 1e-4


def __getattr__(name: str) -> Any:
    """`TRAIN_FIELDS` loads the training config (and its dependencies) only when asked for."""
    if name == "TRAIN_FIELDS":
        return _train_fields()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _train_fields() -> tuple[str, ...]:
    from trainables.config import FIELD_NAMES
    return FIELD_NAMES


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
    early_stopping_grace_epochs: int | None = None  # None: follows the schedule (scheduler.default_grace)


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class ClusterSettings:
    address: str | None = None  # None: start a local Ray; "auto" or "ray://host:port": join one
    connect_timeout_s: float = 30.0  # how long joining may wait for the cluster to answer


@dataclass(frozen=True)
class TrackingSettings:
    """Experiment trackers each trial also reports to, through Ray Tune's own callbacks
    (docs/tracking.md); the Parquet results are written either way."""
    tensorboard: bool = False  # event files beside each trial's checkpoints
    mlflow: str | None = None  # an MLflow tracking URI ("sqlite:///mlflow.db", "http://host:5000")
    wandb: str | None = None   # a Weights & Biases project


@dataclass(frozen=True)
class StudySpec:
    study: StudySettings
    search: SearchSettings
    train: dict[str, Any] = field(default_factory=dict)  # fixed training fields
    resources: Resources = Resources()
    cluster: ClusterSettings = ClusterSettings()
    tracking: TrackingSettings = TrackingSettings()

    def base_config(self) -> dict[str, Any]:
        """Every training field's fixed value (defaults filled in), searched ones excluded; `lam`
        too when the threshold is given (fixed or searched): each trial derives it from its beta."""
        from trainables.config import TrainConfig
        searched = {p.name for p in self.search.params}
        full = TrainConfig.from_dict(self.train).to_dict()
        if "threshold" in searched or full["threshold"] > 0:
            searched.add("lam")
        return {k: v for k, v in full.items() if k not in searched}


# ---------------------------------------------------------------------------------------------
# Parsing


def read_raw(path: str | Path, overrides: list[str] = ()) -> dict:
    """The study file as a dict, with `--set key.path=value` overrides applied."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read study file {str(path)!r}: {exc.strerror or exc}") from None
    raw = loads(decode(data, str(path)), source=str(path))
    for item in overrides:
        apply_override(raw, item)
    return raw


def load_spec(path: str | Path, overrides: list[str] = ()) -> StudySpec:
    return spec_from_raw(read_raw(path, overrides))


def decode(data: bytes, source: str = "<study>") -> str:
    """A study file's text: UTF-8, as TOML requires (a leading byte-order mark, as some Windows
    editors write, is dropped); SpecError naming the first bad byte and the line that holds it
    (so the key)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        line = data.splitlines()[number - 1].decode("utf-8", errors="replace").strip()
        raise SpecError(f"{source} is not UTF-8 text: byte 0x{data[exc.start]:02x} on line "
                        f"{number} ({_show(line)}); save the file as UTF-8") from None


def loads(text: str, source: str = "<study>") -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{source} is not valid TOML: {exc}") from None


def parse_spec(text: str | bytes, source: str = "<study>", *, check_train: bool = True) -> StudySpec:
    """A study from its TOML text (or UTF-8 bytes). `check_train=False` skips what only running
    it needs (the [train] table, searched fields, the network, the grid's size): for readers of
    a study that `rvsm run` has checked already; it imports no torch."""
    if isinstance(text, bytes):
        text = decode(text, source)
    return spec_from_raw(loads(text, source), check_train=check_train)


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
    if not tables and isinstance(value, dict) and isinstance(raw.get(last), dict):
        # replacing a whole section would silently reset every key it leaves out to its default
        raise SpecError(f"--set {item!r} would replace the whole [{last}] table; set its keys one "
                        f"by one, e.g. --set {last}.KEY=VALUE")
    target = raw
    for name in tables:
        target = target.setdefault(name, {})
        if not isinstance(target, dict):
            raise SpecError(f"--set {item!r}: {name!r} is not a table")
    target[last] = value


def dump_toml(raw: dict) -> str:
    """A study dict as TOML text, for the copy kept in the study folder."""
    return tomli_w.dumps(raw)


def spec_from_raw(raw: dict, *, check_train: bool = True) -> StudySpec:
    """Every key checked (type first, then range), else one SpecError naming key and value."""
    _only_keys(raw, ("study", "search", "train", "resources", "cluster", "tracking"), "")
    study = _parse_study(_table(raw, "study", required=True))
    search = _parse_search(_table(raw, "search"), check_train=check_train)
    train = _table(raw, "train")
    resources = _parse_resources(_table(raw, "resources"))
    cluster = _parse_cluster(_table(raw, "cluster"))
    tracking = _parse_tracking(_table(raw, "tracking"), check_packages=check_train)
    if check_train:  # what only a run needs: a reader takes an existing study as it is
        _check_grid_size(study, search)
        _check_train(train, search, resources)
    return StudySpec(study=study, search=search, train=dict(train), resources=resources,
                     cluster=cluster, tracking=tracking)


def _parse_tracking(t: dict, *, check_packages: bool) -> TrackingSettings:
    """Which trackers; with `check_packages` (a run, not a reader), each one's package must be
    importable here (`study.tracking.check_tracking`)."""
    _only_keys(t, ("tensorboard", "mlflow", "wandb"), "tracking.")
    s = TrackingSettings(tensorboard=_get(t, "tensorboard", bool, False, "tracking."),
                         mlflow=_get(t, "mlflow", str, None, "tracking."),
                         wandb=_get(t, "wandb", str, None, "tracking."))
    for key, what in (("mlflow", "a tracking URI such as 'sqlite:///home/me/mlflow.db'"),
                      ("wandb", "a project name")):
        if getattr(s, key) is not None and not getattr(s, key).strip():
            raise SpecError(f"tracking.{key} must be {what}, got {_show(getattr(s, key))}")
    if check_packages:
        from study.tracking import check_tracking
        check_tracking(s)
    return s


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
            raise SpecError(f"unknown key {_show(f'{prefix}{key}')}; allowed here: {', '.join(allowed)}")


def _get(table: dict, key: str, kind: type | tuple[type, ...], default: Any, prefix: str) -> Any:
    """The value of `key`, of type `kind` (checked before any conversion: int -> float only);
    floats must be finite."""
    if key not in table:
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        if not (float in kinds and isinstance(value, int) and not isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in kinds)
            raise SpecError(f"{prefix}{key} must be {names}, got {_show(value)}")
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # may overflow to inf: checked next
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(f"{prefix}{key} must be a finite number, got {_show(value)}")
    if isinstance(value, str) and "\x00" in value:
        raise SpecError(f"{prefix}{key} must not contain a NUL character, got {_show(value)}")
    return value


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: repr, cut short (a message stays one readable line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 15]}... ({len(text)} chars)"


def _in_range(value: float, low: float, high: float, key: str, unit: str = "") -> None:
    if not low <= value <= high:
        raise SpecError(f"{key} must be in [{low:g}, {high:g}]{unit}, got {_show(value)}")


def _parse_study(t: dict) -> StudySettings:
    _only_keys(t, ("name", "storage", "trials", "max_concurrent", "seed"), "study.")
    if "name" not in t:
        raise SpecError("missing key 'study.name'")
    name = _get(t, "name", str, None, "study.")
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"study.name must be 1 to {MAX_NAME_LENGTH} letters, digits, '_', '-' or "
                        f"'.' (starting with a letter or digit), got {_show(name)}")
    s = StudySettings(
        name=name,
        storage=_get(t, "storage", str, StudySettings.storage, "study."),
        trials=_get(t, "trials", int, StudySettings.trials, "study."),
        max_concurrent=_get(t, "max_concurrent", int, StudySettings.max_concurrent, "study."),
        seed=_get(t, "seed", int, StudySettings.seed, "study."),
    )
    _in_range(s.trials, 1, MAX_TRIALS, "study.trials")
    _in_range(s.max_concurrent, 1, MAX_CONCURRENT, "study.max_concurrent")
    _in_range(s.seed, 0, MAX_SEED, "study.seed")
    scheme, sep, rest = s.storage.partition("://")
    if sep and not rest.strip("/"):
        raise SpecError(f"study.storage = {s.storage!r} names no location; give a bucket or a "
                        f"folder, e.g. '{scheme}://bucket/studies'")
    _check_path(s.storage, "study.storage")
    return s


def _check_path(path: str, key: str) -> None:
    """A path no file system can hold (the storage, the data folder) can only fail."""
    if not path.strip():
        raise SpecError(f"{key} must be a folder (or a URI), got {path!r}; '.' is the current folder")
    if len(path.encode("utf-8")) > MAX_PATH_LENGTH:
        raise SpecError(f"{key} is {len(path)} characters long; a path may have at most "
                        f"{MAX_PATH_LENGTH} bytes")
    longest = max(path.split("/"), key=lambda part: len(part.encode("utf-8")))
    if len(longest.encode("utf-8")) > MAX_NAME_BYTES:
        raise SpecError(f"{key} has a folder name of {len(longest.encode('utf-8'))} bytes "
                        f"({_show(longest)}); file systems allow at most {MAX_NAME_BYTES}")


def _parse_search(t: dict, *, check_train: bool = True) -> SearchSettings:
    _only_keys(t, ("sampler", "params", "objectives", "early_stopping",
                   "early_stopping_min_dominating", "early_stopping_grace_epochs"), "search.")
    sampler = _get(t, "sampler", str, DEFAULT_SAMPLER, "search.")
    if sampler not in SAMPLERS:
        raise SpecError(f"search.sampler = {_show(sampler)} is unknown; allowed: {', '.join(SAMPLERS)}")
    params_table = t.get("params", _default_params())
    if not isinstance(params_table, dict):
        raise SpecError(f"search.params must be a table, got {_show(params_table)}")
    params = tuple(_parse_param(name, value, check_train=check_train)
                   for name, value in params_table.items())
    if sampler == "grid":
        for p in params:
            if p.values is None:
                raise SpecError(f"search.params.{p.name}: the grid sampler needs 'values = [...]'"
                                f" for every parameter, got a range")
    objectives = _parse_objectives(t.get("objectives", list(DEFAULT_OBJECTIVES)))
    min_dom = _get(t, "early_stopping_min_dominating", int, 2, "search.")
    grace = _get(t, "early_stopping_grace_epochs", int, None, "search.")
    _in_range(min_dom, 1, MAX_EARLY_STOPPING, "search.early_stopping_min_dominating")
    if grace is not None:
        _in_range(grace, 0, MAX_EARLY_STOPPING, "search.early_stopping_grace_epochs")
    return SearchSettings(sampler=sampler, params=params, objectives=objectives,
                          early_stopping=_get(t, "early_stopping", bool, True, "search."),
                          early_stopping_min_dominating=min_dom,
                          early_stopping_grace_epochs=grace)


def _default_params() -> dict:
    # Thresholds sqrt(2 lam / beta) from 1e-4 to 0.14: the scale of PyTorch-initialised weights.
    return {"lam": {"low": 1e-7, "high": 1e-3, "log": True},
            "beta": {"low": 0.1, "high": 10.0, "log": True},
            "lr": {"low": 1e-4, "high": 1e-2, "log": True}}


def _parse_param(name: str, t: Any, *, check_train: bool = True) -> Param:
    where = f"search.params.{name}"
    # a per-layer threshold multiplier: Optuna's parameters are flat, the config folds them in
    multiplier = name.startswith("threshold_multipliers.") and len(name) > len("threshold_multipliers.")
    if check_train and name not in _train_fields() and not multiplier:
        raise SpecError(f"{where}: {_show(name)} is not a training field; known: "
                        f"{', '.join(_train_fields())}")
    if not isinstance(t, dict):
        raise SpecError(f"{where} must be a table like {{low = 1e-4, high = 1e-2, log = true}}"
                        f" or {{values = [...]}}, got {_show(t)}")
    _only_keys(t, ("low", "high", "log", "int", "values"), where + ".")
    if "values" in t:
        if set(t) - {"values"}:
            raise SpecError(f"{where}: give either 'values' or 'low'/'high', not both")
        values = t["values"]
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}.values must be a non-empty list, got {_show(values)}")
        for v in values:
            # Optuna's categorical choices are scalars; a list (a set of tensors) is not one.
            if not isinstance(v, (str, int, float, bool)):
                raise SpecError(f"{where}.values: each value must be a string, number or boolean,"
                                f" got {_show(v)}")
            if isinstance(v, float) and not math.isfinite(v):
                raise SpecError(f"{where}.values: each number must be finite, got {_show(v)}")
        if len({(type(v), v) for v in values}) != len(values):
            raise SpecError(f"{where}.values lists a value twice: {_show(values)}")
        return Param(name=name, values=tuple(values))
    for key in ("low", "high"):
        if key not in t:
            raise SpecError(f"missing key '{where}.{key}'")
    integer = _get(t, "int", bool, False, where + ".")
    kind = int if integer else float
    low = _get(t, "low", kind, None, where + ".")
    high = _get(t, "high", kind, None, where + ".")
    log = _get(t, "log", bool, False, where + ".")
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
    c, g = r.cpus_per_trial, r.gpus_per_trial
    if not RESOURCE_UNIT <= c <= MAX_CPUS_PER_TRIAL:
        raise SpecError(f"resources.cpus_per_trial must be in [{RESOURCE_UNIT:g}, "
                        f"{MAX_CPUS_PER_TRIAL}] (one trial runs on one machine), got {c!r}")
    if not (g == 0 or RESOURCE_UNIT <= g <= 1 or (g == int(g) and 1 <= g <= MAX_GPUS_PER_TRIAL)):
        raise SpecError(f"resources.gpus_per_trial must be 0, a fraction in [{RESOURCE_UNIT:g}, 1] "
                        f"(e.g. 0.25, so four trials share a GPU) or a whole number up to "
                        f"{MAX_GPUS_PER_TRIAL} (one trial runs on one machine), got {g!r}")
    return r


def _parse_cluster(t: dict) -> ClusterSettings:
    _only_keys(t, ("address", "connect_timeout_s"), "cluster.")
    address = _get(t, "address", str, None, "cluster.")
    timeout = _get(t, "connect_timeout_s", float, ClusterSettings.connect_timeout_s, "cluster.")
    _in_range(timeout, 1, 3600, "cluster.connect_timeout_s", " (seconds)")
    if address in ("", "local"):
        address = None
    # host:port, or ray://host[:port] (Ray Client; its port defaults to 10001)
    found = re.match(r"^(ray://)?[\w.-]{1,253}(?::(\d{1,5}))?$", address or "")
    valid = found and (found.group(2) or found.group(1)) and int(found.group(2) or 0) <= 65535
    if address is not None and not (address == "auto" or valid):
        raise SpecError(f"cluster.address must be empty (start a local Ray), 'auto', "
                        f"'ray://host:port' or 'host:port' (port <= 65535), got {_show(address)}")
    return ClusterSettings(address=address, connect_timeout_s=timeout)


def _check_grid_size(study: StudySettings, search: SearchSettings) -> None:
    """The grid sampler proposes each point once; more trials would train repeats."""
    if search.sampler != "grid":
        return
    size = math.prod(len(p.values) for p in search.params)
    if study.trials > size:
        shape = " x ".join(f"{len(p.values)} {p.name}" for p in search.params) or "no parameters"
        raise SpecError(f"study.trials = {study.trials} is more than the grid's {size} points "
                        f"({shape}): the grid sampler would train repeats; set trials <= {size}")


def grid_size(spec: StudySpec) -> int | None:
    """Number of points of a grid study (None for other samplers)."""
    if spec.search.sampler != "grid":
        return None
    return math.prod(len(p.values) for p in spec.search.params)


def _check_train(train: dict, search: SearchSettings, resources: Resources) -> None:
    """Validate the fixed fields through TrainConfig itself, with each searched field at a value
    from its range, so a bad fixed value fails here rather than inside every trial; then build
    each distinct network on the meta device (no memory, no data), which catches a `sparsify`
    name the network does not have."""
    from trainables.config import ConfigError, TrainConfig
    from trainables.preflight import check_config
    for p in search.params:
        if p.name in train:
            raise SpecError(f"train.{p.name} is fixed and also searched (search.params.{p.name});"
                            f" keep one")
    given = set(train) | {p.name for p in search.params}
    if "lam" in given and "threshold" in given:
        raise SpecError("train/search.params: give lam or threshold, not both (threshold t sets "
                        "lam = beta t^2 / 2)")
    for key in train:
        if key not in _train_fields():
            raise SpecError(f"unknown key {_show('train.' + key)}; known: "
                            f"{', '.join(_train_fields())}")
    if isinstance(train.get("data_root"), str):
        _check_path(train["data_root"], "train.data_root")
    probe = dict(train)
    probes: list[tuple[str, dict]] = [("train", probe)]
    for p in search.params:
        for value in (p.values if p.values is not None else (p.low, p.high)):
            probes.append((f"search.params.{p.name}", {**probe, p.name: value}))
    checked: set = set()
    for where, values in probes:
        try:
            config = TrainConfig.from_dict(values)
            key = (config.model, config.dataset, config.sparsify, config.dropout, config.device,
                   tuple(config.multipliers))
            if key not in checked:
                checked.add(key)
                check_config(config, gpus=resources.gpus_per_trial)
        except ConfigError as exc:
            if where != "train" and where.rsplit(".", 1)[1] not in str(exc):
                where = "train"
            raise SpecError(f"{where}: {exc}") from None
