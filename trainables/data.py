"""Datasets as whole tensors on the trial's device.

Each split is loaded once, normalised once, and moved to the device; a batch is an index slice
of a per-epoch permutation. No DataLoader, no per-sample transforms. Files are found in
torchvision's layout under `data_root` and are never written there unless downloading into a
writable root: decoded uint8 tensors are cached under `$RVSM_CACHE` (default
`~/.cache/rvsm-study`), guarded by a file lock because several trials on a node may decode at once.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from .config import ConfigError, TrainConfig

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_LIKE = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}
Raw = dict[str, Tensor]  # train_x, train_y, test_x, test_y: uint8 NCHW images, int64 labels


class DatasetNotFound(ValueError):
    """The dataset's files are not where they were looked for and could not be downloaded."""


@dataclass(frozen=True)
class Splits:
    """Float images (N, C, H, W) and int64 labels, on one device; val is held out of train."""

    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    num_classes: int = 10

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train[0].shape[1:])


def load_splits(config: TrainConfig, device: torch.device) -> Splits:
    raw = raw_dataset(config)
    train, val = split_indices(len(raw["train_y"]), config.val_size, config.train_subset, config.data_seed)
    images = [_as_float(x, device) for x in (raw["train_x"][train], raw["train_x"][val], raw["test_x"])]
    if config.normalize:
        images = standardize(images)
    labels = [y.to(device) for y in (raw["train_y"][train], raw["train_y"][val], raw["test_y"])]
    return Splits(*zip(images, labels))


def _as_float(images: Tensor, device: torch.device) -> Tensor:
    """uint8 travels to the device (a quarter of the bytes), then becomes [0, 1] floats there."""
    return images.to(device).float().div_(255)


def standardize(images: list[Tensor]) -> list[Tensor]:
    """Per-channel mean and std of the first (the training) images, applied to all, in place."""
    mean = images[0].mean(dim=(0, 2, 3), keepdim=True)
    std = images[0].std(dim=(0, 2, 3), keepdim=True)
    return [x.sub_(mean).div_(std) for x in images]


def split_indices(n: int, val_size: int, train_subset: int, seed: int) -> tuple[Tensor, Tensor]:
    """(train, validation) indices into a training split of n images: one seeded permutation."""
    if val_size >= n:
        raise ConfigError(f"val_size={val_size} is out of range; allowed: [1, {n - 1}] "
                          f"(the training split has {n} images)")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val, train = order[:val_size], order[val_size:]
    if train_subset > len(train):
        raise ConfigError(f"train_subset={train_subset} is out of range; allowed: [0, {len(train)}] "
                          f"({n} training images less val_size={val_size})")
    return (train[:train_subset] if train_subset else train), val


def raw_dataset(config: TrainConfig) -> Raw:
    if config.dataset == "synthetic":
        return synthetic(config.synthetic_size + config.val_size, max(config.synthetic_size // 10, 10),
                         seed=config.data_seed)
    find = _find_cifar10 if config.dataset == "cifar10" else _find_mnist_like
    files, decode = find(config.dataset, Path(config.data_root), config.download)
    return _cached(config.dataset, files, decode)


def synthetic(n_train: int, n_test: int, *, seed: int) -> Raw:
    """Class-separable images shaped like MNIST: a fixed random pattern per class, plus noise."""
    g = torch.Generator().manual_seed(seed)
    patterns = torch.rand(10, 1, 28, 28, generator=g)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        x = 0.6 * patterns[y] + 0.4 * torch.rand(n, 1, 28, 28, generator=g)
        return x.mul(255).round().to(torch.uint8), y

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def cache_dir() -> Path:
    return Path(os.environ.get("RVSM_CACHE") or "~/.cache/rvsm-study").expanduser()


# --- finding files ----------------------------------------------------------------------------

def _find_mnist_like(dataset: str, root: Path, download: bool) -> tuple[list[Path], Callable[[], Raw]]:
    folder = MNIST_LIKE[dataset].__name__
    files = _idx_files(root / folder / "raw")
    if files is None and download:
        target = _download(dataset, root, lambda r: MNIST_LIKE[dataset](r, download=True))
        files = _idx_files(target / folder / "raw")
    if files is None:
        where = root.resolve() / folder / "raw"
        raise DatasetNotFound(
            f"{dataset} not found: looked for {', '.join(f + '[.gz]' for f in IDX_FILES)} in {where}. "
            f"Put the four IDX files there (data_root/{folder}/raw/<name>.gz, torchvision's layout), "
            "point data_root at a folder that holds them, or set download = true (--download true).")
    return files, lambda: _decode_idx(files)


def _idx_files(raw: Path) -> list[Path] | None:
    """The four IDX files, extracted or gzipped, or None when any is missing."""
    found = [next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None) for name in IDX_FILES]
    return None if None in found else found


def _decode_idx(files: list[Path]) -> Raw:
    train_x, train_y, test_x, test_y = (
        _read_idx(path, read_image_file if "images" in path.name else read_label_file) for path in files)
    return {"train_x": train_x.unsqueeze(1), "train_y": train_y,
            "test_x": test_x.unsqueeze(1), "test_y": test_y}


def _read_idx(path: Path, reader: Callable[[str], Tensor]) -> Tensor:
    """torchvision's IDX reader takes an extracted file: a .gz is extracted to a temporary one."""
    if path.suffix != ".gz":
        return reader(str(path))
    cache_dir().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp, gzip.open(path, "rb") as src:
        extracted = Path(tmp) / path.stem
        with open(extracted, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return reader(str(extracted))


def _find_cifar10(dataset: str, root: Path, download: bool) -> tuple[list[Path], Callable[[], Raw]]:
    base = datasets.CIFAR10.base_folder
    tarball = root / datasets.CIFAR10.filename
    if not (root / base).is_dir() and (download or tarball.is_file()):
        root = _download(dataset, root, lambda r: datasets.CIFAR10(r, download=True), tarball)
    if not (root / base).is_dir():
        raise DatasetNotFound(
            f"cifar10 not found: looked for {root.resolve() / base} and {tarball.resolve()}. "
            f"Put torchvision's CIFAR-10 there (data_root/{base}/ or data_root/{tarball.name}), "
            "point data_root at a folder that holds it, or set download = true (--download true).")
    return sorted((root / base).iterdir()), lambda: _decode_cifar10(root)


def _decode_cifar10(root: Path) -> Raw:
    train, test = (datasets.CIFAR10(str(root), train=split) for split in (True, False))
    nchw = lambda ds: torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # noqa: E731 (HWC -> CHW)
    return {"train_x": nchw(train), "train_y": torch.tensor(train.targets),
            "test_x": nchw(test), "test_y": torch.tensor(test.targets)}


def _download(dataset: str, root: Path, fetch: Callable[[str], object], archive: Path | None = None) -> Path:
    """Fetch into root, or into the cache when root is read-only; returns the root used."""
    target = root if _writable(root) else cache_dir() / "downloads" / dataset
    target.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target / f".{dataset}.lock")):
        if archive is not None and archive.is_file() and target != root:
            shutil.copy2(archive, target / archive.name)  # torchvision extracts beside the archive
        try:
            fetch(str(target))
        except (RuntimeError, OSError) as e:
            raise DatasetNotFound(f"{dataset}: download into {target.resolve()} failed: "
                                  f"{str(e).strip().splitlines()[0]}") from None
    return target


def _writable(path: Path) -> bool:
    while not path.exists():
        path = path.parent
    return os.access(path, os.W_OK)


# --- the decoded-tensor cache -----------------------------------------------------------------

def _cached(dataset: str, files: list[Path], decode: Callable[[], Raw]) -> Raw:
    """Decode once per node: later trials load the uint8 tensors from a .pt file."""
    path = cache_dir() / "data" / dataset / f"{_fingerprint(files)}.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not path.is_file():
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save(decode(), tmp)
                os.replace(tmp, path)  # readers never see half a file
    return torch.load(path, weights_only=True)


def _fingerprint(files: list[Path]) -> str:
    """Changes when any source file is replaced: absolute path, size and mtime of each."""
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()[:16]
