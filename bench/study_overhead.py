"""Study overhead: wall time of a whole study against the ideal, per-trial fixed cost.

Runs the same study (N short trials, C at a time) in one run, in variants: the defaults
(trial processes reused, diagnostic validation passes every `diagnostics_every` epochs and at
the last), the diagnostic passes every epoch (the behaviour before issue 12), and with `--fresh`
a fresh process per trial (the baseline of process reuse). It prints for each

    ideal           = sum of the trials' own time (first to last report, as Ray ran them) / C
    training ideal  = sum of the trials' training time (epoch_time_s, evaluation excluded) / C
    wall            = the `rvsm run` command, Ray start to exit
    cost outside the trials, per trial = (wall * C - sum of the trials' own time) / N
        (process start, imports, Ray scheduling; Ray's own start is in there too)
    cost inside a trial besides training = (sum of own time - sum of training time) / N
        (data loading, the validation passes, the test pass, checkpoints)

It also times one epoch's evaluation in this process, with and without the diagnostic passes,
alternating the two 7 times (medians; one torch thread, as a trial with one CPU): a figure that
load on a shared machine shifts less than the studies' wall times.

Usage: python bench/study_overhead.py [--trials 16] [--concurrent 2] [--epochs 6] [--fresh] [--quick]
       python bench/study_overhead.py --eval-only     (the evaluation timing alone)
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
import tomllib
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
{diagnostics}
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


VARIANTS = {  # name: (trial processes reused, [train] line setting diagnostics_every)
    "default": (True, ""),
    "diagnostics every epoch": (True, "diagnostics_every = 1\n"),
    "fresh process per trial": (False, ""),
}


def run_study(variant: str, storage: Path, args) -> dict:
    reuse, diagnostics = VARIANTS[variant]
    data, _ = data_lines(args.quick)
    name = variant.replace(" ", "_")
    path = storage / f"{name}.toml"
    path.write_text(STUDY.format(name=name, storage=storage, trials=args.trials, concurrent=args.concurrent,
                                 epochs=args.epochs, data=data, diagnostics=diagnostics))
    wall = rvsm_run(path, {"RVSM_REUSE_TRIAL_PROCESSES": "1" if reuse else "0"})
    trials = pd.read_parquet(storage / name / "results" / "trials")
    epochs = pd.read_parquet(storage / name / "results" / "epochs")
    training = epochs.groupby("trial_id")["metric_epoch_time_s"].sum()
    own = (trials["ended_at"] - trials["started_at"]).dt.total_seconds()
    n, c = len(trials), args.concurrent
    own_sum, training_sum = float(own.sum()), float(training.sum())
    return {
        "variant": variant, "reuse_processes": reuse, "diagnostics_every_epoch": bool(diagnostics),
        "trials": n, "concurrent": c, "epochs": args.epochs, "wall_s": wall,
        "sum_training_s": training_sum, "sum_trial_own_s": own_sum,
        "median_trial_training_s": float(training.median()), "median_trial_own_s": float(own.median()),
        "ideal_s": own_sum / c, "training_ideal_s": training_sum / c,
        "ratio_wall_to_ideal": wall / (own_sum / c),
        "ratio_wall_to_training_ideal": wall / (training_sum / c),
        "outside_trial_cost_per_trial_s": (wall * c - own_sum) / n,
        "inside_trial_non_training_s": (own_sum - training_sum) / n,
    }


def evaluation_time(quick: bool, repeats: int = 7) -> dict:
    """Median seconds of one epoch's `evaluate` (the untrained network: the same passes) with the
    diagnostic passes (u, w, complement) and without them (u only)."""
    import torch
    from trainables.config import TrainConfig
    from trainables.data import load_splits
    from trainables.models import build_model
    from trainables.rvsm import sparsified_names, threshold
    from trainables.train import evaluate
    config = TrainConfig.from_dict({**tomllib.loads(data_lines(quick)[0]), "model": "lenet5", "device": "cpu"})
    torch.set_num_threads(1)
    splits = load_splits(config, torch.device("cpu"))
    model = build_model(config.model, in_shape=splits.in_shape, num_classes=splits.num_classes)
    model = model.to(memory_format=torch.channels_last)
    names, t = sparsified_names(model, config.sparsify), threshold(1e-4, 1.0)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeats):
        for diagnostics in (True, False):
            start = time.perf_counter()
            evaluate(model, splits, names, t, config.eval_batch_size, diagnostics=diagnostics)
            times[diagnostics].append(time.perf_counter() - start)
    with_d, without = (float(sorted(times[d])[repeats // 2]) for d in (True, False))
    return {"validation_images": len(splits.val[1]), "epoch_eval_with_diagnostics_s": with_d,
            "epoch_eval_u_only_s": without, "repeats": repeats}


def print_evaluation(e: dict) -> None:
    print(f"one epoch's evaluation ({e['validation_images']:,} validation images, 1 thread, median of"
          f" {e['repeats']}): u, w and complement {e['epoch_eval_with_diagnostics_s']:.2f} s, u only"
          f" {e['epoch_eval_u_only_s']:.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--fresh", action="store_true", help="also run a fresh process per trial")
    parser.add_argument("--quick", action="store_true", help="synthetic data, for a smoke run")
    parser.add_argument("--eval-only", action="store_true", help="only the in-process evaluation timing")
    args = parser.parse_args()
    _, data_name = data_lines(args.quick)
    evaluation = evaluation_time(args.quick)
    print_evaluation(evaluation)
    out = ROOT / "bench" / "out"
    if args.eval_only:
        out.mkdir(parents=True, exist_ok=True)
        (out / "study_overhead_eval.json").write_text(json.dumps({"data": data_name, **evaluation}, indent=2))
        return
    variants = [v for v in VARIANTS if args.fresh or VARIANTS[v][0]]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for variant in variants:
            print(f"running {args.trials} trials, {args.concurrent} at a time ({data_name}, "
                  f"lenet5, {args.epochs} epochs): {variant} ...", flush=True)
            results.append(run_study(variant, Path(tmp), args))
            r = results[-1]
            print(f"  wall {r['wall_s']:.1f} s; ideal {r['ideal_s']:.1f} s (x{r['ratio_wall_to_ideal']:.3f});"
                  f" training-only ideal {r['training_ideal_s']:.1f} s"
                  f" (x{r['ratio_wall_to_training_ideal']:.3f}); median trial {r['median_trial_own_s']:.1f} s,"
                  f" of which training {r['median_trial_training_s']:.1f} s; per trial:"
                  f" {r['outside_trial_cost_per_trial_s']:.1f} s outside the trial,"
                  f" {r['inside_trial_non_training_s']:.1f} s inside it besides training", flush=True)
    by_name = {r["variant"]: r for r in results}
    default, every = by_name["default"], by_name["diagnostics every epoch"]
    print(f"diagnostics every epoch -> default: wall {every['wall_s']:.1f} s -> {default['wall_s']:.1f} s,"
          f" inside a trial besides training {every['inside_trial_non_training_s']:.1f} s ->"
          f" {default['inside_trial_non_training_s']:.1f} s per trial")
    if "fresh process per trial" in by_name:
        fresh = by_name["fresh process per trial"]
        print(f"reuse vs fresh processes: wall x{fresh['wall_s'] / default['wall_s']:.2f} faster, cost outside"
              f" the trial per trial {fresh['outside_trial_cost_per_trial_s']:.1f} s ->"
              f" {default['outside_trial_cost_per_trial_s']:.1f} s")
    out.mkdir(parents=True, exist_ok=True)
    payload = {"data": data_name, "machine": f"{os.cpu_count()} CPUs", "evaluation": evaluation, "runs": results}
    (out / "study_overhead.json").write_text(json.dumps(payload, indent=2))
    print(f"saved {out / 'study_overhead.json'}")


if __name__ == "__main__":
    main()
