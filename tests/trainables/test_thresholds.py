"""Per-tensor thresholds and the ramp: the pure maths of `trainables.thresholds`."""
from __future__ import annotations

import math

import pytest

from trainables.thresholds import (base_thresholds, implied_lambdas, lam_of, multiplier, ramp_factor,
                                   scale, threshold_of, unmatched_multipliers)


def test_threshold_and_lambda_are_inverse_under_the_same_beta():
    assert threshold_of(lam_of(0.05, 2.0), 2.0) == pytest.approx(0.05, rel=1e-15)
    assert lam_of(0.1, 1.0) == pytest.approx(0.005)


def test_scales_global_std_fan_in():
    assert scale("global", std=0.3, fan_in=400) == 1.0
    assert scale("std", std=0.3, fan_in=400) == 0.3
    assert scale("fan_in", std=0.3, fan_in=400) == 1 / 20
    with pytest.raises(ValueError, match="threshold_scale='l2'"):
        scale("l2", std=1.0, fan_in=1)


def test_a_multiplier_names_a_parameter_a_layer_or_a_glob_and_the_last_match_wins():
    m = {"fc*": 2.0, "conv1": 0.5, "fc2.weight": 3.0}
    assert multiplier("conv1.weight", m) == 0.5
    assert multiplier("fc1.weight", m) == 2.0
    assert multiplier("fc2.weight", m) == 3.0
    assert multiplier("conv2.weight", m) == 1.0
    assert unmatched_multipliers(["conv1.weight", "fc1.weight"], {"conv1": 1.0, "conv9": 2.0}) == ["conv9"]


def test_global_thresholds_are_exactly_t_and_imply_lambda_l_from_s_and_m():
    t = math.sqrt(2 * 1e-4 / 0.7)
    assert base_thresholds(t, {"a.weight": 1.0, "b.weight": 1.0}, {}) == {"a.weight": t, "b.weight": t}
    per = base_thresholds(0.1, {"a.weight": 0.2, "b.weight": 0.5}, {"b": 4.0})
    assert per == pytest.approx({"a.weight": 0.02, "b.weight": 0.2})
    assert implied_lambdas(per, 2.0) == pytest.approx({"a.weight": 0.02 ** 2, "b.weight": 0.2 ** 2})


@pytest.mark.parametrize("ramp, expected", [
    ("linear", [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]),
    ("cubic", [0.0, 1 - 0.75 ** 3, 1 - 0.5 ** 3, 1 - 0.25 ** 3, 1.0, 1.0]),
])
def test_the_ramp_grows_from_zero_to_one_over_its_steps(ramp, expected):
    assert [ramp_factor(k, 4, ramp) for k in range(6)] == pytest.approx(expected)
    assert ramp_factor(0, 0, ramp) == 1.0  # no ramp


def test_the_cubic_ramp_is_ahead_of_the_linear_one():
    assert all(ramp_factor(k, 10, "cubic") > ramp_factor(k, 10, "linear") for k in range(1, 10))
