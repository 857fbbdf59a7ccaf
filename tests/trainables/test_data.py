"""Data: real-format IDX files through the real loading path (gzipped, extracted, read-only),
the one clear error when files are missing, the held-out split, and the synthetic dataset."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets.mnist import read_image_file

from trainables import data
from trainables.config import ConfigError
from trainables.data import DatasetNotFound, load_splits, split_indices, synthetic
from trainables.train import train
from .helpers import tiny_config, write_mnist

CPU = torch.device("cpu")


def mnist_config(root: Path, **changes):
    return tiny_config(dataset="mnist", data_root=str(root), val_size=10, normalize=False, **changes)


def expected_splits(arrays: dict, config) -> dict:
    train_idx, val_idx = split_indices(len(arrays["train-labels-idx1-ubyte"]), config.val_size, config.train_subset,
                                       config.data_seed)
    images = torch.from_numpy(arrays["train-images-idx3-ubyte"]).float().unsqueeze(1) / 255
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"])
    return {"train": (images[train_idx], labels[train_idx]), "val": (images[val_idx], labels[val_idx])}


def assert_loaded_right(splits, arrays, config):
    expected = expected_splits(arrays, config)
    for name in ("train", "val"):
        x, y = getattr(splits, name)
        assert torch.equal(x, expected[name][0]) and torch.equal(y, expected[name][1])
    test_x, test_y = splits.test
    assert torch.equal(test_y, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    assert test_x.shape == (20, 1, 28, 28) and splits.in_shape == (1, 28, 28)


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_idx_files_load_into_whole_tensors(tmp_path, compress):
    arrays = write_mnist(tmp_path, compress=compress)
    config = mnist_config(tmp_path)
    assert_loaded_right(load_splits(config, CPU), arrays, config)


def test_fashion_mnist_is_read_from_its_own_folder(tmp_path):
    arrays = write_mnist(tmp_path, "FashionMNIST", seed=1)
    config = mnist_config(tmp_path).replace(dataset="fashion_mnist")
    assert_loaded_right(load_splits(config, CPU), arrays, config)


def snapshot(root: Path) -> dict:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def test_a_read_only_root_is_read_and_never_written(tmp_path):
    root = tmp_path / "shared"
    arrays = write_mnist(root)
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = snapshot(root)
    try:
        config = mnist_config(root)
        assert_loaded_right(load_splits(config, CPU), arrays, config)
        assert_loaded_right(load_splits(config, CPU), arrays, config)  # second time: from the cache
    finally:
        for p in [root, *root.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert snapshot(root) == before
    assert list((data.cache_dir() / "data" / "mnist").glob("*.pt"))


def test_a_changed_file_is_decoded_again(tmp_path):
    write_mnist(tmp_path, seed=2)
    load_splits(mnist_config(tmp_path), CPU)
    arrays = write_mnist(tmp_path, seed=3)
    os.utime(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz", ns=(1, 1))
    config = mnist_config(tmp_path)
    assert_loaded_right(load_splits(config, CPU), arrays, config)


def test_missing_files_raise_one_error_that_says_where_and_how(tmp_path):
    with pytest.raises(DatasetNotFound) as error:
        load_splits(mnist_config(tmp_path / "nowhere"), CPU)
    message = str(error.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw") in message
    assert "train-images-idx3-ubyte" in message and "download = true" in message
    assert isinstance(error.value, ValueError)


def test_missing_cifar10_names_its_folder(tmp_path):
    with pytest.raises(DatasetNotFound, match="cifar-10-batches-py"):
        load_splits(mnist_config(tmp_path).replace(dataset="cifar10"), CPU)


class FakeCIFAR10:
    """torchvision's CIFAR10 as far as the loader uses it (the real one insists on real md5s)."""

    base_folder, filename = "cifar-10-batches-py", "cifar-10-python.tar.gz"

    def __init__(self, root, train=True, download=False):
        n = 50 if train else 20
        self.data = np.random.default_rng(n).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        self.targets = [i % 10 for i in range(n)]


def test_cifar10_becomes_three_channel_tensors_that_lenet5_trains_on(tmp_path, monkeypatch):
    monkeypatch.setattr(data.datasets, "CIFAR10", FakeCIFAR10)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"stand-in")
    config = mnist_config(tmp_path).replace(dataset="cifar10", epochs=1)
    splits = load_splits(config, CPU)
    train_idx, _ = split_indices(50, config.val_size, 0, config.data_seed)
    images = torch.from_numpy(FakeCIFAR10(None).data).permute(0, 3, 1, 2).float() / 255  # HWC -> CHW
    assert splits.in_shape == (3, 32, 32) and torch.equal(splits.train[0], images[train_idx])
    normalized = load_splits(config.replace(normalize=True), CPU).train[0]
    assert torch.allclose(normalized.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert train(config, lambda metrics, state: None)["params"] == 657_080  # 3 input channels, fc1 1250 -> 500


class FakeMNIST:
    """Stands in for torchvision's downloader: writes the files where it is asked to."""

    def __init__(self, root, download):
        assert download
        write_mnist(Path(root))


def test_download_goes_to_the_cache_when_the_root_is_read_only(tmp_path, monkeypatch):
    monkeypatch.setitem(data.MNIST_LIKE, "mnist", type("MNIST", (FakeMNIST,), {}))
    monkeypatch.setattr(data, "_writable", lambda path: False)
    splits = load_splits(mnist_config(tmp_path / "ro", download=True), CPU)
    assert len(splits.test[1]) == 20
    assert not (tmp_path / "ro").exists()
    assert (data.cache_dir() / "downloads" / "mnist" / "MNIST" / "raw").is_dir()


def test_a_failed_download_is_the_same_clear_error(tmp_path, monkeypatch):
    def offline(root, download):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://...")

    monkeypatch.setitem(data.MNIST_LIKE, "mnist", offline)
    with pytest.raises(DatasetNotFound, match="mnist: download into .* failed: Error downloading"):
        load_splits(mnist_config(tmp_path, download=True), CPU)


def test_validation_is_held_out_with_a_fixed_seed():
    train, val = split_indices(100, 20, 0, seed=0)
    assert len(val) == 20 and len(train) == 80
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.equal(val, split_indices(100, 20, 0, seed=0)[1])
    assert not torch.equal(val, split_indices(100, 20, 0, seed=1)[1])


def test_train_subset_is_a_fixed_part_of_the_training_images():
    train, val = split_indices(100, 20, 30, seed=0)
    full, same_val = split_indices(100, 20, 0, seed=0)
    assert len(train) == 30 and set(train.tolist()) <= set(full.tolist()) and torch.equal(val, same_val)


@pytest.mark.parametrize("args, field", [((100, 100, 0), "val_size=100"), ((100, 20, 81), "train_subset=81")])
def test_splits_larger_than_the_data_name_the_field(args, field):
    with pytest.raises(ConfigError, match=f"^{field} is out of range"):
        split_indices(*args, seed=0)


def test_normalize_standardises_with_the_training_statistics():
    splits = load_splits(tiny_config(normalize=True), CPU)
    x = splits.train[0]
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_synthetic_data_is_seeded_shaped_like_mnist_and_separable():
    a, b = synthetic(500, 100, seed=0), synthetic(500, 100, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["train_x"].shape == (500, 1, 28, 28) and a["train_x"].dtype == torch.uint8
    assert set(a["train_y"].tolist()) == set(range(10))
    means = torch.stack([a["train_x"][a["train_y"] == c].float().mean(0) for c in range(10)])
    nearest = torch.cdist(a["test_x"].float().flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == a["test_y"]).float().mean() > 0.95


def test_synthetic_sizes_follow_the_config():
    splits = load_splits(tiny_config(synthetic_size=300, val_size=50), CPU)
    assert (len(splits.train[1]), len(splits.val[1]), len(splits.test[1])) == (300, 50, 30)


def test_the_test_files_are_in_the_real_idx_format(tmp_path):
    arrays = write_mnist(tmp_path / "plain", n_train=3, n_test=2, compress=False)
    raw = tmp_path / "plain" / "MNIST" / "raw"
    magic = {name: int.from_bytes((raw / name).read_bytes()[:4], "big") for name in arrays}
    assert magic == {"train-images-idx3-ubyte": 2051, "train-labels-idx1-ubyte": 2049,
                     "t10k-images-idx3-ubyte": 2051, "t10k-labels-idx1-ubyte": 2049}
    images = read_image_file(str(raw / "train-images-idx3-ubyte"))
    assert np.array_equal(images.numpy(), arrays["train-images-idx3-ubyte"])
