"""Per-tensor thresholds and their schedule: pure functions on numbers (no torch, no I/O).

RVSM's u = H_t(w) zeroes |w| <= t, the minimiser of lambda ||u||_0 + beta/2 ||u - w||^2 with
t = sqrt(2 lambda / beta) (Dinh & Xin). Here each sparsified tensor l gets its own threshold

    t_l = t * s_l * m_l

where t is the run's threshold (`TrainConfig.threshold`, or sqrt(2 lam / beta)), s_l a scale
chosen by `threshold_scale` and m_l a per-layer multiplier (`threshold_multipliers`, default 1).
Since H_t is the exact minimiser for a penalty lambda_l ||u_l||_0 with the same beta, each choice
amounts to a per-tensor penalty lambda_l = beta t_l^2 / 2 = lambda s_l^2 m_l^2:

- `global`: s_l = 1, one threshold for every tensor (lambda_l = lambda); how much of a layer is cut
  then follows its weight scale, which PyTorch's initialisation sets by the fan-in.
- `std`: s_l = the tensor's standard deviation at initialisation, so t is in units of the
  layer's own weight scale (lambda_l = lambda std_l^2), as Han et al. 2015 prune at
  "a quality parameter times the layer's standard deviation".
- `fan_in`: s_l = 1 / sqrt(fan_in), the scale of PyTorch's default (Kaiming-uniform) init up to
  a constant (lambda_l = lambda / fan_in).

A ramp (Zhu & Gupta 2017, "To prune, or not to prune") raises t from 0 to its value over the
first K steps: linear, t_k = t k/K, or cubic, t_k = t (1 - (1 - k/K)^3), their schedule for the
pruned fraction applied here to the threshold (fast at first, gentle as it nears its value).
"""
from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Iterable, Mapping

SCALES = ("global", "std", "fan_in")
RAMPS = ("linear", "cubic")


def threshold_of(lam: float, beta: float) -> float:
    """t = sqrt(2 lambda / beta): keeping w costs lambda, zeroing it costs beta/2 w^2."""
    return math.sqrt(2.0 * lam / beta)


def lam_of(threshold: float, beta: float) -> float:
    """lambda = beta t^2 / 2, the l0 weight whose threshold under coupling beta is t."""
    return beta * threshold * threshold / 2.0


def scale(kind: str, *, std: float, fan_in: int) -> float:
    """s_l of one tensor: 1 (`global`), its std at initialisation (`std`) or 1/sqrt(fan_in)
    (`fan_in`: inputs per output unit, in_features or in_channels x kernel area).
    Raises ValueError for an unknown kind."""
    if kind == "global":
        return 1.0
    if kind == "std":
        return std
    if kind == "fan_in":
        return 1.0 / math.sqrt(fan_in)
    raise ValueError(f"threshold_scale={kind!r} is not allowed; allowed: {', '.join(map(repr, SCALES))}")


def multiplier(name: str, multipliers: Mapping[str, float]) -> float:
    """m_l of the parameter `name` ("conv1.weight"): the value of the last key in `multipliers`
    that names it, its layer ("conv1") or a glob over either ("fc*"); 1.0 when none does."""
    found = 1.0
    for key, value in multipliers.items():
        if _names(key, name):
            found = value
    return found


def _names(key: str, name: str) -> bool:
    layer = name.rpartition(".")[0]
    return key in (name, layer) or fnmatchcase(name, key) or fnmatchcase(layer, key)


def unmatched_multipliers(names: Iterable[str], multipliers: Mapping[str, float]) -> list[str]:
    """Keys of `multipliers` that name none of the sparsified tensors `names` (a typo)."""
    names = tuple(names)
    return [key for key in multipliers if not any(_names(key, n) for n in names)]


def base_thresholds(t: float, scales: Mapping[str, float], multipliers: Mapping[str, float]) -> dict[str, float]:
    """t_l = t s_l m_l for each tensor in `scales` (name -> s_l); exactly t when s_l = m_l = 1."""
    out = {}
    for name, s in scales.items():
        m = multiplier(name, multipliers)
        out[name] = t if s == 1.0 and m == 1.0 else t * s * m
    return out


def ramp_factor(step: int, ramp_steps: int, ramp: str) -> float:
    """Share of the threshold applied at the optimizer step `step` (0-based, steps done so far):
    k/K (linear) or 1 - (1 - k/K)^3 (cubic) for k < K = `ramp_steps`, then 1. No ramp: 1."""
    if ramp_steps <= 0 or step >= ramp_steps:
        return 1.0
    x = step / ramp_steps
    if ramp == "linear":
        return x
    if ramp == "cubic":
        return 1.0 - (1.0 - x) ** 3
    raise ValueError(f"ramp={ramp!r} is not allowed; allowed: {', '.join(map(repr, RAMPS))}")


def ramped(thresholds: Mapping[str, float], factor: float) -> dict[str, float]:
    """The thresholds at a ramp factor (the same dict's values when the factor is 1)."""
    return dict(thresholds) if factor == 1.0 else {n: t * factor for n, t in thresholds.items()}


def implied_lambdas(thresholds: Mapping[str, float], beta: float) -> dict[str, float]:
    """lambda_l = beta t_l^2 / 2 of each tensor: the per-tensor l0 weights these thresholds minimise."""
    return {name: lam_of(t, beta) for name, t in thresholds.items()}


def recorded_params(config: dict) -> dict:
    """A trial's config as the results record it: with `threshold` > 0 (given, so lam was not),
    `lam` is the derived beta t^2 / 2, so that every trial has its lambda in `param_lam`."""
    t, beta = config.get("threshold") or 0.0, config.get("beta")
    if t > 0 and isinstance(beta, (int, float)):
        return {**config, "lam": lam_of(t, beta)}
    return config
