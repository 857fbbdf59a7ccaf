"""The networks, by name: four built in, every `torchvision.models` classifier, and the user's own
through `package.module:factory`. Layer names (`conv1`, `fc1`, ...) are part of the interface:
`sparsify = "fc1"` and per-layer sparsity reports refer to them.

Parameter counts on 1x28x28 inputs: notebook_cnn 3,274,634; lenet5 431,080; lenet300_100 266,610;
on 3x32x32 with 10 classes: resnet20 269,722 (option A shortcuts, as He et al.; 272,474
would be option B, 1x1 projection shortcuts).
"""
from __future__ import annotations

import contextlib
import warnings
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import torch
import torchvision
from torch import nn
from torch.nn import functional as F

from .importpath import import_object, is_import_path, one_line

if TYPE_CHECKING:
    from .config import TrainConfig

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


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; the shortcut is He et al.'s option A: the identity,
    subsampled and zero-padded in channels where the block halves the resolution (no parameters)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride, self.extra = stride, planes - in_planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x[:, :, ::self.stride, ::self.stride]
        if self.extra:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """The CIFAR-10 ResNets of He et al. 2016 (section 4.2): a 3x3 conv to 16 channels, three stages
    of `blocks` basic blocks (16, 32, 64 channels; stride 2 into stages 2 and 3), global average
    pooling, one linear layer. Depth 6 * blocks + 2: ResNet-20 has 3 blocks a stage."""

    def __init__(self, in_shape: Shape = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0,
                 *, blocks: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_shape[0], 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, blocks, 1)
        self.layer2 = self._stage(16, 32, blocks, 2)
        self.layer3 = self._stage(32, 64, blocks, 2)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():  # He et al.'s initialisation ("Delving deep", fan-in)
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(in_planes, planes, stride),
                             *(BasicBlock(planes, planes, 1) for _ in range(blocks - 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def resnet20(in_shape: Shape = (3, 32, 32), num_classes: int = 10, dropout: float = 0.0) -> CifarResNet:
    return CifarResNet(in_shape, num_classes, dropout, blocks=3)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet5": LeNet5,
    "lenet300_100": LeNet300100,
    "notebook_cnn": NotebookCNN,
    "resnet20": resnet20,
}
MODEL_CHOICES = (f"{', '.join(map(repr, MODELS))}, a torchvision.models classifier (e.g. 'resnet18') "
                 "or 'package.module:factory'")


@lru_cache(maxsize=1)
def torchvision_models() -> tuple[str, ...]:
    """The classification networks of `torchvision.models` (not its detection or video ones)."""
    return tuple(torchvision.models.list_models(module=torchvision.models))


def is_model_name(name: str) -> bool:
    """A name `build_model` knows: built in, a torchvision classifier, or an import path."""
    return name in MODELS or name in torchvision_models() or is_import_path(name)


def build_model(name: str, *, in_shape: Shape = (1, 28, 28), num_classes: int = 10,
                dropout: float = 0.0, init: str = "default", device: str | torch.device | None = None
                ) -> nn.Module:
    """A fresh network for images of `in_shape` (C, H, W) and `num_classes` classes; draws from
    torch's global RNG, so seed it first. `device="meta"` builds shapes only, with no memory and
    no data (the spec-time check). Raises `ConfigError` for an unknown name, a factory that cannot
    be imported or raises, or a torchvision network given images with neither 1 nor 3 channels."""
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = _construct(name, tuple(in_shape), num_classes, dropout)
    if init == "normal":  # the notebook: tf.random_normal for every weight and bias
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 1.0)
    return model


def _construct(name: str, in_shape: Shape, num_classes: int, dropout: float) -> nn.Module:
    from .config import ConfigError  # here, not above: config imports this module
    if name in MODELS:
        return MODELS[name](in_shape, num_classes, dropout)
    if name in torchvision_models():
        return _torchvision_model(name, in_shape, num_classes)
    if not is_import_path(name):
        raise ConfigError(f"model={name!r} is not allowed; allowed: {MODEL_CHOICES}")
    factory = import_object(name, "model")
    try:
        model = factory(in_shape, num_classes)
    except Exception as e:  # noqa: BLE001 - the user's code: one line, naming it
        raise ConfigError(f"model={name!r}: the factory raised {one_line(e)} "
                          f"(called as factory(in_shape={in_shape}, num_classes={num_classes}))") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model={name!r}: the factory returned a {type(model).__name__}, "
                          "expected a torch.nn.Module")
    return model


def _torchvision_model(name: str, in_shape: Shape, num_classes: int) -> nn.Module:
    """torchvision's network, untrained, with `num_classes` outputs. Its first layer takes 3
    channels: a 1-channel image is repeated into 3 (a forward pre-hook), so the architecture and
    its parameter names stay exactly torchvision's."""
    from .config import ConfigError
    if in_shape[0] not in (1, 3):
        raise ConfigError(f"model={name!r} takes 3-channel images (1-channel ones are repeated); "
                          f"the dataset's have {in_shape[0]} channels")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes)
    if in_shape[0] == 1:
        model.register_forward_pre_hook(_grey_to_rgb)
    return model


def _grey_to_rgb(module: nn.Module, args: tuple) -> tuple:
    return (args[0].expand(-1, 3, -1, -1), *args[1:])


def check_model(config: TrainConfig) -> None:
    """Build `config`'s network on the meta device for its dataset's image shape, run one batch
    through it there, and resolve `sparsify` against it: what would fail at the start of every
    trial fails here, in one `ConfigError`, without data, memory or Ray (a `threshold_multipliers`
    key that names no sparsified tensor included). Imports (runs) the user's
    factory and loader modules when the config names them."""
    from .config import ConfigError
    from .data import dataset_shape
    from .rvsm import sparsified_names
    from .thresholds import unmatched_multipliers
    in_shape, num_classes = dataset_shape(config)
    with warnings.catch_warnings():  # a library's notices (torchvision's googlenet) are not errors
        warnings.simplefilter("ignore")
        model = build_model(config.model, in_shape=in_shape, num_classes=num_classes,
                            dropout=config.dropout, device="meta")
    try:
        out = model(torch.empty(2, *in_shape, device="meta"))  # train mode: as training calls it
    except Exception as e:  # noqa: BLE001 - any failure of the network's forward pass
        raise ConfigError(f"model={config.model!r} does not run on the images of dataset "
                          f"{config.dataset!r}, of shape {in_shape}: {one_line(e)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model={config.model!r} returns {got} for a batch of 2 images; expected "
                          f"logits of shape (2, {num_classes}) (dataset {config.dataset!r} has "
                          f"{num_classes} classes)")
    names = sparsified_names(model, config.sparsify)
    unknown = unmatched_multipliers(names, config.multipliers)
    if unknown:
        raise ConfigError(f"threshold_multipliers: {', '.join(map(repr, unknown))} names no "
                          f"sparsified tensor of model={config.model!r}; sparsified: {', '.join(names)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
