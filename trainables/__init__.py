"""Training one RVSM-sparsified network: a plain function of a config, with no Ray inside.

`train(config, report)` is the trainable; `TrainConfig` its validated configuration.
"""
from .config import ConfigError, TrainConfig
from .data import DatasetNotFound
from .presets import PRESETS
from .train import train

__all__ = ["ConfigError", "DatasetNotFound", "PRESETS", "TrainConfig", "train"]
