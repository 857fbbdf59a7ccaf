"""A study's `[tracking]` table as Ray Tune's own logger callbacks: TensorBoard, MLflow, W&B.

Tune's automatic CSV/JSON/TensorBoard loggers stay off (the Parquet results replace them); a
study file opts into the trackers people already watch. The callbacks run in the driver process,
so their packages are needed where `rvsm run` runs, not on the Ray workers.
"""
from __future__ import annotations

import importlib.util
import os

from study.spec import SpecError, TrackingSettings

# [tracking] key: (the package it needs, what to pip install for it)
TRACKERS = {"tensorboard": ("tensorboardX", "tensorboardX"), "mlflow": ("mlflow", "'rvsm-study[mlflow]'"),
            "wandb": ("wandb", "'rvsm-study[wandb]'")}


def check_tracking(tracking: TrackingSettings) -> None:
    """What would stop the study when it starts, as one `SpecError` before Ray starts or anything
    is written: a tracker's package missing here, an MLflow file store that MLflow refuses, an
    MLflow tracking store that does not answer (one request, no retries; a sqlite store is
    created by it). W&B is not contacted."""
    for key, (package, install) in TRACKERS.items():
        if getattr(tracking, key) and importlib.util.find_spec(package) is None:
            raise SpecError(f"tracking.{key}: the {package!r} package is not installed; "
                            f"pip install {install} (or remove tracking.{key})")
    uri = tracking.mlflow or ""
    if (uri.startswith("file:") or "://" not in uri and uri != "databricks") and tracking.mlflow:
        try:
            from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE  # newer MLflow: off by default
        except ImportError:  # an MLflow that still takes its file store
            return
        if not MLFLOW_ALLOW_FILE_STORE.get():
            raise SpecError(f"tracking.mlflow = {uri!r}: this MLflow refuses its deprecated file store; "
                            "use a database such as 'sqlite:////abs/path/mlflow.db', or set "
                            "MLFLOW_ALLOW_FILE_STORE=true")
    if tracking.mlflow:
        _probe_mlflow(tracking.mlflow)


def tracking_callbacks(tracking: TrackingSettings, study_name: str) -> list:
    """One Ray Tune callback per tracker the study asks for; each trial is one run in it, named
    after the Tune trial, with every numeric metric at each epoch (`training_iteration`) and the
    trial's training config as parameters. The MLflow experiment and the W&B group are the study's
    name."""
    callbacks = []
    if tracking.tensorboard:
        from ray.tune.logger import TBXLoggerCallback
        callbacks.append(TBXLoggerCallback())
    if tracking.mlflow:
        from ray.air.integrations.mlflow import MLflowLoggerCallback
        callbacks.append(MLflowLoggerCallback(tracking_uri=tracking.mlflow, experiment_name=study_name,
                                              tags={"rvsm_study": study_name}, save_artifact=False))
    if tracking.wandb:
        from ray.air.integrations.wandb import WandbLoggerCallback
        callbacks.append(WandbLoggerCallback(project=tracking.wandb, group=study_name))
    return callbacks


def _probe_mlflow(uri: str) -> None:
    """One request to the tracking store, without MLflow's retries (minutes against a server that
    is down); Ray's callback would otherwise fail after the study folder is written."""
    from mlflow.tracking import MlflowClient

    from trainables.importpath import one_line
    quick = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
    saved = {key: os.environ.get(key) for key in quick}
    os.environ.update(quick)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - whatever MLflow raises, in one line
        raise SpecError(f"tracking.mlflow = {uri!r}: MLflow cannot use it: {one_line(e)}") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
