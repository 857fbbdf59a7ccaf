"""KMNIST, EMNIST, CIFAR-100 and SVHN through the real loading code, from tiny files written in each
dataset's real format (IDX .gz, python pickles and their tarball, MATLAB .mat); and the user's own
loader through `package.module:loader`.

torchvision checks CIFAR's and SVHN's files against the md5 sums of the real releases: the tests
put the sums of their tiny files in its tables, and nothing else of torchvision is replaced."""
from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from torchvision import datasets

from trainables.config import ConfigError, TrainConfig
from trainables.data import DatasetNotFound, dataset_shape, load_splits, split_indices
from trainables.models import check_model
from .helpers import tiny_config, write_idx, write_mnist

CPU = torch.device("cpu")


def config_for(dataset: str, root: Path, **changes) -> TrainConfig:
    return tiny_config(dataset=dataset, data_root=str(root), val_size=10, normalize=False, **changes)


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def expected_train(images: np.ndarray, labels: np.ndarray, config: TrainConfig):
    train_idx, _ = split_indices(len(labels), config.val_size, config.train_subset, config.data_seed)
    return torch.from_numpy(images).float()[train_idx] / 255, torch.from_numpy(labels).long()[train_idx]


def assert_train_split(splits, images, labels, config):
    x, y = expected_train(images, labels, config)
    assert torch.equal(splits.train[0], x) and torch.equal(splits.train[1], y)


# --- KMNIST and EMNIST: IDX files --------------------------------------------------------------

def test_kmnist_is_read_from_its_own_folder(tmp_path):
    arrays = write_mnist(tmp_path, "KMNIST", seed=4)
    config = config_for("kmnist", tmp_path)
    splits = load_splits(config, CPU)
    assert_train_split(splits, arrays["train-images-idx3-ubyte"][:, None], arrays["train-labels-idx1-ubyte"],
                       config)
    assert splits.in_shape == (1, 28, 28) and splits.num_classes == 10


def write_emnist(root: Path, split: str, classes: int, *, n_train: int = 40, n_test: int = 12) -> dict:
    """EMNIST's files of one split, gzipped, as the release's zip holds them."""
    rng = np.random.default_rng(7)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, classes, n_train),
              "test-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "test-labels-idx1-ubyte": rng.integers(0, classes, n_test)}
    for name, array in arrays.items():
        write_idx(root / "EMNIST" / "raw" / f"emnist-{split}-{name}", array)
    return arrays


def test_emnist_balanced_has_47_classes_and_upright_images(tmp_path):
    arrays = write_emnist(tmp_path, "balanced", 47)
    config = config_for("emnist_balanced", tmp_path)
    splits = load_splits(config, CPU)
    upright = arrays["train-images-idx3-ubyte"].transpose(0, 2, 1)[:, None]  # stored transposed
    assert_train_split(splits, upright, arrays["train-labels-idx1-ubyte"], config)
    assert splits.num_classes == 47 and dataset_shape(config) == ((1, 28, 28), 47)
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test-labels-idx1-ubyte"]))


def test_emnist_splits_are_separate_files_with_their_own_classes(tmp_path):
    write_emnist(tmp_path, "balanced", 47)
    with pytest.raises(DatasetNotFound, match=r"emnist_letters not found: looked for "
                                              r"emnist-letters-train-images-idx3-ubyte\[.gz\]"):
        load_splits(config_for("emnist_letters", tmp_path), CPU)
    assert dataset_shape(config_for("emnist_letters", tmp_path)) == ((1, 28, 28), 27)  # labels 1..26
    assert dataset_shape(config_for("emnist_byclass", tmp_path)) == ((1, 28, 28), 62)


# --- CIFAR-100: python pickles, and the tarball they come in -----------------------------------

def write_cifar100(root: Path, monkeypatch, *, n_train: int = 30, n_test: int = 12) -> dict:
    """cifar-100-python/{train,test,meta} as in the release (rows of 3072 bytes, R then G then B
    planes; fine and coarse labels), with torchvision's md5 table pointed at them."""
    rng = np.random.default_rng(11)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n).tolist()
        arrays[name] = (data, np.array(fine))
        with open(folder / name, "wb") as f:
            pickle.dump({"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} batch",
                         "fine_labels": fine, "coarse_labels": [c // 5 for c in fine], "data": data}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class_{i}" for i in range(100)],
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, f)
    monkeypatch.setattr(datasets.CIFAR100, "train_list", [["train", md5(folder / "train")]])
    monkeypatch.setattr(datasets.CIFAR100, "test_list", [["test", md5(folder / "test")]])
    monkeypatch.setattr(datasets.CIFAR100, "meta", {**datasets.CIFAR100.meta, "md5": md5(folder / "meta")})
    return arrays


def test_cifar100_has_100_fine_classes_in_three_channels(tmp_path, monkeypatch):
    arrays = write_cifar100(tmp_path, monkeypatch)
    config = config_for("cifar100", tmp_path)
    splits = load_splits(config, CPU)
    data, fine = arrays["train"]
    assert_train_split(splits, data.reshape(-1, 3, 32, 32), fine, config)
    assert splits.in_shape == (3, 32, 32) and splits.num_classes == 100
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test"][1]))


def test_cifar100_is_extracted_from_its_tarball(tmp_path, monkeypatch):
    staging = tmp_path / "staging"
    arrays = write_cifar100(staging, monkeypatch)
    root = tmp_path / "data"
    root.mkdir()
    tarball = root / "cifar-100-python.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(staging / "cifar-100-python", arcname="cifar-100-python")
    monkeypatch.setattr(datasets.CIFAR100, "tgz_md5", md5(tarball))
    config = config_for("cifar100", root)
    splits = load_splits(config, CPU)  # no download: torchvision finds the tarball's md5 right
    assert_train_split(splits, arrays["train"][0].reshape(-1, 3, 32, 32), arrays["train"][1], config)
    assert (root / "cifar-100-python" / "train").is_file()


def test_a_corrupted_cifar100_file_is_one_clear_error(tmp_path, monkeypatch):
    write_cifar100(tmp_path, monkeypatch)
    with open(tmp_path / "cifar-100-python" / "train", "ab") as f:
        f.write(b"x")
    with pytest.raises(DatasetNotFound, match=r"^cifar100 in .*: RuntimeError: Dataset not found or "
                                              r"corrupted.*md5"):
        load_splits(config_for("cifar100", tmp_path), CPU)


def test_missing_cifar100_names_its_folder_and_tarball(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"cifar100 not found: .*cifar-100-python and .*"
                                              r"cifar-100-python.tar.gz"):
        load_splits(config_for("cifar100", tmp_path), CPU)


# --- SVHN: MATLAB files ------------------------------------------------------------------------

def write_svhn(root: Path, monkeypatch, *, n_train: int = 30, n_test: int = 12) -> dict:
    """train_32x32.mat and test_32x32.mat: X is (32, 32, 3, N) uint8, y is (N, 1) with the digit
    0 labelled 10, as in the release."""
    rng = np.random.default_rng(13)
    arrays, table = {}, dict(datasets.SVHN.split_list)
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        digits = np.arange(n) % 10
        path = root / f"{split}_32x32.mat"
        scipy.io.savemat(path, {"X": images.transpose(2, 3, 1, 0), "y": np.where(digits == 0, 10, digits)[:, None]})
        arrays[split] = (images, digits)
        table[split] = [table[split][0], path.name, md5(path)]
    monkeypatch.setattr(datasets.SVHN, "split_list", table)
    return arrays


def test_svhn_digits_are_three_channel_with_zero_as_label_0(tmp_path, monkeypatch):
    arrays = write_svhn(tmp_path, monkeypatch)
    config = config_for("svhn", tmp_path)
    splits = load_splits(config, CPU)
    assert_train_split(splits, *arrays["train"], config)
    assert splits.in_shape == (3, 32, 32) and splits.num_classes == 10
    assert torch.equal(splits.test[1], torch.from_numpy(arrays["test"][1]))
    assert 0 in splits.test[1].tolist() and 10 not in splits.test[1].tolist()


def test_missing_svhn_says_which_files(tmp_path):
    with pytest.raises(DatasetNotFound, match=r"svhn not found: looked for train_32x32.mat and test_32x32.mat"):
        load_splits(config_for("svhn", tmp_path), CPU)


def test_the_networks_are_built_for_each_dataset_s_shape_and_classes():
    for dataset, last in (("cifar100", 100), ("emnist_byclass", 62), ("svhn", 10)):
        check_model(TrainConfig(dataset=dataset, model="resnet20"))
        check_model(TrainConfig(dataset=dataset, model="lenet5"))
    with pytest.raises(ConfigError, match=r"^dataset='imagenet' is not allowed; allowed: .*'cifar100', "
                                          r"'svhn' or 'package.module:loader'"):
        TrainConfig(dataset="imagenet")


# --- the user's loader -------------------------------------------------------------------------

LOADER = "tests.study.user_code:digits"


def test_a_loader_s_uint8_numpy_arrays_become_the_splits():
    from tests.study.user_code import digits
    train_x, train_y, test_x, test_y = digits("unused", False)
    config = tiny_config(dataset=LOADER, val_size=100, normalize=False)
    splits = load_splits(config, CPU)
    assert_train_split(splits, train_x, train_y, config)
    assert torch.equal(splits.test[0], torch.from_numpy(test_x).float() / 255)
    assert splits.num_classes == 10 and len(splits.val[1]) == 100


def test_a_loader_s_float_images_are_kept_as_they_are():
    from tests.study.user_code import colour_images
    config = tiny_config(dataset="tests.study.user_code:colour_images", val_size=50, normalize=False)
    splits = load_splits(config, CPU)
    assert torch.equal(splits.test[0], colour_images("", False)["test_x"]) and splits.in_shape == (3, 32, 32)


@pytest.mark.parametrize("loader, error, message", [
    ("undeclared", ConfigError, r"the loader must declare .* undeclared.in_shape = \(3, 32, 32\)"),
    ("failing_factory", DatasetNotFound, r"the loader raised ValueError: no network for you \(called as "
                                         r"loader\('data', False\)\)"),
])
def test_a_loader_that_cannot_be_used_is_one_line_naming_it(loader, error, message, monkeypatch):
    from tests.study import user_code
    monkeypatch.setattr(user_code.failing_factory, "in_shape", (1, 28, 28), raising=False)
    monkeypatch.setattr(user_code.failing_factory, "num_classes", 10, raising=False)
    with pytest.raises(error, match=rf"^dataset='tests.study.user_code:{loader}': {message}"):
        load_splits(tiny_config(dataset=f"tests.study.user_code:{loader}", data_root="data"), CPU)


def test_a_loader_must_keep_its_declared_shape_and_classes(monkeypatch):
    from tests.study import user_code
    monkeypatch.setattr(user_code.digits, "num_classes", 5)
    with pytest.raises(ConfigError, match=r"train_y has labels in \[0, 9\]; expected \[0, 4\] \(5 classes\)"):
        load_splits(tiny_config(dataset=LOADER), CPU)
    monkeypatch.setattr(user_code.digits, "in_shape", (3, 28, 28))
    with pytest.raises(ConfigError, match=r"train_x has shape \(600, 1, 28, 28\)"):
        load_splits(tiny_config(dataset=LOADER), CPU)
