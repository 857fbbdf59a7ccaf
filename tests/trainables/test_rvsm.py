"""RVSM maths: the threshold, the sparsity measure and both update rules, each against an
independent reference (brute force, hand-counted zeros, an autograd oracle)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from trainables.config import ConfigError
from trainables.models import build_model
from trainables.rvsm import (Rvsm, classic_step, complement, hard_threshold, measure_sparsity, modified_step,
                             finetune_step, notebook_step, plain_step, select_step, sparse_tensors,
                             sparsified_names, threshold)


# --- threshold ---------------------------------------------------------------------------------

@pytest.mark.parametrize("lam, beta", [(5e-4, 0.1), (1e-4, 1.0), (0.02, 3.0)])
def test_threshold_minimises_the_splitting_objective(lam, beta):
    """u = H(w) minimises lam [u != 0] + beta/2 (u - w)^2, by brute force over a grid of u."""
    t = threshold(lam, beta)
    assert t == pytest.approx(math.sqrt(2 * lam / beta))
    w = torch.linspace(-3 * t, 3 * t, 601, dtype=torch.float64)
    candidates = torch.cat([torch.linspace(-4 * t, 4 * t, 4001, dtype=torch.float64), w, torch.zeros(1)])
    cost = lam * (candidates[None, :] != 0) + beta / 2 * (candidates[None, :] - w[:, None]) ** 2
    best = candidates[cost.argmin(dim=1)]
    not_a_tie = (w.abs() - t).abs() > 1e-9  # at |w| = t both choices cost the same
    torch.testing.assert_close(hard_threshold(w, t)[not_a_tie], best[not_a_tie], rtol=0, atol=1e-12)


def test_hard_threshold_matches_an_elementwise_reference():
    w = torch.randn(7, 5, 3)
    t = 0.4
    expected = torch.tensor([x if abs(x) > t else 0.0 for x in w.flatten().tolist()]).view_as(w)
    assert torch.equal(hard_threshold(w, t), expected)
    assert torch.equal(complement(w, t), w - expected)


def test_u_has_no_nonzero_at_or_below_the_threshold():
    w = torch.randn(1000)
    w[:10] = 0.25  # exactly at t: zeroed
    u = hard_threshold(w, 0.25)
    assert not ((u != 0) & (u.abs() <= 0.25)).any()
    assert torch.equal(u[u != 0], w[w.abs() > 0.25])


def test_hard_threshold_keeps_the_memory_layout():
    w = torch.randn(20, 1, 5, 5).to(memory_format=torch.channels_last)
    assert hard_threshold(w, 0.1).stride() == w.stride()


# --- sparsity ----------------------------------------------------------------------------------

def test_measure_sparsity_counts_known_zeros():
    a = torch.tensor([[0.0, 1.0], [0.0, 0.0]])   # 3 of 4 zero, sparsified
    b = torch.tensor([0.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # 1 of 6 zero, not sparsified
    s = measure_sparsity({"a": a, "b": b}, ["a"])
    assert s.sparsity == 0.75
    assert s.sparsity_all == 4 / 10
    assert (s.nonzeros, s.params) == (6, 10)
    assert s.compression == 10 / 6
    assert s.layers == {"a": 0.75}


def test_compression_of_an_all_zero_model_is_its_size_not_infinity():
    s = measure_sparsity({"a": torch.zeros(4, 3)}, ["a"])
    assert (s.nonzeros, s.compression, s.sparsity) == (0, 12.0, 1.0)


# --- which tensors -----------------------------------------------------------------------------

def test_sparsify_all_means_every_conv_and_linear_weight_and_no_bias():
    assert sparsified_names(build_model("lenet5"), "all") == (
        "conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")
    assert sparsified_names(build_model("lenet300_100"), "fc1") == ("fc1.weight",)


def test_sparsify_accepts_layer_or_parameter_names():
    model = build_model("notebook_cnn")
    assert sparsified_names(model, ("conv2", "fc2.weight")) == ("conv2.weight", "fc2.weight")


@pytest.mark.parametrize("names", [("fc1.bias",), ("conv9",)])
def test_sparsify_rejects_biases_and_unknown_names(names):
    with pytest.raises(ConfigError, match=r"sparsify=.*allowed: conv1.weight"):
        sparsified_names(build_model("lenet5"), names)


# --- update rules against an autograd oracle ----------------------------------------------------

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 2, 3)
        self.fc1 = nn.Linear(32, 6)
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(F.relu(self.conv1(x)).flatten(1))))


def oracle_loss(p: dict, x, y):
    """The same network written out by hand: independent of modules and `functional_call`."""
    h = F.relu(F.conv2d(x, p["conv1.weight"], p["conv1.bias"])).flatten(1)
    h = F.relu(F.linear(h, p["fc1.weight"], p["fc1.bias"]))
    return F.cross_entropy(F.linear(h, p["fc2.weight"], p["fc2.bias"]), y)


def grads_at(p: dict, x, y) -> dict:
    leaves = {k: v.detach().clone().requires_grad_() for k, v in p.items()}
    return dict(zip(leaves, torch.autograd.grad(oracle_loss(leaves, x, y), list(leaves.values()))))


LR, BETA, SPARSE = 0.1, 0.5, ("conv1.weight", "fc1.weight")


def one_sgd_step(step, coupling=False):
    torch.manual_seed(0)
    model = Tiny()
    w = {k: v.detach().clone() for k, v in model.named_parameters()}
    t = w["fc1.weight"].abs().median().item()  # about half of fc1 is zeroed
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    sparse = {n: p for n, p in model.named_parameters() if n in SPARSE}
    step(model, sparse, x, y, torch.optim.SGD(model.parameters(), lr=LR, momentum=0.0), Rvsm(t, BETA, coupling))
    after = {k: v.detach() for k, v in model.named_parameters()}
    u = {**w, **{n: hard_threshold(w[n], t) for n in SPARSE}}
    return w, u, after, x, y


def assert_updates(after, expected):
    for name in expected:
        torch.testing.assert_close(after[name], expected[name], rtol=1e-5, atol=1e-6, msg=name)


def test_classic_step_is_gradient_at_w_plus_coupling_to_u():
    w, u, after, x, y = one_sgd_step(classic_step)
    g = grads_at(w, x, y)
    assert_updates(after, {n: w[n] - LR * (g[n] + (BETA * (w[n] - u[n]) if n in SPARSE else 0)) for n in w})


def test_modified_step_is_gradient_at_u_applied_to_w():
    w, u, after, x, y = one_sgd_step(modified_step)
    g = grads_at(u, x, y)
    assert_updates(after, {n: w[n] - LR * g[n] for n in w})
    assert not torch.equal(after["fc1.weight"], u["fc1.weight"] - LR * g["fc1.weight"])  # w moves, not u


def test_modified_step_with_coupling_adds_beta_w_minus_u():
    w, u, after, x, y = one_sgd_step(modified_step, coupling=True)
    g = grads_at(u, x, y)
    assert_updates(after, {n: w[n] - LR * (g[n] + (BETA * (w[n] - u[n]) if n in SPARSE else 0)) for n in w})


def test_notebook_step_takes_sparsified_grads_at_u_and_the_others_at_w():
    w, u, after, x, y = one_sgd_step(notebook_step)
    g_u, g_w = grads_at(u, x, y), grads_at(w, x, y)
    assert_updates(after, {n: w[n] - LR * (g_u[n] if n in SPARSE else g_w[n]) for n in w})


def test_plain_step_is_sgd_and_is_what_lambda_zero_selects():
    w, _, after, x, y = one_sgd_step(plain_step)
    g = grads_at(w, x, y)
    assert_updates(after, {n: w[n] - LR * g[n] for n in w})
    assert select_step("modified", 0.0, False) is plain_step
    assert select_step("classic", 1e-4, False) is classic_step
    assert select_step("modified", 1e-4, True) is notebook_step


def _after_one_step(step, rv: Rvsm) -> dict:
    torch.manual_seed(0)
    model = Tiny()
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    sparse = {n: p for n, p in model.named_parameters() if n in SPARSE}
    step(model, sparse, x, y, torch.optim.Adam(model.parameters(), lr=LR), rv)
    return {k: v.detach() for k, v in model.named_parameters()}


@pytest.mark.parametrize("step, coupling", [(classic_step, False), (modified_step, False),
                                            (modified_step, True), (notebook_step, False)])
def test_per_tensor_thresholds_equal_to_t_step_bit_for_bit_like_the_one_threshold(step, coupling):
    one = _after_one_step(step, Rvsm(0.05, BETA, coupling))
    per = _after_one_step(step, Rvsm(dict.fromkeys(SPARSE, 0.05), BETA, coupling))
    assert all(torch.equal(one[k], per[k]) for k in one)


def test_each_tensor_is_cut_at_its_own_threshold():
    torch.manual_seed(0)
    w = {"a": torch.randn(100), "b": torch.randn(100)}
    u = sparse_tensors(w, ["a", "b"], {"a": 0.5, "b": 1.5})
    assert torch.equal(u["a"] != 0, w["a"].abs() > 0.5) and torch.equal(u["b"] != 0, w["b"].abs() > 1.5)


def test_finetune_step_keeps_frozen_zeros_zero_under_adam_and_weight_decay():
    torch.manual_seed(0)
    model = Tiny()
    sparse = {n: p for n, p in model.named_parameters() if n in SPARSE}
    masks = {n: (p.detach().abs() > 0.1).float() for n, p in sparse.items()}
    with torch.no_grad():
        for n, p in sparse.items():
            p.mul_(masks[n])
    optimizer = torch.optim.Adam(model.parameters(), lr=LR, weight_decay=0.1)
    before = {n: p.detach().clone() for n, p in sparse.items()}
    for _ in range(3):
        x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
        finetune_step(model, sparse, x, y, optimizer, Rvsm(0.0, BETA, masks=masks))
    for n, p in sparse.items():
        assert not p[masks[n] == 0].any()
        assert not torch.equal(p[masks[n] == 1], before[n][masks[n] == 1])
