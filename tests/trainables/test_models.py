"""The three networks: exact sizes, layer names, input shapes, and the notebook's N(0, 1) init."""
from __future__ import annotations

import pytest
import torch

from trainables.config import FIELDS
from trainables.models import MODELS, build_model, count_parameters


@pytest.mark.parametrize("name, params", [("notebook_cnn", 3_274_634), ("lenet5", 431_080),
                                          ("lenet300_100", 266_610)])
def test_parameter_counts(name, params):
    assert count_parameters(build_model(name)) == params


def test_notebook_cnn_layers_are_named_as_the_config_expects():
    names = [n for n, _ in build_model("notebook_cnn").named_parameters()]
    assert names == ["conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias",
                     "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert build_model("notebook_cnn").fc1.weight.shape == (1024, 3136)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32)])
def test_every_model_classifies_mnist_and_cifar_shapes(name, in_shape):
    model = build_model(name, in_shape=in_shape)
    assert model(torch.zeros(2, *in_shape)).shape == (2, 10)


def test_normal_init_draws_every_parameter_from_a_standard_normal():
    torch.manual_seed(0)
    model = build_model("notebook_cnn", init="normal")
    every = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert abs(every.mean().item()) < 0.01 and abs(every.std().item() - 1) < 0.01
    assert (model.fc1.weight.abs() < 0.1).float().mean().item() == pytest.approx(0.0797, abs=0.002)
    small = build_model("lenet300_100", init="normal")
    assert all(p.abs().max() > 0.5 for p in small.parameters())  # PyTorch's default: below 0.1


def test_dropout_is_notebook_cnn_s_drop_probability():
    assert build_model("notebook_cnn", dropout=0.25).dropout.p == 0.25


def test_config_choices_come_from_the_registry():
    assert FIELDS["model"].metadata["choices"] == tuple(MODELS)
