"""The three networks, by name. Layer names (`conv1`, `fc1`, ...) are part of the interface:
`sparsify = "fc1"` and per-layer sparsity reports refer to them.

Parameter counts on 1x28x28 inputs: notebook_cnn 3,274,634; lenet5 431,080; lenet300_100 266,610.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

Shape = tuple[int, int, int]  # (channels, height, width) of one input image


class NotebookCNN(nn.Module):
    """The original notebook's network: two 5x5 'same' convs with pooling, fc 1024 with dropout."""

    def __init__(self, in_shape: Shape = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        channels, height, width = in_shape
        self.conv1 = nn.Conv2d(channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        # TensorFlow's 'SAME' max-pool rounds up; for 28x28 (and 32x32) inputs that equals PyTorch's.
        self.fc1 = nn.Linear(64 * (height // 4) * (width // 4), 1024)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.dropout(F.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class LeNet5(nn.Module):
    """Caffe's LeNet-5, as pruned by Han et al. 2015: no ReLU after the convolutions."""

    def __init__(self, in_shape: Shape = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        channels, height, width = in_shape
        self.conv1 = nn.Conv2d(channels, 20, 5)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.fc1 = nn.Linear(50 * _lenet5_side(height) * _lenet5_side(width), 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), 2)
        x = F.max_pool2d(self.conv2(x), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _lenet5_side(n: int) -> int:
    """Side of LeNet-5's last feature map: two unpadded 5x5 convs, each with a 2x2 pool."""
    return ((n - 4) // 2 - 4) // 2


class LeNet300100(nn.Module):
    """The fully connected LeNet-300-100."""

    def __init__(self, in_shape: Shape = (1, 28, 28), num_classes: int = 10, dropout: float = 0.0):
        super().__init__()
        channels, height, width = in_shape
        self.fc1 = nn.Linear(channels * height * width, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "lenet300_100": LeNet300100,
    "notebook_cnn": NotebookCNN,
}


def build_model(name: str, *, in_shape: Shape = (1, 28, 28), num_classes: int = 10,
                dropout: float = 0.0, init: str = "default") -> nn.Module:
    """A fresh network; draws from torch's global RNG, so seed it first."""
    model = MODELS[name](in_shape, num_classes, dropout)
    if init == "normal":  # the notebook: tf.random_normal for every weight and bias
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 1.0)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
