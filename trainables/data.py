"""Datasets as whole tensors on the trial's device.

Each split is loaded once, normalised once, and moved to the device; a batch is an index slice
of a per-epoch permutation. No DataLoader, no per-sample transforms. Files are found in
torchvision's layout under `data_root` and are never written there unless downloading into a
writable root: decoded uint8 tensors are cached under `$RVSM_CACHE` (default
`~/.cache/rvsm-study`), guarded by a file lock because several trials on a node may decode at once.
A `package.module:loader` dataset is the user's own function returning the four tensors.
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
from typing import Any, Callable, Mapping

import numpy as np
import torch
from filelock import FileLock
from torch import Tensor
from torchvision import datasets
from torchvision.datasets.mnist import read_image_file, read_label_file

from .config import EMNIST_SPLITS, ConfigError, TrainConfig
from .importpath import import_object, is_import_path, one_line

IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST_LIKE = {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST, "kmnist": datasets.KMNIST}
CIFAR_LIKE = {"cifar10": "CIFAR10", "cifar100": "CIFAR100"}  # torchvision classes, looked up when used
RAW_KEYS = ("train_x", "train_y", "test_x", "test_y")
Raw = dict[str, Tensor]  # train_x, train_y, test_x, test_y: uint8 NCHW images, int64 labels
Shape = tuple[int, int, int]
# (C, H, W) and the number of classes of each named dataset: the network is built from these at
# spec time, before any file is read. EMNIST 'letters' labels are 1..26 (0 unused), as torchvision's.
SHAPES: dict[str, tuple[Shape, int]] = {
    "mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10), "kmnist": ((1, 28, 28), 10),
    **{f"emnist_{split}": ((1, 28, 28), len(datasets.EMNIST.classes_split_dict[split]))
       for split in EMNIST_SPLITS},
    "cifar10": ((3, 32, 32), 10), "cifar100": ((3, 32, 32), 100), "svhn": ((3, 32, 32), 10),
    "synthetic": ((1, 28, 28), 10),
}


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


def dataset_shape(config: TrainConfig) -> tuple[Shape, int]:
    """(C, H, W) of the dataset's images and its number of classes, without reading any data; a
    loader declares them as attributes (`loader.in_shape`, `loader.num_classes`). Importing a
    loader runs its module. Raises `ConfigError` when the loader cannot be imported or does not
    declare them."""
    if config.dataset in SHAPES:
        return SHAPES[config.dataset]
    loader = import_object(config.dataset, "dataset")
    shape, classes = getattr(loader, "in_shape", None), getattr(loader, "num_classes", None)
    if not (isinstance(shape, (tuple, list)) and len(shape) == 3 and all(_positive_int(n) for n in shape)
            and _positive_int(classes) and classes >= 2):
        raise ConfigError(f"dataset={config.dataset!r}: the loader must declare its images' shape and "
                          f"its classes, e.g. {loader.__name__}.in_shape = (3, 32, 32) and "
                          f"{loader.__name__}.num_classes = 10; found in_shape={shape!r}, "
                          f"num_classes={classes!r}")
    return tuple(shape), int(classes)


def _positive_int(n: Any) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n > 0


def load_splits(config: TrainConfig, device: torch.device) -> Splits:
    raw = raw_dataset(config)
    in_shape, num_classes = dataset_shape(config)
    _check_loaded(config.dataset, raw, in_shape, num_classes)
    train, val = split_indices(len(raw["train_y"]), config.val_size, config.train_subset, config.data_seed)
    images = [_as_float(x, device) for x in (raw["train_x"][train], raw["train_x"][val], raw["test_x"])]
    if config.normalize:
        images = standardize(images)
    labels = [y.to(device) for y in (raw["train_y"][train], raw["train_y"][val], raw["test_y"])]
    return Splits(*zip(images, labels), num_classes=num_classes)


def _check_loaded(dataset: str, raw: Raw, in_shape: Shape, num_classes: int) -> None:
    """The images and labels are what the network was built for (a loader's promise, kept)."""
    for split in ("train", "test"):
        x, y = raw[f"{split}_x"], raw[f"{split}_y"]
        if tuple(x.shape[1:]) != in_shape or len(x) != len(y) or len(y) == 0:
            raise ConfigError(f"dataset={dataset!r}: {split}_x has shape {tuple(x.shape)} and {split}_y "
                              f"{tuple(y.shape)}; expected (N, {', '.join(map(str, in_shape))}) and (N,), N > 0")
        if int(y.min()) < 0 or int(y.max()) >= num_classes:
            raise ConfigError(f"dataset={dataset!r}: {split}_y has labels in [{int(y.min())}, {int(y.max())}]; "
                              f"expected [0, {num_classes - 1}] ({num_classes} classes)")


def _as_float(images: Tensor, device: torch.device) -> Tensor:
    """uint8 travels to the device (a quarter of the bytes), then becomes [0, 1] floats there;
    float images (a loader's) are taken as they are, copied."""
    if images.dtype == torch.uint8:
        return images.to(device).float().div_(255)
    return images.to(device, dtype=torch.float32, copy=True)


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
    if is_import_path(config.dataset):
        return _from_loader(config.dataset, config.data_root, config.download)
    find = (_find_cifar if config.dataset in CIFAR_LIKE else _find_svhn if config.dataset == "svhn"
            else _find_emnist if config.dataset.startswith("emnist_") else _find_mnist_like)
    files, decode = find(config.dataset, Path(config.data_root), config.download)
    return _cached(config.dataset, files, decode)


def _from_loader(path: str, data_root: str, download: bool) -> Raw:
    """`loader(data_root, download)` returns (train_x, train_y, test_x, test_y), or a mapping with
    those keys: images (N, C, H, W) or (N, H, W), uint8 (scaled to [0, 1]) or float (kept);
    labels integers in [0, num_classes). Tensors or numpy arrays. Not cached: the loader's own."""
    loader = import_object(path, "dataset")
    try:
        result = loader(data_root, download)
    except Exception as e:  # noqa: BLE001 - the user's code: one line, naming it
        raise DatasetNotFound(f"dataset={path!r}: the loader raised {one_line(e)} "
                              f"(called as loader({data_root!r}, {download!r}))") from None
    if isinstance(result, Mapping) and set(RAW_KEYS) <= set(result):
        parts = [result[key] for key in RAW_KEYS]
    elif isinstance(result, (tuple, list)) and len(result) == 4:
        parts = list(result)
    else:
        raise ConfigError(f"dataset={path!r}: the loader returned a {type(result).__name__}; expected "
                          "(train_x, train_y, test_x, test_y) or a mapping with those keys")
    raw = {}
    for key, value in zip(RAW_KEYS, parts):
        tensor = torch.as_tensor(np.asarray(value) if not isinstance(value, Tensor) else value)
        if key.endswith("_y"):
            if tensor.is_floating_point() or tensor.is_complex() or tensor.dim() != 1:
                raise ConfigError(f"dataset={path!r}: {key} must be integer labels of shape (N,), "
                                  f"got {tensor.dtype} of shape {tuple(tensor.shape)}")
            tensor = tensor.long()
        elif tensor.dim() == 3:
            tensor = tensor.unsqueeze(1)  # (N, H, W): one channel
        raw[key] = tensor.cpu()
    return raw


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
    files = _find_idx(dataset, root, folder, IDX_FILES, download,
                      lambda r: MNIST_LIKE[dataset](r, download=True))
    return files, lambda: _decode_idx(files)


def _find_emnist(dataset: str, root: Path, download: bool) -> tuple[list[Path], Callable[[], Raw]]:
    """EMNIST's files of one split (`emnist-balanced-train-images-idx3-ubyte`, ...) under
    data_root/EMNIST/raw/. Its images are stored transposed: they are turned upright here."""
    split = dataset.removeprefix("emnist_")
    names = [f"emnist-{split}-{part}" for part in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                                   "test-images-idx3-ubyte", "test-labels-idx1-ubyte")]
    files = _find_idx(dataset, root, "EMNIST", names, download,
                      lambda r: datasets.EMNIST(r, split=split, download=True))

    def decode() -> Raw:
        raw = _decode_idx(files)
        return {key: x.transpose(-1, -2).contiguous() if key.endswith("_x") else x for key, x in raw.items()}
    return files, decode


def _find_idx(dataset: str, root: Path, folder: str, names, download: bool,
              fetch: Callable[[str], object]) -> list[Path]:
    files = _idx_files(root / folder / "raw", names)
    if files is None and download:
        target = _download(dataset, root, fetch)
        files = _idx_files(target / folder / "raw", names)
    if files is None:
        where = root.resolve() / folder / "raw"
        raise DatasetNotFound(
            f"{dataset} not found: looked for {', '.join(f + '[.gz]' for f in names)} in {where}. "
            f"Put the four IDX files there (data_root/{folder}/raw/<name>.gz, torchvision's layout), "
            "point data_root at a folder that holds them, or set download = true (--download true).")
    return files


def _idx_files(raw: Path, names=IDX_FILES) -> list[Path] | None:
    """The four IDX files, extracted or gzipped, or None when any is missing."""
    found = [next((p for p in (raw / name, raw / f"{name}.gz") if p.is_file()), None) for name in names]
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


def _find_cifar(dataset: str, root: Path, download: bool) -> tuple[list[Path], Callable[[], Raw]]:
    """CIFAR-10 or CIFAR-100 (its 100 fine labels): torchvision's python-pickle folder, or the
    tarball beside it, read by torchvision's class (which checks the files' md5 sums)."""
    cls = getattr(datasets, CIFAR_LIKE[dataset])
    base, tarball = cls.base_folder, root / cls.filename
    if not (root / base).is_dir() and (download or tarball.is_file()):
        root = _download(dataset, root, lambda r: cls(r, download=True), tarball)
    if not (root / base).is_dir():
        raise DatasetNotFound(
            f"{dataset} not found: looked for {root.resolve() / base} and {tarball.resolve()}. "
            f"Put torchvision's {cls.__name__} there (data_root/{base}/ or data_root/{tarball.name}), "
            "point data_root at a folder that holds it, or set download = true (--download true).")
    return sorted((root / base).iterdir()), lambda: _decode_cifar(dataset, cls, root)


def _decode_cifar(dataset: str, cls: type, root: Path) -> Raw:
    train, test = (_torchvision_split(dataset, root, lambda: cls(str(root), train=split)) for split in (True, False))
    nchw = lambda ds: torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # noqa: E731 (HWC -> CHW)
    return {"train_x": nchw(train), "train_y": torch.tensor(train.targets),
            "test_x": nchw(test), "test_y": torch.tensor(test.targets)}


SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


def _find_svhn(dataset: str, root: Path, download: bool) -> tuple[list[Path], Callable[[], Raw]]:
    """SVHN's cropped digits (`train_32x32.mat`, `test_32x32.mat`) directly in data_root, read by
    torchvision's class (md5 checked; its label 10 for the digit 0 becomes 0). No 'extra' split."""
    if not all((root / name).is_file() for name in SVHN_FILES) and download:
        root = _download(dataset, root, lambda r: [datasets.SVHN(r, split=s, download=True)
                                                   for s in ("train", "test")])
    if not all((root / name).is_file() for name in SVHN_FILES):
        raise DatasetNotFound(
            f"svhn not found: looked for {' and '.join(SVHN_FILES)} in {root.resolve()}. Put the two "
            ".mat files there (torchvision's layout), point data_root at a folder that holds them, "
            "or set download = true (--download true).")

    def decode() -> Raw:
        train, test = (_torchvision_split(dataset, root, lambda: datasets.SVHN(str(root), split=split))
                       for split in ("train", "test"))
        return {"train_x": torch.from_numpy(train.data), "train_y": torch.from_numpy(train.labels),
                "test_x": torch.from_numpy(test.data), "test_y": torch.from_numpy(test.labels)}
    return [root / name for name in SVHN_FILES], decode


def _torchvision_split(dataset: str, root: Path, read: Callable[[], Any]) -> Any:
    """torchvision's reader, its 'not found or corrupted' (a failed md5 check) as DatasetNotFound."""
    try:
        return read()
    except RuntimeError as e:
        raise DatasetNotFound(f"{dataset} in {root.resolve()}: {one_line(e)} (torchvision checks each "
                              "file's md5 sum: replace the files, or set download = true)") from None


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
