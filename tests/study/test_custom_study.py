"""The user's own network and data through a whole (tiny) study on the shared local Ray: a factory
and a loader from a test module, a torchvision network, glob patterns in `sparsify`, and the
shipped ResNet-20 study file on synthetic 3x32x32 images; the spec-time check refuses what every
trial would fail on before Ray starts."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from study.cli import main
from .conftest import study_text

ROOT = Path(__file__).resolve().parents[2]


def run_tiny(tmp_path: Path, name: str, train: str, *, trials: int = 1) -> pd.DataFrame:
    path = tmp_path / f"{name}.toml"
    path.write_text(study_text(name, tmp_path / "studies", trials=trials, concurrent=trials, train=train))
    assert main(["run", str(path)]) == 0
    return pd.read_parquet(tmp_path / "studies" / name / "results" / "trials")


def layers(trials: pd.DataFrame) -> list[list[str]]:
    return [sorted(json.loads(text)) for text in trials["metric_layer_sparsity_json"]]


def test_a_factory_a_loader_and_glob_sparsify_from_the_user_s_module(ray_session, tmp_path):
    trials = run_tiny(tmp_path, "own_code", """
        [train]
        dataset = "tests.study.user_code:digits"
        model = "tests.study.user_code:small_cnn"
        sparsify = ["features.*", "!features.3"]
        val_size = 100
        epochs = 1
        batch_size = 64
        """, trials=2)
    assert list(trials["state"]) == ["finished", "finished"]
    assert layers(trials) == [["features.0.weight"]] * 2  # the conv at features.3 excluded; no batch norm
    assert (trials["param_model"] == "tests.study.user_code:small_cnn").all()
    assert trials["metric_test_acc"].between(0, 1).all()


def test_a_torchvision_network_on_one_channel_images(ray_session, tmp_path):
    trials = run_tiny(tmp_path, "torchvision", """
        [train]
        dataset = "synthetic"
        synthetic_size = 256
        val_size = 64
        model = "resnet18"
        sparsify = "layer4.*"
        epochs = 1
        batch_size = 64
        """)
    assert list(trials["state"]) == ["finished"]
    assert layers(trials) == [sorted([f"layer4.{b}.{layer}.weight" for b in (0, 1) for layer in ("conv1", "conv2")]
                                     + ["layer4.0.downsample.0.weight"])]  # its batch norms never
    # torchvision's resnet18: 11,689,512 with 1000 classes; less fc 512 x 990 + 990 for 10
    assert int(trials["metric_params"].iloc[0]) == 11_689_512 - 512 * 990 - 990


def test_the_shipped_resnet20_study_runs_on_synthetic_cifar_shaped_images(ray_session, tmp_path):
    """CIFAR-10 itself is not on this machine: the study file as shipped, its data swapped for
    3x32x32 images from a loader and its length cut to one short trial."""
    overrides = ["study.trials=1", "study.max_concurrent=1", f"study.storage='{tmp_path / 'studies'}'",
                 "resources.gpus_per_trial=0", "resources.cpus_per_trial=1",
                 "train.dataset='tests.study.user_code:colour_images'", "train.val_size=50",
                 "train.epochs=1", "train.batch_size=64", "train.download=false"]
    args = ["run", str(ROOT / "studies" / "cifar10_resnet20.toml")]
    assert main(args + [item for o in overrides for item in ("--set", o)]) == 0
    trials = pd.read_parquet(tmp_path / "studies" / "cifar10_resnet20" / "results" / "trials")
    assert list(trials["state"]) == ["finished"]
    assert int(trials["metric_params"].iloc[0]) == 269_722
    assert len(layers(trials)[0]) == 20  # 19 convs and the fc
    assert trials["param_optimizer"].iloc[0] == "sgd"


@pytest.mark.parametrize("train, message", [
    ('model = "tests.study.user_code:nope"', "train: model='tests.study.user_code:nope': module "
                                             "'tests.study.user_code' has no attribute 'nope'"),
    ('model = "tests.study.user_code:failing_factory"', "the factory raised ValueError: no network for you"),
    ('model = "resnet18"\nsparsify = ["layer9.*"]', "['layer9.*'] matches no sparsifiable tensor of model ResNet"),
    ('dataset = "tests.study.user_code:undeclared"', "the loader must declare its images' shape"),
])
def test_what_every_trial_would_fail_on_is_refused_before_ray_starts(tmp_path, capsys, train, message):
    path = tmp_path / "bad.toml"
    path.write_text(study_text("bad", tmp_path / "studies", train=f"[train]\n{train}\n"))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "studies").exists()
