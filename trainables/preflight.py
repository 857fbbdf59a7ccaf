"""Checks of a training config that need the network but no data and no memory, run when a
study file (or `rvsm train`'s options) is read, so that a study whose trials could only fail is
refused before any trial starts: the network built on PyTorch's meta device with `sparsify`
resolved against it (`models.check_model`), and a CUDA device index the trial cannot see.

What cannot be known before a trial runs on its node (whether `cuda:N` exists there when Ray
gives the trial no GPU, whether the dataset's files are there) is checked by the trial itself and
raised as a `ConfigError` or `DatasetNotFound`, which the Tune adapter reports without retrying.
"""
from __future__ import annotations

import math

from .config import ConfigError, TrainConfig
from .models import check_model


def check_config(config: TrainConfig, *, gpus: float | None = None) -> None:
    """Raise ConfigError if `config` can only fail: a network that cannot be built or run on its
    dataset's images, a `sparsify` name it lacks, or a CUDA device index beyond the `gpus` Ray
    gives each trial (it shows a trial only its own GPUs, numbered from 0). `gpus=None`: the
    trial's GPUs are not known (`rvsm train`)."""
    check_model(config)
    index = config.device.partition(":")[2]
    if gpus and index and int(index) >= math.ceil(gpus):
        visible = math.ceil(gpus)
        raise ConfigError(f"device={config.device!r}: each trial sees only the {visible} GPU(s) "
                          f"Ray gives it (resources.gpus_per_trial = {gpus:g}), numbered from 0; "
                          f"allowed: 'auto', 'cuda', " + ", ".join(f"'cuda:{i}'" for i in range(visible)))
