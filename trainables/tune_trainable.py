"""The Ray Tune adapter: `train()` as a Tune function trainable. The only trainables module that
imports Ray; the training itself knows nothing of it.

Each epoch's state is saved as a Tune checkpoint, so a trial retried by `FailureConfig` or
continued by `rvsm resume` starts from its last completed epoch. Checkpoints are data: tensors
and plain values, loaded with `torch.load(weights_only=True)`, never code.

A configuration that cannot run on the trial's node (its dataset is missing there, or a CUDA
device it does not have) fails the same way on every try, so it is not raised for
`FailureConfig` to retry: the trial reports `TRIAL_ERROR` (the message) once and ends; the
results record it errored.
"""
from __future__ import annotations

import json
import socket
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune

from analysis.schema import EPOCH_METRICS
from trainables.config import ConfigError, TrainConfig
from trainables.data import DatasetNotFound
from trainables.train import train

STATE_FILE = "state.pt"
EPOCH_FILE = "epoch.json"
TRIAL_ERROR = "trial_error"  # result key: why the trial could not run (study.results reads it)


def rvsm_trainable(config: dict) -> None:
    try:
        _train(config)
    except (ConfigError, DatasetNotFound) as exc:
        # Every metric present (None: not measured), as Tune checks that each result holds the
        # searched metrics; no epoch done.
        tune.report({**dict.fromkeys(EPOCH_METRICS), "epoch": 0, "step": 0,
                     TRIAL_ERROR: f"{type(exc).__name__}: {exc}"})


def _train(config: dict) -> None:
    cfg = TrainConfig.from_dict(config)
    _limit_threads()
    saved = _load_checkpoint()
    if saved is not None and _is_final(saved["metrics"]):
        # Ended before the driver died, in its last checkpoint, but after Tune's last snapshot
        # and before the results recorded it (else the trial would not run at all: see
        # study.scheduler.StudyScheduler): report the same final metrics again, train nothing.
        tune.report(saved["metrics"])
        return
    where = {"device": _device_name(cfg), "node": _node_name()}

    def report(metrics: dict, state: dict) -> None:
        reported = {**metrics, **where}  # saved as reported: a re-report names the same node
        with tempfile.TemporaryDirectory() as tmp:
            torch.save({"state": state, "metrics": reported}, Path(tmp, STATE_FILE))
            # the epoch, readable without torch: the driver picks the checkpoint a restored
            # trial continues from by it (study.scheduler)
            Path(tmp, EPOCH_FILE).write_text(json.dumps({"epoch": metrics["epoch"]}))
            tune.report(reported, checkpoint=tune.Checkpoint.from_directory(tmp))

    train(cfg, report, state=saved["state"] if saved is not None else None)


def _is_final(metrics: dict) -> bool:
    return bool(metrics.get("diverged")) or metrics.get("test_acc") is not None


def _load_checkpoint() -> dict | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder, STATE_FILE), map_location="cpu", weights_only=True)


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
