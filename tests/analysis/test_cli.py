"""The commands: outputs written, errors as one message with exit 2, and no torch/Ray/optuna needed."""
from __future__ import annotations

import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from analysis import schema
from analysis.cli import export_main, pareto_main, report_main

ROOT = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    return struct.unpack(">II", path.read_bytes()[16:24])


@pytest.fixture
def study(make_study, rvsm_rows):
    rows = rvsm_rows(30, seed=3) + [{"state": "running"}, {"state": "errored", "error": "CUDA out of memory"}]
    return make_study("lenet5", rows)


def test_pareto(study, tmp_path, capsys):
    out = tmp_path / "plots" / "front.png"
    argv = [str(study), "-o", str(out), "--size", "900x600", "--references", "mnist_lenet5",
            "--x-axis", "compression", "--baseline", "0.992"]
    assert pareto_main(argv) == 0
    assert png_size(out) == (900, 600)
    assert pareto_main([str(study), str(study), "-o", str(tmp_path / "f.svg"), "--width", "500",
                        "--height", "400", "--dpi", "50", "--color-by", "beta"]) == 0
    assert (tmp_path / "f.svg").stat().st_size > 1000


def test_pareto_prints_each_studys_hypervolume_against_one_reference(make_study, rvsm_rows, tmp_path,
                                                                    capsys):
    weak = [dict(row, val_acc=row["val_acc"] - 0.05) for row in rvsm_rows(12)]
    strong, weak = make_study("strong", rvsm_rows(12)), make_study("weak", weak)
    assert pareto_main([str(strong), str(weak), "-o", str(tmp_path / "f.png")]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    hv = {name: float(lines[name].rsplit(" ", 1)[1]) for name in ("strong", "weak")}
    assert hv["strong"] > hv["weak"] > 0
    assert "13 finished" in lines["strong"]
    assert lines["(hypervolume reference point"] == "val_acc 0.1, sparsity 0)"


def test_report(study, tmp_path):
    out = tmp_path / "report"
    assert report_main([str(study), "-o", str(out), "--references", "notebook"]) == 0
    text = (out / "report.md").read_text()
    for png in ("front.png", "hypervolume.png", "params.png"):
        assert f"]({png})" in text and png_size(out / png)[0] > 0
    assert "| trial | λ | β | lr | threshold | val acc | test acc | sparsity | compression | non-zeros |" in text
    assert "| finished (analysed) | 31 |" in text and "| errored | 1 |" in text
    assert "CUDA out of memory" in text and "Hypervolume: **" in text and "Knee: trial `t" in text
    assert "## What mattered" in text and "| threshold √(2λ/β) |" in text and "| chance level |" in text


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export(study, tmp_path, fmt):
    out = tmp_path / f"trials.{fmt}"
    assert export_main([str(study), "-o", str(out)]) == 0
    table = pd.read_csv(out) if fmt == "csv" else pd.read_parquet(out)
    assert len(table) == 33 and {"study", "trial_id", "param_lam", "metric_val_acc", "pareto_rank"} <= set(table)
    assert (table["pareto_rank"] == 0).sum() >= 2
    assert table.loc[table["state"] != schema.FINISHED, "pareto_rank"].isna().all()


def error_of(main, argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_errors_are_one_message_and_exit_2(study, tmp_path, make_study, capsys):
    out = str(tmp_path / "f.png")
    assert "does not exist" in error_of(pareto_main, [str(tmp_path / "missing"), "-o", out], capsys)
    empty = make_study("empty", [{"state": "running"}])
    err = error_of(pareto_main, [str(empty), "-o", out], capsys)
    assert "study empty has no finished trials (1 running)" in err and not Path(out).exists()
    (tmp_path / "bare" / "results" / "trials").mkdir(parents=True)
    err = error_of(report_main, [str(tmp_path / "bare"), "-o", str(tmp_path / "r")], capsys)
    assert "no trials in" in err and not (tmp_path / "r").exists()
    assert "no trials in" in error_of(export_main, [str(tmp_path / "bare"), "-o", out + ".csv"], capsys)
    assert "--size" in error_of(pareto_main, [str(study), "-o", out, "--size", "big"], capsys)
    assert "extension" in error_of(pareto_main, [str(study), "-o", str(tmp_path / "f.jpg")], capsys)
    argv = [str(study), "-o", out, "--hv-reference", "0.1"]
    assert "expected 2 numbers" in error_of(report_main, argv, capsys)
    assert "export format" in error_of(export_main, [str(study), "-o", str(tmp_path / "x.xlsx")], capsys)
    assert pareto_main(["--x-axis", "nope", str(study), "-o", out]) == 2  # argparse's own message
    capsys.readouterr()
    (tmp_path / "taken").write_text("a file")
    err = error_of(report_main, [str(study), "-o", str(tmp_path / "taken")], capsys)
    assert err == f"rvsm report: error: {tmp_path / 'taken'} exists and is not a folder: give a folder for the report\n"
    assert (tmp_path / "taken").read_text() == "a file"


def test_bad_file_stops_unless_skipped(study, tmp_path, capsys):
    bad = study / "results" / "trials" / "broken.parquet"
    bad.write_bytes(b"garbage")
    out = str(tmp_path / "f.png")
    err = error_of(pareto_main, [str(study), "-o", out], capsys)
    assert "broken.parquet" in err and "--skip-bad" in err
    assert pareto_main([str(study), "-o", out, "--skip-bad"]) == 0
    assert "warning: skipped" in capsys.readouterr().err


NO_TORCH = """
import importlib, pkgutil, sys
for name in ("torch", "ray", "optuna"):
    sys.modules[name] = None  # importing them now raises ImportError
import analysis
for module in pkgutil.iter_modules(analysis.__path__):
    importlib.import_module("analysis." + module.name)
from analysis.__main__ import main
study, out = sys.argv[1], sys.argv[2]
codes = [
    main(["pareto", study, "-o", out + "/front.png"]),
    main(["report", study, "-o", out + "/report"]),
    main(["export", study, "-o", out + "/trials.csv"]),
]
loaded = [n for n in ("torch", "ray", "optuna") if sys.modules.get(n) is not None]
print("codes", codes, "loaded", loaded)
sys.exit(max(codes) or len(loaded))
"""


def test_runs_without_torch_ray_or_optuna(study, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(NO_TORCH), str(study), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "codes [0, 0, 0] loaded []" in result.stdout
    assert (tmp_path / "report" / "report.md").exists()


def test_python_dash_m(study, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-m", "analysis", "nope"], capture_output=True, text=True, env=env)
    assert run.returncode == 2 and "usage: python -m analysis {pareto|report|export}" in run.stderr
