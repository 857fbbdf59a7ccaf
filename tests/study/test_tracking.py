"""`[tracking]`: a study also reports to TensorBoard and MLflow through Ray Tune's own callbacks,
each trial one run there with its metrics at every epoch; a tracker whose package is missing is
a one-line error before Ray starts."""
from __future__ import annotations

import importlib.util
import re
import socket
import struct
from pathlib import Path

import pandas as pd
import pytest

from study.cli import main
from study.spec import SpecError, TrackingSettings, parse_spec
from .conftest import TINY_TRAIN, study_text

TRAIN = TINY_TRAIN.replace("synthetic_size = 600", "synthetic_size = 300")


def tracking_spec(tracking: str, **kwargs):
    return parse_spec(study_text("tracked", Path("/tmp/unused"), extra=f"\n[tracking]\n{tracking}\n"), **kwargs)


# --- the study file ----------------------------------------------------------------------------

def test_tracking_is_off_unless_asked_for():
    assert parse_spec(study_text("plain", Path("/tmp/unused"))).tracking == TrackingSettings()
    spec = tracking_spec('tensorboard = true\nwandb = "proj"', check_train=False)  # a reader's view
    assert spec.tracking == TrackingSettings(tensorboard=True, wandb="proj")


@pytest.mark.parametrize("tracking, message", [
    ("tensorbord = true", "unknown key 'tracking.tensorbord'; allowed here: tensorboard, mlflow, wandb"),
    ('tensorboard = "yes"', "tracking.tensorboard must be bool, got 'yes'"),
    ("mlflow = true", "tracking.mlflow must be str, got True"),
    ('mlflow = ""', "tracking.mlflow must be a tracking URI such as 'sqlite:///home/me/mlflow.db', got ''"),
    ('wandb = " "', "tracking.wandb must be a project name, got ' '"),
])
def test_a_bad_tracking_value_is_named(tracking, message):
    with pytest.raises(SpecError) as error:
        tracking_spec(tracking)
    assert str(error.value) == message


@pytest.mark.parametrize("key, value, package", [("mlflow", '"file:///tmp/mlruns"', "mlflow"),
                                                 ("wandb", '"my-project"', "wandb")])
def test_a_tracker_whose_package_is_missing_is_refused_by_run_but_not_by_readers(monkeypatch, key, value,
                                                                                 package):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(SpecError, match=rf"^tracking.{key}: the '{package}' package is not installed; "
                                        rf"pip install 'rvsm-study\[{package}\]' \(or remove tracking.{key}\)$"):
        tracking_spec(f"{key} = {value}")
    assert getattr(tracking_spec(f"{key} = {value}", check_train=False).tracking, key) == value.strip('"')


@pytest.mark.parametrize("kind", ["file URI", "path"])
def test_an_mlflow_file_store_that_mlflow_refuses_is_refused_when_the_file_is_read(kind, monkeypatch, tmp_path):
    environment_variables = pytest.importorskip("mlflow.environment_variables")
    if not hasattr(environment_variables, "MLFLOW_ALLOW_FILE_STORE"):
        pytest.skip("this MLflow still takes its file store")
    monkeypatch.chdir(tmp_path)
    uri = f"file://{tmp_path}/mlruns" if kind == "file URI" else "mlruns"
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(SpecError, match=rf"^tracking.mlflow = '{re.escape(uri)}': this MLflow refuses its "
                                        r"deprecated file store; use a database such as 'sqlite:"):
        tracking_spec(f'mlflow = "{uri}"')
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert tracking_spec(f'mlflow = "{uri}"').tracking.mlflow == uri
    assert (tmp_path / "mlruns").is_dir()  # the probe opened the store


def test_an_mlflow_server_that_does_not_answer_is_refused_before_anything_is_written(tmp_path, capsys):
    pytest.importorskip("mlflow", reason="the test extra installs mlflow-skinny")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "s.toml"
    path.write_text(study_text("s", tmp_path / "studies", extra=f'\n[tracking]\nmlflow = "http://127.0.0.1:{port}"\n'))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rvsm run: error: tracking.mlflow = 'http://127.0.0.1:{port}': MLflow cannot use it: ")
    assert err.count("\n") == 1 and not (tmp_path / "studies").exists()


def test_a_missing_tracker_stops_rvsm_run_before_anything_is_written(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    path = tmp_path / "s.toml"
    path.write_text(study_text("s", tmp_path / "studies", extra='\n[tracking]\nwandb = "p"\n'))
    assert main(["run", str(path)]) == 2
    assert capsys.readouterr().err == ("rvsm run: error: tracking.wandb: the 'wandb' package is not installed; "
                                       "pip install 'rvsm-study[wandb]' (or remove tracking.wandb)\n")
    assert not (tmp_path / "studies").exists()


# --- a study that reports to TensorBoard and MLflow --------------------------------------------

def tensorboard_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard event file, read from its records (length, crc, Event proto, crc)
    with the Event protobuf that tensorboardX (the writer Ray uses) ships."""
    from tensorboardX.proto import event_pb2
    data, scalars, offset = path.read_bytes(), {}, 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
        offset += 12 + length + 4
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_a_study_reports_every_trial_to_tensorboard_and_mlflow(ray_session, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="the test extra installs mlflow-skinny")  # CI: pip install .[test]
    from mlflow.tracking import MlflowClient
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns (no artifacts are logged)
    mlruns = f"sqlite:///{tmp_path / 'mlflow.db'}"  # MLflow's local store (its file store is deprecated)
    path = tmp_path / "tracked.toml"
    path.write_text(study_text("tracked", tmp_path / "studies", trials=2, concurrent=2, train=TRAIN,
                               extra=f'\n[tracking]\ntensorboard = true\nmlflow = "{mlruns}"\n'))
    assert main(["run", str(path)]) == 0
    folder = tmp_path / "studies" / "tracked"
    trials = pd.read_parquet(folder / "results" / "trials").set_index("trial_id")
    epochs = pd.read_parquet(folder / "results" / "epochs")
    assert len(trials) == 2 and set(trials["state"]) <= {"finished", "diverged"}

    # TensorBoard: one event file in each trial's folder, val_acc at each epoch as in Parquet
    for trial_id in trials.index:
        files = list((folder / "runs" / "000" / f"trial_{trial_id}").glob("events.out.tfevents.*"))
        assert len(files) == 1, f"trial_{trial_id}: {files}"
        scalars = tensorboard_scalars(files[0])
        mine = epochs[epochs["trial_id"] == trial_id].sort_values("metric_epoch")
        assert [step for step, _ in scalars["ray/tune/val_acc"]] == [1, 2]
        assert [value for _, value in scalars["ray/tune/val_acc"]] == pytest.approx(list(mine["metric_val_acc"]))

    # MLflow: an experiment named after the study, one run per trial, its config as parameters
    client = MlflowClient(tracking_uri=mlruns)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        history = client.get_metric_history(run.info.run_id, "val_acc")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [1, 2]
        assert run.data.tags["rvsm_study"] == "tracked"
    assert sorted(r.info.run_name.rpartition("_")[2] for r in runs) == sorted(trials.index)  # rvsm_trainable_<id>
    lams = sorted(float(r.data.params["lam"]) for r in runs)
    assert lams == pytest.approx(sorted(trials["param_lam"]))
