"""Study overhead: wall time of a whole study against the ideal, per-trial fixed cost.

Runs the same study (N short trials, C at a time) twice in one run: once with trial processes
reused between trials (the default) and once with a fresh process per trial (the baseline), and
prints for each

    ideal  = sum of the trials' own time (first to last report, as Ray ran them) / C
    wall   = the `rvsm run` command, Ray start to exit
    cost outside the trials, per trial = (wall * C - sum of the trials' own time) / N
        (process start, imports, Ray scheduling; Ray's own start is in there too)
    cost inside a trial besides training = (sum of own time - sum of training time) / N
        (data loading, the three validation passes per epoch, the test pass, checkpoints)

Usage: python bench/study_overhead.py [--trials 16] [--concurrent 2] [--epochs 3] [--quick]
Figures are printed and saved to bench/out/study_overhead.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

STUDY = """
[study]
name = "{name}"
storage = "{storage}"
trials = {trials}
max_concurrent = {concurrent}
seed = 0

[search]
sampler = "random"

[search.params.lam]
low = 1e-6
high = 1e-3
log = true

[search.params.beta]
low = 0.1
high = 10.0
log = true

[train]
{data}
model = "lenet5"
rule = "classic"
epochs = {epochs}
batch_size = 128
lr = 1e-3

[resources]
cpus_per_trial = 1
"""


def data_lines(quick: bool) -> tuple[str, str]:
    if (SHARED / "MNIST" / "raw").exists() and not quick:
        return ('dataset = "mnist"\ndata_root = "%s"\ndownload = true\ntrain_subset = 12000\n'
                'val_size = 2000' % SHARED, "MNIST, 12,000-image subset")
    return ('dataset = "synthetic"\nsynthetic_size = 4000\nval_size = 500', "synthetic, 4,000 images")


def rvsm_run(path: Path, env: dict | None = None) -> float:
    """`rvsm run path` in a fresh process, as a user runs it; its wall time in seconds."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"study {path} failed:\n{done.stdout}\n{done.stderr}")
    return time.monotonic() - start


def run_study(name: str, storage: Path, args, reuse: bool) -> dict:
    data, _ = data_lines(args.quick)
    path = storage / f"{name}.toml"
    path.write_text(STUDY.format(name=name, storage=storage, trials=args.trials,
                                 concurrent=args.concurrent, epochs=args.epochs, data=data))
    wall = rvsm_run(path, {"RVSM_REUSE_TRIAL_PROCESSES": "1" if reuse else "0"})
    trials = pd.read_parquet(storage / name / "results" / "trials")
    epochs = pd.read_parquet(storage / name / "results" / "epochs")
    training = epochs.groupby("trial_id")["metric_epoch_time_s"].sum()
    own = (trials["ended_at"] - trials["started_at"]).dt.total_seconds()
    n, c = len(trials), args.concurrent
    return {
        "reuse_processes": reuse, "trials": n, "concurrent": c, "wall_s": wall,
        "sum_training_s": float(training.sum()), "sum_trial_own_s": float(own.sum()),
        "median_trial_training_s": float(training.median()),
        "ideal_s": float(own.sum()) / c, "ratio_wall_to_ideal": wall / (float(own.sum()) / c),
        "ratio_wall_to_training_ideal": wall / (float(training.sum()) / c),
        "outside_trial_cost_per_trial_s": (wall * c - float(own.sum())) / n,
        "inside_trial_non_training_s": (float(own.sum()) - float(training.sum())) / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="synthetic data, for a smoke run")
    args = parser.parse_args()
    _, data_name = data_lines(args.quick)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for reuse in (True, False):
            name = "reuse" if reuse else "fresh"
            print(f"running {args.trials} trials, {args.concurrent} at a time ({data_name}, "
                  f"lenet5, {args.epochs} epochs), trial processes "
                  f"{'reused' if reuse else 'started per trial'} ...", flush=True)
            results.append(run_study(name, Path(tmp), args, reuse))
            r = results[-1]
            print(f"  wall {r['wall_s']:.1f} s, ideal {r['ideal_s']:.1f} s "
                  f"(x{r['ratio_wall_to_ideal']:.3f}); vs pure training x"
                  f"{r['ratio_wall_to_training_ideal']:.3f}; median trial training "
                  f"{r['median_trial_training_s']:.1f} s; per trial: "
                  f"{r['outside_trial_cost_per_trial_s']:.1f} s outside the trial, "
                  f"{r['inside_trial_non_training_s']:.1f} s inside it besides training",
                  flush=True)
    reuse, fresh = results
    print(f"reuse vs fresh processes: wall x{fresh['wall_s'] / reuse['wall_s']:.2f} faster, "
          f"cost outside the trial per trial {fresh['outside_trial_cost_per_trial_s']:.1f} s -> "
          f"{reuse['outside_trial_cost_per_trial_s']:.1f} s")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    payload = {"data": data_name, "machine": f"{os.cpu_count()} CPUs", "runs": results}
    (out / "study_overhead.json").write_text(json.dumps(payload, indent=2))
    print(f"saved {out / 'study_overhead.json'}")


if __name__ == "__main__":
    main()
