"""Every kind of bad study file: exit status 2, one message naming the key and the value, no
traceback, and nothing started or written."""
from __future__ import annotations

import subprocess
import sys

import pytest

from study.cli import main
from tests.study.conftest import study_text

CASES = {
    # case: (original text, replacement, words the message must contain)
    "missing name": ('name = "bad"\n', "", ["study.name"]),
    "unknown key": ("seed = 1", "sede = 1", ["study.sede"]),
    "unknown train key": ('model = "lenet300_100"', 'modle = "lenet300_100"', ["train.modle"]),
    "wrong type": ("trials = 6", 'trials = "six"', ["study.trials", "six"]),
    "low >= high": ("low = 1e-3\nhigh = 1e-2", "low = 1e-2\nhigh = 1e-3",
                    ["search.params.lr", "low", "0.01"]),
    "non-positive log range": ("low = 1e-6", "low = 0.0", ["search.params.lam", "log"]),
    "unknown sampler": ('sampler = "tpe"', 'sampler = "bayes"', ["search.sampler", "bayes", "nsga2"]),
    "unknown dataset": ('dataset = "synthetic"', 'dataset = "imagenet"', ["dataset", "imagenet"]),
    "unknown model": ('model = "lenet300_100"', 'model = "resnet"', ["model", "resnet", "lenet5"]),
    "negative gpus": ("", "\n[resources]\ngpus_per_trial = -1\n", ["resources.gpus_per_trial"]),
    "test accuracy objective": ('sampler = "tpe"', 'sampler = "tpe"\nobjectives = ["test_acc", "sparsity"]',
                                ["test_acc", "val_acc"]),
    "searched and fixed": ("epochs = 2", "epochs = 2\nlr = 0.1", ["train.lr", "search.params.lr"]),
    "not TOML": ("[search]", "[search", ["not valid TOML"]),
}


def _bad_study(tmp_path, original: str, replacement: str):
    storage = tmp_path / "studies"
    text = study_text("bad", storage)
    assert original in text, original
    text = text.replace(original, replacement, 1) if original else text + replacement
    path = tmp_path / "bad.toml"
    path.write_text(text)
    return path, storage


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_study_file_exits_2_naming_the_key(case, tmp_path, capsys):
    original, replacement, words = CASES[case]
    path, storage = _bad_study(tmp_path, original, replacement)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvsm run: error:") and "Traceback" not in err
    for word in words:
        assert word in err, (word, err)
    assert not storage.exists(), "nothing may be written for a bad study file"


def test_unreadable_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read study file" in capsys.readouterr().err


def test_bad_override(tmp_path, capsys, write_study):
    path = write_study()
    assert main(["run", str(path), "--set", "train.epochs=-3"]) == 2
    assert "epochs" in capsys.readouterr().err


def test_no_traceback_from_the_console_command(tmp_path):
    path, _ = _bad_study(tmp_path, 'sampler = "tpe"', 'sampler = "bayes"')
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "search.sampler" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_gpu_request_without_gpu_is_refused(ray_session, tmp_path, capsys, write_study):
    path = write_study(extra="\n[resources]\ngpus_per_trial = 0.25\n")
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "resources.gpus_per_trial" in err and "0.25" in err
    assert not (tmp_path / "studies" / "tiny").exists()


def test_resume_of_unknown_study(tmp_path, capsys):
    assert main(["resume", str(tmp_path / "nowhere")]) == 2
    assert "no study at" in capsys.readouterr().err
