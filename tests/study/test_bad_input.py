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


# -- kinds found by fuzzing (issue 10): each is refused whole, before Ray starts ----------------

SPEC_CASES = {
    # case: (original text, replacement, words the message must contain)
    "NaN cpus": ("", "\n[resources]\ncpus_per_trial = nan\n", ["resources.cpus_per_trial", "nan"]),
    "infinite gpus": ("", "\n[resources]\ngpus_per_trial = inf\n", ["resources.gpus_per_trial", "inf"]),
    "more cpus than a machine": ("", "\n[resources]\ncpus_per_trial = 100000\n",
                                 ["resources.cpus_per_trial", "1024"]),
    "infinite lr": ("epochs = 2", "epochs = 2\nmomentum = inf", ["momentum=inf", "finite"]),
    "seed beyond the samplers": ("seed = 1", "seed = 4294967296", ["study.seed", "4294967296"]),
    "negative seed": ("seed = 1", "seed = -1", ["study.seed"]),
    "huge trials": ("trials = 6", "trials = 9223372036854775807", ["study.trials"]),
    "data_root not a string": ("epochs = 2", "epochs = 2\ndata_root = 7", ["data_root=7", "str"]),
    "unknown layer in sparsify": ("epochs = 2", 'epochs = 2\nsparsify = ["fc9"]',
                                  ["sparsify", "fc9", "fc1.weight"]),
    "a GPU index the trial cannot see": (
        "[search]", '[resources]\ngpus_per_trial = 1\n\n[search]', ["device='cuda:1'", "'cuda:0'"],
        ["--set", 'train.device="cuda:1"']),
    "storage with no bucket": ('storage = "', 'storage = "s3://" #', ["study.storage", "s3://"]),
    "storage name too long": ('storage = "', f'storage = "/tmp/{"x" * 300}/', ["study.storage", "255"]),
    "cluster port out of range": ("", '\n[cluster]\naddress = "127.0.0.1:99999"\n', ["cluster.address"]),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_found_by_fuzzing_refused_in_one_line(case, tmp_path, capsys):
    original, replacement, words, *extra_args = SPEC_CASES[case]
    path, storage = _bad_study(tmp_path, original, replacement)
    assert main(["run", str(path), *(extra_args[0] if extra_args else [])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvsm run: error:") and err.count("\n") == 1, err
    for word in words:
        assert word in err, (word, err)
    assert not storage.exists()


def test_a_grid_smaller_than_the_trials_is_refused_naming_its_size(tmp_path, capsys):
    text = study_text("g", tmp_path / "studies", sampler="grid", trials=5).split("[search.params.lam]")[0]
    text += '[search.params.lam]\nvalues = [0.0, 1e-4]\n[search.params.rule]\nvalues = ["classic", "modified"]\n'
    path = tmp_path / "g.toml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "study.trials = 5" in err and "grid's 4 points" in err and "2 lam x 2 rule" in err


def test_a_study_file_that_is_not_utf8_names_the_line(tmp_path, capsys):
    path, storage = _bad_study(tmp_path, 'sampler = "tpe"', 'sampler = "tpe"')
    path.write_bytes(path.read_bytes().replace(b'sampler = "tpe"', b'sampler = "t\xe9pe"'))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and "0xe9" in err and "sampler" in err and err.count("\n") == 1


def test_a_byte_order_mark_is_no_error(tmp_path):
    """Some Windows editors start UTF-8 files with a BOM; TOML parsers refuse it, we drop it."""
    from study.spec import read_raw
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + study_text("bom", tmp_path / "studies").encode("utf-8"))
    assert read_raw(path)["study"]["name"] == "bom"


def test_train_config_that_is_not_utf8_is_one_line(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_bytes(b"[train]\nmodel = \"lenet\xff\"\n")
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rvsm train: error: --config") and "not UTF-8" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", ["through a file", "unknown scheme", "name too long"])
def test_an_unusable_storage_is_refused_before_ray_and_leaves_nothing(where, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    storage = {"through a file": f"{blocker}/studies", "unknown scheme": "nosuch://bucket/studies",
               "name too long": f"{tmp_path}/{'n' * 250}/{'m' * 250}x{'y' * 10}"}[where]
    from study.storage import StorageError, check_storage
    with pytest.raises(StorageError) as error:
        check_storage(storage, "s")
    assert "\n" not in str(error.value) and str(error.value).startswith("cannot use storage")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_a_storage_that_does_not_answer_times_out(monkeypatch):
    import time

    from study import storage
    monkeypatch.setattr(storage, "locate", lambda *a, **k: time.sleep(3))
    start = time.monotonic()
    with pytest.raises(storage.StorageError, match="did not answer within 0.2 s"):
        storage.check_storage("s3://bucket/studies", "s", timeout_s=0.2)
    assert time.monotonic() - start < 2


def test_a_bucket_that_does_not_exist_is_one_line(tmp_path, capsys, s3_server):
    path, _ = _bad_study(tmp_path, f'storage = "{tmp_path / "studies"}"',
                         'storage = "s3://no-such-bucket/studies"')
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot use storage s3://no-such-bucket/studies/bad" in err, err
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


def test_extending_a_grid_study_beyond_its_grid_is_refused(tmp_path, capsys):
    text = study_text("g", tmp_path / "studies", sampler="grid", trials=2).split("[search.params.lam]")[0]
    text += '[search.params.lam]\nvalues = [0.0, 1e-4]\n'
    from study.bookkeeping import plan_run
    from study.spec import dump_toml, loads
    from study.storage import STUDY_FILE, locate
    location = locate(str(tmp_path / "studies"), "g")
    location.write_text(dump_toml(loads(text)), STUDY_FILE)
    plan_run(location, 2)
    assert main(["extend", location.path, "--trials", "1"]) == 2
    err = capsys.readouterr().err
    assert "grid has 2 points" in err and "2 trials are planned" in err and err.count("\n") == 1


def test_a_trial_that_cannot_run_on_its_node_is_recorded_errored_once_not_retried(
        ray_session, tmp_path, capsys, write_study):
    """`device = "cuda"` on a machine without one passes the spec (a cluster's nodes may have
    GPUs) and fails on the node: the trial is recorded errored with the reason, without
    FailureConfig's retries (Tune records no failure at all)."""
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: device='cuda' would run")
    path = write_study(trials=1, concurrent=1)
    assert main(["run", str(path), "--set", 'train.device="cuda"']) == 0
    from analysis.load import load_results
    trials = load_results([str(tmp_path / "studies" / "tiny")]).trials
    assert list(trials["state"]) == ["errored"]
    assert trials["error"][0].startswith("ConfigError: device='cuda' is not available here")
    trial_folders = list((tmp_path / "studies" / "tiny" / "runs").glob("*/trial_*"))
    assert trial_folders and not any((f / "error.txt").exists() for f in trial_folders)


def test_an_object_store_that_never_answers_is_one_line_and_no_hang(tmp_path):
    """An endpoint that accepts connections and never answers: the console command gives up
    after RVSM_STORAGE_TIMEOUT_S and exits at once (the S3 client would hold the process at
    exit for minutes), before Ray starts."""
    import os
    import socket
    import time
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(50)  # connections queue up; nothing ever reads or answers them
    try:
        path, _ = _bad_study(tmp_path, f'storage = "{tmp_path / "studies"}"',
                             'storage = "s3://bucket/studies"')
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                   AWS_DEFAULT_REGION="us-east-1", AWS_EC2_METADATA_DISABLED="true",
                   AWS_ENDPOINT_URL=f"http://127.0.0.1:{silent.getsockname()[1]}",
                   RVSM_CACHE=str(tmp_path / "cache"), RVSM_STORAGE_TIMEOUT_S="2")
        start = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], env=env,
                              capture_output=True, text=True, timeout=90)
        elapsed = time.monotonic() - start
    finally:
        silent.close()
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "did not answer within 2 s" in done.stderr and "Traceback" not in done.stderr
    assert elapsed < 60, f"the command took {elapsed:.0f} s to exit"
