"""`rvsm train`: flags and TOML into a config, one line per epoch, files out, one-line errors."""
from __future__ import annotations

import json

import pytest
import torch

from trainables.cli import _settings, _parser, main
from trainables.config import TrainConfig
from trainables.presets import PRESETS

TINY = ["--dataset", "synthetic", "--synthetic_size", "128", "--val_size", "32", "--batch_size", "64",
        "--device", "cpu"]


@pytest.mark.parametrize("argv, named", [
    (["--lr", "fast"], "lr='fast' is not a valid float"),
    (["--lr", "-1"], "lr=-1.0 is out of range; allowed: > 0"),
    (["--model", "resnet"], "model='resnet' is not allowed"),
    (["--download", "maybe"], "download='maybe' is not a bool"),
    (["--epochs", "1.5"], "epochs='1.5' is not a valid int"),
    (["--lamda", "1"], "unrecognized arguments: --lamda"),
    (["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
])
def test_bad_input_is_one_line_naming_the_field_and_exit_2(capsys, argv, named, tmp_path):
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvsm train: error: ") and named in err and err.count("\n") == 1


def test_a_missing_dataset_is_the_clear_message_and_exit_2(capsys, tmp_path):
    assert main(["--data_root", str(tmp_path / "none"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvsm train: error: mnist not found") and str(tmp_path / "none") in err


def test_a_tiny_run_prints_each_epoch_and_writes_metrics_and_sparse_weights(capsys, tmp_path):
    out = tmp_path / "run"
    assert main([*TINY, "--epochs", "2", "--lam", "1e-3", "--sparsify", "conv2,fc1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in lines[1:3]] == [["epoch", "1"], ["epoch", "2"]]
    assert "val acc u" in lines[1] and "samples/s" in lines[1] and lines[3].startswith("test acc u")
    written = json.loads((out / "metrics.json").read_text())
    assert written["config"]["sparsify"] == ["conv2", "fc1"] and written["config"]["lam"] == 1e-3
    assert [m["epoch"] for m in written["epochs"]] == [1, 2] and "test_acc" in written["epochs"][-1]
    weights = torch.load(out / "weights.pt", weights_only=True)
    fc1, t = weights["fc1.weight"], written["epochs"][-1]["threshold"]
    assert (fc1 == 0).float().mean().item() == json.loads(written["epochs"][-1]["layer_sparsity_json"])["fc1.weight"]
    assert not ((fc1 != 0) & (fc1.abs() <= t)).any()


def test_toml_under_train_or_flat_and_flags_override(tmp_path):
    nested, flat = tmp_path / "nested.toml", tmp_path / "flat.toml"
    nested.write_text('[train]\nlam = 2e-4\nsparsify = ["fc1", "fc2"]\nepochs = 3\n')
    flat.write_text('lam = 2e-4\nepochs = 3\n')
    for file in (nested, flat):
        settings = _settings(_parser().parse_args(["--config", str(file), "--epochs", "5"]))
        config = TrainConfig.from_dict(settings)
        assert (config.lam, config.epochs) == (2e-4, 5)
    assert TrainConfig.from_dict(_settings(_parser().parse_args(["--config", str(nested)]))).sparsify == (
        "fc1", "fc2")


def test_unknown_toml_keys_are_an_error(capsys, tmp_path):
    file = tmp_path / "bad.toml"
    file.write_text("[train]\nlearning_rate = 0.1\n")
    assert main(["--config", str(file), "--out", str(tmp_path)]) == 2
    assert "unknown field(s) 'learning_rate'" in capsys.readouterr().err


def test_the_notebook_preset_then_flags():
    config = TrainConfig.from_dict(_settings(_parser().parse_args(["--preset", "notebook", "--lam", "1e-3"])))
    assert config == TrainConfig.from_dict({**PRESETS["notebook"], "lam": 1e-3})


def test_flags_take_underscores_or_dashes():
    args = _parser().parse_args(["--data-root", "a", "--max_steps", "3", "--eval-batch-size", "10"])
    assert (args.data_root, args.max_steps, args.eval_batch_size) == ("a", "3", "10")
