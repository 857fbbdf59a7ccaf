"""Helpers for the trainables tests: tiny configs, and IDX files written in the real format."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from trainables.config import TrainConfig


def tiny_config(**changes) -> TrainConfig:
    """A few seconds of CPU: lenet5 on 256 synthetic images."""
    base = dict(dataset="synthetic", synthetic_size=256, val_size=64, batch_size=64, epochs=2,
                eval_batch_size=128, device="cpu")
    return TrainConfig.from_dict({**base, **changes})


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> None:
    """An IDX file as in the MNIST release: magic 0x0000 08 <ndim> big-endian, then the sizes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(f"{path}.gz", "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_mnist(root: Path, folder: str = "MNIST", *, n_train: int = 60, n_test: int = 20,
                compress: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny MNIST-format files under root/<folder>/raw; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, n_train),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test)}
    for name, array in arrays.items():
        write_idx(root / folder / "raw" / name, array, compress=compress)
    return arrays
