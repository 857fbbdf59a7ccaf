"""The search: Optuna distributions, samplers and the storage that keeps the study's state."""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.distributions import (BaseDistribution, CategoricalDistribution,
                                  FloatDistribution, IntDistribution)

from study.spec import Param, StudySpec

OPTUNA_DB = "optuna.db"


def distribution(p: Param) -> BaseDistribution:
    if p.values is not None:
        return CategoricalDistribution(list(p.values))
    if p.integer:
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(p.low, p.high, log=p.log)


def search_space(spec: StudySpec) -> dict[str, BaseDistribution]:
    return {p.name: distribution(p) for p in spec.search.params}


def make_sampler(spec: StudySpec, seed: int | None = None) -> optuna.samplers.BaseSampler:
    """Optuna's sampler by name. Multi-objective capable: tpe, nsga2, nsga3, gp, random, qmc."""
    name = spec.search.sampler
    seed = spec.study.seed if seed is None else seed
    if name == "tpe":
        # multivariate TPE models lam and beta jointly: the threshold depends on their ratio.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True,
                                          n_startup_trials=min(10, max(2, spec.study.trials // 4)))
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=_population(spec))
    if name == "nsga3":
        return optuna.samplers.NSGAIIISampler(seed=seed, population_size=_population(spec))
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(2, spec.study.trials // 4)))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True)
    if name == "grid":
        grid = {p.name: list(p.values) for p in spec.search.params}
        return optuna.samplers.GridSampler(grid, seed=seed)
    raise ValueError(f"unknown sampler {name!r}")  # unreachable: the spec validated it


def _population(spec: StudySpec) -> int:
    """A generation no larger than a quarter of the budget, so evolution gets a few rounds."""
    return max(4, min(50, spec.study.trials // 4))


def storage_url(local_dir: Path) -> str:
    return f"sqlite:///{(local_dir / OPTUNA_DB).resolve()}"


def open_storage(local_dir: Path) -> optuna.storages.RDBStorage:
    local_dir.mkdir(parents=True, exist_ok=True)
    # A generous timeout: the driver is the only writer, but a status reader may hold the file.
    return optuna.storages.RDBStorage(storage_url(local_dir),
                                      engine_kwargs={"connect_args": {"timeout": 30}})

