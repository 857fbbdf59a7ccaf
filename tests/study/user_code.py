"""A user's own code, as a study file names it (`tests.study.user_code:small_cnn`): a network
factory and data loaders. Ray workers import it by its module path, as they would an installed
package (the tests run from the repository root, which the workers also have on their path)."""
from __future__ import annotations

import torch
from torch import nn

from trainables.data import synthetic


def small_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """`factory(in_shape, num_classes)`: layer names of the user's choosing (`features.N`, `head`)."""
    channels, height, width = in_shape
    return _SmallCNN(channels, height * width, num_classes)


class _SmallCNN(nn.Module):
    def __init__(self, channels: int, pixels: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(4 * pixels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


def failing_factory(in_shape, num_classes):
    raise ValueError("no network for you\nsecond line")


def digits(data_root: str, download: bool):
    """`loader(data_root, download)`: MNIST-shaped separable images (uint8) as numpy arrays."""
    raw = synthetic(600, 100, seed=3)
    return tuple(raw[key].numpy() for key in ("train_x", "train_y", "test_x", "test_y"))


digits.in_shape = (1, 28, 28)
digits.num_classes = 10


def colour_images(data_root: str, download: bool) -> dict:
    """3x32x32 float images, a fixed pattern per class plus noise: CIFAR-10's shape."""
    g = torch.Generator().manual_seed(5)
    patterns = torch.rand(10, 3, 32, 32, generator=g)

    def draw(n: int):
        y = torch.randint(0, 10, (n,), generator=g)
        return 0.6 * patterns[y] + 0.4 * torch.rand(n, 3, 32, 32, generator=g), y

    (train_x, train_y), (test_x, test_y) = draw(300), draw(50)
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


colour_images.in_shape = (3, 32, 32)
colour_images.num_classes = 10


def undeclared(data_root: str, download: bool):
    return digits(data_root, download)


def not_a_network(in_shape, num_classes):
    return {"layers": 3}
