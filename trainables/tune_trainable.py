"""The Ray Tune adapter: `train()` as a Tune function trainable. The only trainables module that
imports Ray; the training itself knows nothing of it.

Each epoch's state is saved as a Tune checkpoint, so a trial retried by `FailureConfig` or
continued by `rvsm resume` starts from its last completed epoch.
"""
from __future__ import annotations

import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from trainables.config import TrainConfig
from trainables.train import train

STATE_FILE = "state.pt"


def rvsm_trainable(config: dict) -> None:
    cfg = TrainConfig.from_dict(config)
    _limit_threads()
    saved = _load_checkpoint()
    if saved is not None and _is_final(saved["metrics"]):
        # Finished before the driver died, but after Tune's last snapshot: report it again.
        tune.report(saved["metrics"])
        return
    where = {"device": _device_name(cfg), "node": _node_name()}

    def report(metrics: dict, state: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"state": state, "metrics": metrics}, Path(tmp, STATE_FILE))
            tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(tmp))

    train(cfg, report, state=saved["state"] if saved is not None else None)


def _is_final(metrics: dict) -> bool:
    return bool(metrics.get("diverged")) or metrics.get("test_acc") is not None


def _load_checkpoint() -> dict | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder, STATE_FILE), map_location="cpu", weights_only=False)


def _limit_threads() -> None:
    """One torch thread per CPU the trial was given: more only fight the other trials."""
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))


def _node_name() -> str:
    """Host name and Ray node id: several nodes may share a host (and its name)."""
    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:8]}"


def _device_name(cfg: TrainConfig) -> str:
    if cfg.device != "auto":
        return cfg.device
    return f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu"
