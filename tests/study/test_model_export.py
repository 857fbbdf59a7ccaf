"""`rvsm model`: a trial of a tiny synthetic study exported, loaded back into a fresh network,
and checked against what the trial reported."""
from __future__ import annotations

import json
import re
import shlex
import shutil
from importlib import metadata
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from analysis.objectives import DEFAULT_OBJECTIVES
from analysis.summary import at_chance, chance_accuracy_of, summarise_study
from study.cli import main
from study.model_export import (LEGACY_SHAPES, ExportError, build_network, choose_trial, from_csr,
                                load_sparse, network_recipe, to_csr)
from tests.study.conftest import study_text
from trainables.config import TrainConfig
from trainables.data import load_splits
from trainables.train import accuracy

# Slow learning rates on few images: accuracies well between chance and 100%, so that an exact
# match of the test accuracy means something.
TRAIN = """
[train]
dataset = "synthetic"
synthetic_size = 800
val_size = 100
model = "lenet5"
epochs = 2
batch_size = 64
eval_batch_size = 50
device = "cpu"
"""
SEARCH = """
[search.params.lam]
low = 1e-4
high = 1e-2
log = true

[search.params.lr]
low = 3e-5
high = 3e-4
log = true
"""


@pytest.fixture(scope="module")
def study(tmp_path_factory, _ray_shutdown_at_end) -> tuple[Path, pd.DataFrame]:
    """A 6-trial LeNet-5 study on synthetic data (random sampler), run once for this module: its
    front has three trials and a knee."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    root = tmp_path_factory.mktemp("export")
    text = study_text("exp", root / "studies", trials=6, sampler="random", train=TRAIN)
    text = text[:text.index("[search.params.lam]")] + SEARCH + TRAIN  # search lam and lr only
    (root / "exp.toml").write_text(text)
    assert main(["run", str(root / "exp.toml")]) == 0
    folder = root / "studies" / "exp"
    return folder, pd.read_parquet(folder / "results" / "trials")


def export(study_folder: Path, out: Path, *selection: str) -> dict:
    assert main(["model", str(study_folder), *selection, "-o", str(out)]) == 0
    return json.loads((out / "model.json").read_text())


def one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_the_export_reproduces_each_trials_test_accuracy_and_non_zeros(study, tmp_path):
    folder, trials = study
    finished = trials[trials["state"] == "finished"]
    assert len(finished) >= 4
    assert finished["metric_test_acc"].between(0.15, 0.95).any(), "the check needs non-trivial accuracies"
    for row in finished.itertuples():
        out = tmp_path / row.trial_id
        manifest = export(folder, out, "--trial", row.trial_id)
        # a fresh network from model.json's recipe, the weights from model.safetensors
        model = build_network(manifest["network"])
        model.load_state_dict(load_file(str(out / "model.safetensors")))
        config = TrainConfig.from_dict(manifest["config"])
        test = load_splits(config, torch.device("cpu")).test
        assert accuracy(model, test, {}, batch_size=config.eval_batch_size) == row.metric_test_acc
        parameters = dict(model.named_parameters())
        assert sum(int(p.count_nonzero()) for p in parameters.values()) == row.metric_nonzeros
        layer_zeros = {n: 1 - int(parameters[n].count_nonzero()) / parameters[n].numel()
                       for n in manifest["sparsified"]}
        assert layer_zeros == pytest.approx(json.loads(row.metric_layer_sparsity_json), abs=1e-12)
        assert manifest["metrics"]["test_acc"] == row.metric_test_acc
        assert manifest["metrics"]["val_acc"] == row.metric_val_acc
        assert manifest["trial_id"] == row.trial_id and manifest["network"]["model"] == "lenet5"
        assert manifest["config"] == json.loads(row.config_json)
        assert manifest["provenance"]["trained"]["code_version"] == row.code_version
        assert manifest["provenance"]["trained"]["device"] == "cpu"
        assert manifest["provenance"]["exported"]["library_versions"]["torch"] == metadata.version("torch")


def test_the_sparse_file_holds_the_same_weights_in_fewer_bytes(study, tmp_path):
    folder, trials = study
    sparsest = trials.sort_values("metric_sparsity").iloc[-1]
    assert sparsest["metric_sparsity"] > 0.6
    manifest = export(folder, tmp_path / "m", "--trial", sparsest["trial_id"])
    dense = load_file(str(tmp_path / "m" / "model.safetensors"))
    sparse = load_sparse(tmp_path / "m" / "sparse.safetensors")
    assert sparse.keys() == dense.keys() and all(torch.equal(sparse[k], dense[k]) for k in dense)
    sizes = manifest["sizes"]
    raw = load_file(str(tmp_path / "m" / "sparse.safetensors"))
    assert sizes["dense_bytes"] == sum(t.numel() * t.element_size() for t in dense.values())
    assert sizes["sparse_bytes"] == sum(t.numel() * t.element_size() for t in raw.values())
    for name, entry in sizes["tensors"].items():
        nonzeros = int(dense[name].count_nonzero())
        rows = dense[name].shape[0]
        assert entry["nonzeros"] == nonzeros and raw[f"{name}.values"].numel() == nonzeros
        assert entry["csr_bytes"] == 4 * (rows + 1) + 4 * nonzeros + 4 * nonzeros  # int32, int32, float32
    assert sizes["sparse_bytes"] < sizes["dense_bytes"]
    assert sizes["files"]["sparse.safetensors"] < sizes["files"]["model.safetensors"]


def test_the_readme_lines_load_the_network(study, tmp_path, monkeypatch):
    folder, trials = study
    trial_id = trials[trials["state"] == "finished"]["trial_id"].iloc[0]
    export(folder, tmp_path / "m", "--trial", trial_id)
    readme = (tmp_path / "m" / "README.md").read_text()
    lines = re.search(r"```python\n(.*?)```", readme, re.S)[1].strip().splitlines()
    assert len(lines) == 3
    monkeypatch.chdir(tmp_path / "m")
    namespace: dict = {}
    exec("\n".join(lines), namespace)
    model = namespace["model"]
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert not model.training
    assert all(torch.equal(p, weights[n]) for n, p in model.state_dict().items())


def test_best_at_picks_the_best_validation_trade_off(study, tmp_path):
    folder, trials = study
    done = trials[trials["state"] == "finished"]
    done = done[~at_chance(done["metric_val_acc"], chance_accuracy_of(done))]  # never chosen
    s = float(done["metric_sparsity"].median())
    eligible = done[done["metric_sparsity"] >= s]
    expected = eligible.sort_values(["metric_val_acc", "metric_sparsity"]).iloc[-1]["trial_id"]
    assert export(folder, tmp_path / "a", "--best-at", f"sparsity>={s}")["trial_id"] == expected
    a = float(done["metric_val_acc"].median())
    eligible = done[done["metric_val_acc"] >= a]
    expected = eligible.sort_values(["metric_sparsity", "metric_val_acc"]).iloc[-1]["trial_id"]
    manifest = export(folder, tmp_path / "b", "--best-at", f"val_acc>={100 * a}%")  # a percent
    assert manifest["trial_id"] == expected and "val_acc" in manifest["selected_by"]


def test_knee_is_the_analysis_knee(study, tmp_path):
    folder, trials = study
    knee = summarise_study(trials, DEFAULT_OBJECTIVES).knee_trial_id
    assert knee is not None, "this study's front has three points and a bend"
    manifest = export(folder, tmp_path / "k", "--knee")
    assert manifest["trial_id"] == knee and manifest["selected_by"].startswith("--knee")


def test_a_front_without_a_knee_is_an_error():
    trials = pd.DataFrame({"study": "s", "trial_id": ["a", "b"], "trial_number": [0, 1],
                           "state": "finished", "param_dataset": "synthetic",
                           "metric_val_acc": [0.9, 0.5], "metric_sparsity": [0.5, 0.9]})
    with pytest.raises(ExportError, match="no knee; choose with --trial ID or --best-at"):
        choose_trial(trials, knee=True)
    assert choose_trial(trials, best_at="sparsity>=0.6").row["trial_id"] == "b"


def test_best_at_never_chooses_a_collapsed_network():
    """At 99.9% sparsity the only trial guesses (11%: at chance on 10 classes): `rvsm report`
    leaves it out of the trade-offs, and so does --best-at."""
    trials = pd.DataFrame({"study": "s", "trial_id": ["a", "b"], "trial_number": [0, 1],
                           "state": "finished", "param_dataset": "mnist",
                           "metric_val_acc": [0.98, 0.11], "metric_sparsity": [0.9, 0.999]})
    with pytest.raises(ExportError, match="no finished trial above chance level has sparsity >= 0.99"):
        choose_trial(trials, best_at="sparsity>=0.99")
    assert choose_trial(trials, best_at="sparsity>=0.5").row["trial_id"] == "a"


@pytest.mark.parametrize("selection, message", [
    (["--best-at", "sparsity>0.9"], "expected METRIC>=VALUE"),
    (["--best-at", "test_acc>=0.5"], "never used to choose"),
    (["--best-at", "loss>=0.5"], "unknown metric 'loss'"),
    (["--best-at", "sparsity>=abc"], "expected METRIC>=VALUE"),
    (["--best-at", "sparsity>=150"], "out of range"),
    (["--best-at", "val_acc>=1"], "no finished trial above chance level has val_acc >= 1"),
    (["--best-at", "sparsity>=1.5"], "out of range"),  # not read as 1.5%
    (["--trial", "nosuchtrial"], "no such trial"),
    (["--trial", "x", "--knee"], "not allowed with"),
    ([], "one of the arguments"),
])
def test_bad_choices_are_one_line_and_write_nothing(study, tmp_path, capsys, selection, message):
    folder, trials = study
    assert trials["metric_val_acc"].max() < 1
    error = one_line_error(capsys, ["model", str(folder), *selection, "-o", str(tmp_path / "out")])
    assert error.startswith("rvsm model: error:") and message in error
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_an_occupied_output_folder_or_a_missing_study_is_refused(study, tmp_path, capsys):
    folder, trials = study
    trial_id = trials["trial_id"].iloc[0]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    assert "not an empty folder" in one_line_error(
        capsys, ["model", str(folder), "--trial", trial_id, "-o", str(tmp_path / "full")])
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    assert "no study" in one_line_error(capsys, ["model", str(tmp_path), "--trial", "x", "-o", str(tmp_path / "o")])


def _copy(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def _checkpoints(study_folder: Path, trial_id: str) -> list[Path]:
    return sorted(study_folder.glob(f"runs/*/trial_{trial_id}/checkpoint_*"))


def _set_row(study_folder: Path, trial_id: str, **values) -> None:
    """Rewrite a trial's row, wherever it is stored, as the runner would have written it in
    another state."""
    changed = 0
    for path in (study_folder / "results" / "trials").glob("*.parquet"):
        table = pq.read_table(path)
        rows = table.to_pandas()
        mask = rows["trial_id"] == trial_id
        for name, value in values.items():
            rows.loc[mask, name] = value
        if mask.any():
            pq.write_table(pa.Table.from_pandas(rows, schema=table.schema, preserve_index=False), path)
            changed += int(mask.sum())
    assert changed == 1


def test_a_trial_without_a_final_checkpoint_says_what_is_there(study, tmp_path, capsys):
    folder, trials = study
    copy = _copy(folder, tmp_path)
    trial_id = trials[trials["state"] == "finished"]["trial_id"].iloc[0]
    argv = ["model", str(copy), "--trial", trial_id, "-o", str(tmp_path / "out")]
    first, last = _checkpoints(copy, trial_id)
    # as an early-stopped trial leaves it: state "stopped", only the epoch-1 checkpoint
    shutil.rmtree(last)
    _set_row(copy, trial_id, state="stopped", epochs_completed=1, metric_test_acc=None)
    error = one_line_error(capsys, argv)
    assert f"trial {trial_id} was stopped early at epoch 1 of 2: it has no final checkpoint" in error
    assert f"{first.as_posix()}, holds epoch 1" in error
    # a study whose checkpoints were deleted
    shutil.rmtree(first)
    error = one_line_error(capsys, argv)
    assert "no checkpoints found under" in error and f"trial_{trial_id}" in error
    assert not (tmp_path / "out").exists()


def test_a_finished_trial_whose_last_checkpoint_is_gone_is_refused(study, tmp_path, capsys):
    folder, trials = study
    copy = _copy(folder, tmp_path)
    trial_id = trials[trials["state"] == "finished"]["trial_id"].iloc[-1]
    shutil.rmtree(_checkpoints(copy, trial_id)[-1])
    error = one_line_error(capsys, ["model", str(copy), "--trial", trial_id, "-o", str(tmp_path / "out")])
    assert "no final checkpoint" in error and "holds epoch 1 without test accuracy" in error


def test_check_re_measures_the_test_accuracy(study, tmp_path, capsys):
    folder, trials = study
    trial_id = trials[trials["state"] == "finished"]["trial_id"].iloc[0]
    assert main(["model", str(folder), "--trial", trial_id, "-o", str(tmp_path / "m"), "--check"]) == 0
    out = capsys.readouterr().out
    assert "identical" in out and "CSR" in out and "all tensors: dense" in out


def test_the_report_lists_the_export_command_of_each_front_trial(study, tmp_path, capsys):
    folder, trials = study
    assert main(["report", str(folder), "-o", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "report.md").read_text()
    front = summarise_study(trials, DEFAULT_OBJECTIVES).front["trial_id"]
    commands = [line for line in report.splitlines() if line.startswith("rvsm model ")]
    assert [shlex.split(c)[4] for c in commands] == list(front)
    argv = shlex.split(commands[0])[1:]
    argv[argv.index("-o") + 1] = str(tmp_path / "exported")  # the command as listed, another folder
    assert main(argv) == 0 and (tmp_path / "exported" / "model.safetensors").is_file()


def test_csr_round_trips_any_shape():
    g = torch.Generator().manual_seed(0)
    for shape in [(20, 1, 5, 5), (10, 500), (7,), (3, 4)]:
        dense = torch.randn(shape, generator=g) * (torch.rand(shape, generator=g) < 0.2)
        parts = to_csr(dense)
        assert parts["values"].numel() == int(dense.count_nonzero())
        assert torch.equal(from_csr(parts, shape), dense)
    empty = torch.zeros(4, 6)
    assert torch.equal(from_csr(to_csr(empty), (4, 6)), empty)


def test_older_checkpoints_without_the_input_shape_get_it_from_the_dataset():
    recipe = network_recipe({"model": "lenet5", "dataset": "cifar10", "dropout": 0.0}, {})
    assert recipe["arguments"] == {"in_shape": list(LEGACY_SHAPES["cifar10"]), "num_classes": 10}
    recipe = network_recipe({"model": "notebook_cnn", "dropout": 0.5}, {"in_shape": [1, 28, 28], "num_classes": 10})
    assert recipe["arguments"]["dropout"] == 0.5 and build_network(recipe).fc1.in_features == 64 * 7 * 7


def test_a_study_on_object_storage_exports_the_same_files(study, tmp_path, s3_server):
    """Through the study's pyarrow filesystem: the study copied to a local S3 server (moto)."""
    import pyarrow.fs as pafs
    s3_server.create_bucket(Bucket="models")
    folder, trials = study
    s3, _ = pafs.FileSystem.from_uri("s3://models/studies")
    pafs.copy_files(str(folder), "models/studies/exp", source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=s3)
    trial_id = trials[trials["state"] == "finished"]["trial_id"].iloc[0]
    remote = export("s3://models/studies/exp", tmp_path / "remote", "--trial", trial_id)
    local = export(folder, tmp_path / "local", "--trial", trial_id)
    assert remote["checkpoint"].startswith("models/studies/exp/runs/")
    assert remote["metrics"] == local["metrics"]
    for name in ("model.safetensors", "sparse.safetensors"):
        # the same tensors and metadata (not bytes: safetensors orders metadata keys by a hash)
        remote_file = _tensors_and_metadata(tmp_path / "remote" / name)
        local_file = _tensors_and_metadata(tmp_path / "local" / name)
        assert remote_file[1] == local_file[1] and remote_file[0].keys() == local_file[0].keys()
        assert all(torch.equal(remote_file[0][k], local_file[0][k]) for k in local_file[0])


def _tensors_and_metadata(path) -> tuple[dict, dict]:
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
