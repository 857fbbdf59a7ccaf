"""Networks beyond the three built in: ResNet-20, torchvision's classifiers, the user's factory;
the spec-time check on the meta device; glob patterns and exclusions in `sparsify`."""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

from trainables.config import ConfigError, TrainConfig
from trainables.models import build_model, check_model, count_parameters, torchvision_models
from trainables.rvsm import sparsified_names
from trainables.train import train
from .helpers import tiny_config

FACTORY = "tests.study.user_code:small_cnn"


# --- ResNet-20 ---------------------------------------------------------------------------------

def test_resnet20_has_he_et_al_s_size_with_option_a_shortcuts():
    model = build_model("resnet20", in_shape=(3, 32, 32), num_classes=10)
    assert count_parameters(model) == 269_722  # "0.27M" in He et al. 2016, table 6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 19 and isinstance(model.fc, nn.Linear)  # 19 convs + 1 fc = 20 layers
    assert not any(m.kernel_size == (1, 1) for m in convs)  # option A: shortcuts have no weights


def test_resnet20_classifies_cifar_shaped_images_and_downsamples_twice():
    model = build_model("resnet20", in_shape=(3, 32, 32), num_classes=100)
    features = model.layer3(model.layer2(model.layer1(model.conv1(torch.zeros(2, 3, 32, 32)))))
    assert features.shape == (2, 64, 8, 8) and model(torch.zeros(2, 3, 32, 32)).shape == (2, 100)


def test_resnet20_sparsifies_its_19_convs_and_fc_but_no_batch_norm():
    names = sparsified_names(build_model("resnet20", in_shape=(3, 32, 32)), "all")
    assert len(names) == 20 and names[0] == "conv1.weight" and names[-1] == "fc.weight"
    assert not any("bn" in n for n in names)


# --- torchvision -------------------------------------------------------------------------------

def test_a_torchvision_name_builds_torchvision_s_network_with_the_dataset_s_classes():
    model = build_model("resnet18", in_shape=(3, 32, 32), num_classes=7)
    assert model.fc.out_features == 7 and model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)
    assert "resnet18" in torchvision_models() and "fasterrcnn_resnet50_fpn" not in torchvision_models()


def test_one_channel_images_are_repeated_into_torchvision_s_three():
    torch.manual_seed(0)
    grey = build_model("resnet18", in_shape=(1, 28, 28), num_classes=10)
    torch.manual_seed(0)
    rgb = build_model("resnet18", in_shape=(3, 28, 28), num_classes=10)
    assert grey.conv1.weight.shape == rgb.conv1.weight.shape == (64, 3, 7, 7)  # torchvision's own layer
    grey.eval(), rgb.eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(grey(x), rgb(x.expand(-1, 3, -1, -1)))


def test_torchvision_networks_refuse_images_with_other_channel_counts():
    with pytest.raises(ConfigError, match=r"^model='resnet18' takes 3-channel images .* have 4 channels"):
        build_model("resnet18", in_shape=(4, 32, 32))


def test_a_torchvision_network_trains_through_rvsm():
    metrics = train(tiny_config(model="squeezenet1_1", epochs=1, synthetic_size=64, val_size=32,
                                sparsify=["features.*", "!features.0"]), lambda m, s: None)
    layers = json.loads(metrics["layer_sparsity_json"])
    assert "features.0.weight" not in layers and "features.3.squeeze.weight" in layers
    assert "classifier.1.weight" not in layers and 0 <= metrics["val_acc"] <= 1


# --- the user's factory ------------------------------------------------------------------------

def test_a_factory_is_called_with_the_dataset_s_shape_and_classes():
    model = build_model(FACTORY, in_shape=(3, 16, 16), num_classes=5)
    assert model.head.out_features == 5 and model.features[0].in_channels == 3
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 5)


def test_a_factory_network_trains_and_its_layers_are_named_as_the_user_named_them():
    metrics = train(tiny_config(model=FACTORY, epochs=1, sparsify="features.*"), lambda m, s: None)
    assert sorted(json.loads(metrics["layer_sparsity_json"])) == ["features.0.weight", "features.3.weight"]


@pytest.mark.parametrize("model, message", [
    ("tests.study.no_such_module:f", r"cannot import module 'tests.study.no_such_module': ModuleNotFoundError"),
    ("tests.study.user_code:missing", r"module 'tests.study.user_code' has no attribute 'missing'"),
    ("tests.study.user_code:failing_factory", r"the factory raised ValueError: no network for you \(called as"),
    ("tests.study.user_code:not_a_network", r"the factory returned a dict, expected a torch.nn.Module"),
])
def test_a_bad_factory_is_one_line_naming_it(model, message):
    with pytest.raises(ConfigError) as error:
        check_model(TrainConfig(model=model, dataset="synthetic"))
    text = str(error.value)
    assert text.startswith(f"model={model!r}") and "\n" not in text
    assert re.search(message, text)


def test_the_model_name_is_checked_for_its_form_when_the_config_is_made():
    with pytest.raises(ConfigError, match=r"^model='resnet' is not allowed; allowed: .*'resnet20', a "
                                          r"torchvision.models classifier .* or 'package.module:factory'"):
        TrainConfig(model="resnet")
    assert TrainConfig(model="my_pkg.nets:build").model == "my_pkg.nets:build"  # imported only when checked


# --- the spec-time check on the meta device ----------------------------------------------------

def test_check_model_builds_on_the_meta_device_without_memory():
    check_model(TrainConfig(model="resnet152", dataset="cifar100"))  # 60 M parameters: no memory used
    meta = build_model("resnet20", in_shape=(3, 32, 32), device="meta")
    assert all(p.is_meta for p in meta.parameters())


@pytest.mark.parametrize("changes, message", [
    (dict(model="vgg11", dataset="mnist"), r"^model='vgg11' does not run on the images of dataset 'mnist', "
                                           r"of shape \(1, 28, 28\): RuntimeError"),
    (dict(model="googlenet", dataset="cifar10"), r"^model='googlenet' returns GoogLeNetOutputs"),
    (dict(model="lenet5", sparsify=["conv*", "fc9"]), r"^sparsify=\['conv\*', 'fc9'\]: \['fc9'\] matches no"),
    (dict(model="resnet20", dataset="cifar10", sparsify=["*.bias"]), r"matches no sparsifiable tensor"),
])
def test_check_model_refuses_what_every_trial_would_fail_on(changes, message):
    with pytest.raises(ConfigError, match=message):
        check_model(TrainConfig(**changes))


# --- sparsify: globs and exclusions ------------------------------------------------------------

@pytest.mark.parametrize("sparsify, expected", [
    ("all", ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight")),
    ("conv*", ("conv1.weight", "conv2.weight")),
    (("fc?.weight",), ("fc1.weight", "fc2.weight")),
    (("!fc2",), ("conv1.weight", "conv2.weight", "fc1.weight")),
    (("*", "!conv*", "!*.bias"), ("fc1.weight", "fc2.weight")),  # biases are never chosen anyway
    (("fc2", "conv1"), ("conv1.weight", "fc2.weight")),  # in the network's order
])
def test_sparsify_takes_names_globs_and_exclusions(sparsify, expected):
    assert sparsified_names(build_model("lenet5"), sparsify) == expected


def test_globs_match_layer_names_and_never_normalisation_parameters():
    model = build_model("resnet20", in_shape=(3, 32, 32))
    assert sparsified_names(model, "layer3.*") == tuple(
        f"layer3.{b}.conv{c}.weight" for b in range(3) for c in (1, 2))
    assert sparsified_names(model, ("layer1.0.*",)) == ("layer1.0.conv1.weight", "layer1.0.conv2.weight")
    assert sparsified_names(model, ("!*.bn*", "!fc")) == sparsified_names(model, "all")[:-1]


@pytest.mark.parametrize("sparsify, message", [
    (("!nothing*",), r"\['!nothing\*'\] matches no sparsifiable tensor"),
    (("conv*", "!conv*"), r"leaves no tensor to sparsify"),
])
def test_an_exclusion_must_match_and_something_must_be_left(sparsify, message):
    with pytest.raises(ConfigError, match=message):
        sparsified_names(build_model("lenet5"), sparsify)


def test_a_single_name_needs_a_list_but_a_single_pattern_does_not():
    assert TrainConfig(sparsify="layer1.*").sparsify == "layer1.*"
    assert TrainConfig(sparsify="!fc3").sparsify == "!fc3"
    with pytest.raises(ConfigError, match=r"^sparsify='conv' is not allowed; allowed: 'all', 'fc1', a glob"):
        TrainConfig(sparsify="conv")
