"""Sharing a device between trials: aggregate training samples/s for 1, 2, 4, 8 concurrent trials.

Each level runs a study of N identical-sized trials, all N at once, each given 1/N of the device:
`gpus_per_trial = 1/N` where a GPU exists, else `cpus_per_trial = CPUs/N` (the same code path;
Ray packs the fractional trials). Aggregate samples/s = all training samples of all trials /
the span from the first epoch's start to the last epoch's end. The ratio to N = 1 is printed.

Usage: python bench/concurrency.py [--levels 1 2 4 8] [--epochs 2] [--quick]
Saves bench/out/concurrency.json.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from study_overhead import data_lines, rvsm_run  # noqa: E402

STUDY = """
[study]
name = "n{n}"
storage = "{storage}"
trials = {n}
max_concurrent = {n}

[search]
sampler = "random"
early_stopping = false

[search.params.lam]
low = 1e-6
high = 1e-5
log = true

[train]
{data}
model = "lenet5"
rule = "classic"
epochs = {epochs}

[resources]
{resources}
"""


def gpus() -> int:
    try:
        import torch
        return torch.cuda.device_count()
    except ImportError:
        return 0


def level(n: int, storage: Path, args) -> dict:
    data, _ = data_lines(args.quick)
    share = (f"cpus_per_trial = 1\ngpus_per_trial = {1 / n}" if gpus()
             else f"cpus_per_trial = {os.cpu_count() / n}")
    path = storage / f"n{n}.toml"
    path.write_text(STUDY.format(n=n, storage=storage, data=data, epochs=args.epochs, resources=share))
    wall = rvsm_run(path)
    epochs = pd.read_parquet(storage / f"n{n}" / "results" / "epochs")
    samples = (epochs["metric_samples_per_s"] * epochs["metric_epoch_time_s"]).sum()
    ends = epochs["reported_at"]
    starts = ends - pd.to_timedelta(epochs["metric_epoch_time_s"], unit="s")
    span = (ends.max() - starts.min()).total_seconds()
    return {"concurrent": n, "share": share.replace("\n", ", "), "samples": float(samples),
            "span_s": span, "aggregate_samples_per_s": float(samples) / span,
            "median_trial_samples_per_s": float(epochs["metric_samples_per_s"].median()),
            "study_wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    device = f"{gpus()} GPU(s)" if gpus() else f"{os.cpu_count()} CPUs, no GPU"
    print(f"device: {device}; data: {data_lines(args.quick)[1]}; lenet5, {args.epochs} epochs per trial",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.levels:
            rows.append(level(n, Path(tmp), args))
            r = rows[-1]
            print(f"  {n} concurrent ({r['share']}): aggregate {r['aggregate_samples_per_s']:.0f} "
                  f"samples/s (x{r['aggregate_samples_per_s'] / rows[0]['aggregate_samples_per_s']:.2f}"
                  f" vs {rows[0]['concurrent']}), per trial {r['median_trial_samples_per_s']:.0f}",
                  flush=True)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "concurrency.json").write_text(json.dumps({"device": device, "levels": rows}, indent=2))
    print(f"saved {out / 'concurrency.json'}")


if __name__ == "__main__":
    main()
