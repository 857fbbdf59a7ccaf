"""Search efficiency: hypervolume of the (validation accuracy, sparsity) front after 10, 20 and
40 trials for several samplers and seeds, on one fixed cheap real problem.

The trials call `trainables.train` directly (no Ray: the sampler's choices are what is measured)
with the samplers built exactly as a study builds them (`study.search.make_sampler`). Two worker
processes run the (sampler, seed) pairs, one torch thread each.

Usage: python bench/search_efficiency.py [--samplers tpe nsga2 gp random] [--seeds 0 1 2]
       [--trials 40] [--quick]
Prints the medians and saves every value to bench/out/search_efficiency.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
REFERENCE = (0.1, 0.0)  # chance accuracy, no sparsity
CHECKPOINTS = (10, 20, 40)


def problem(quick: bool) -> tuple[dict, str]:
    base = {"model": "lenet300_100", "rule": "classic", "epochs": 2, "batch_size": 128,
            "val_size": 2000, "device": "cpu"}
    if (SHARED / "MNIST" / "raw").exists() and not quick:
        return ({**base, "dataset": "mnist", "data_root": str(SHARED), "download": True,
                 "train_subset": 8000},
                "MNIST (8,000-image training subset, 2,000 validation), lenet300_100, classic RVSM, 2 epochs")
    return ({**base, "dataset": "synthetic", "synthetic_size": 1000, "val_size": 300},
            "synthetic data (quick run)")


def study_text(sampler: str, trials: int) -> str:
    return f"""
[study]
name = "bench"
trials = {trials}
[search]
sampler = "{sampler}"
"""


def run_search(job: tuple[str, int, int, bool]) -> dict:
    """One (sampler, seed): `trials` trainings, the objective values in order."""
    sampler_name, seed, trials, quick = job
    import optuna
    import torch

    from study.search import make_sampler, search_space
    from study.spec import parse_spec
    from trainables.config import TrainConfig
    from trainables.train import train

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_spec(study_text(sampler_name, trials))
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler(spec, seed=seed))
    space = search_space(spec)
    base, _ = problem(quick)
    values, start = [], time.monotonic()
    for _ in range(trials):
        trial = study.ask(fixed_distributions=space)
        config = TrainConfig.from_dict({**base, **trial.params, "seed": seed})
        last = train(config, lambda metrics, state: None)
        acc, sparsity = last["val_acc"], last["sparsity"]
        if last["diverged"] or not (math.isfinite(acc) and math.isfinite(sparsity)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            values.append([math.nan, math.nan])
        else:
            study.tell(trial, [acc, sparsity])
            values.append([acc, sparsity])
    return {"sampler": sampler_name, "seed": seed, "values": values,
            "seconds": time.monotonic() - start}


def hypervolume_after(values: list[list[float]], n: int) -> float:
    from analysis.hypervolume import hypervolume
    points = np.array(values[:n], dtype=float)
    points = points[~np.isnan(points).any(axis=1)]
    if len(points) == 0:
        return 0.0
    return float(hypervolume(points, REFERENCE, ["maximize", "maximize"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "gp", "random"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    _, description = problem(args.quick)
    print(f"problem: {description}; {args.trials} trials per (sampler, seed); "
          f"hypervolume reference {REFERENCE}", flush=True)
    jobs = [(s, seed, args.trials, args.quick) for seed in args.seeds for s in args.samplers]
    results = []
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for result in pool.map(run_search, jobs):
            results.append(result)
            print(f"  {result['sampler']:>6} seed {result['seed']}: HV@{args.trials} "
                  f"{hypervolume_after(result['values'], args.trials):.4f} "
                  f"({result['seconds']:.0f} s)", flush=True)
    checkpoints = [n for n in CHECKPOINTS if n <= args.trials]
    table = {}
    for sampler in args.samplers:
        runs = [r for r in results if r["sampler"] == sampler]
        table[sampler] = {n: float(np.median([hypervolume_after(r["values"], n) for r in runs]))
                          for n in checkpoints}
    print("\nmedian hypervolume over seeds")
    print("sampler  " + "".join(f"{'@' + str(n):>10}" for n in checkpoints))
    for sampler, row in table.items():
        print(f"{sampler:<8} " + "".join(f"{row[n]:>10.4f}" for n in checkpoints))
    default = args.samplers[0]
    summary = {"table": table, "default": default}
    if "random" in table and 20 in table[default]:
        target = table[default][20]
        random_runs = [r for r in results if r["sampler"] == "random"]
        curve = [float(np.median([hypervolume_after(r["values"], n) for r in random_runs]))
                 for n in range(1, args.trials + 1)]
        matched = next((n for n, hv in enumerate(curve, 1) if hv >= target), None)
        summary["random_trials_to_match_default_at_20"] = matched
        print(f"\nrandom needs {matched if matched else f'more than {args.trials}'} trials to "
              f"match {default} at 20 trials (median HV {target:.4f}); random at "
              f"{args.trials}: {curve[-1]:.4f} (ratio {default}@20 / random@{args.trials} = "
              f"{target / curve[-1] if curve[-1] else float('nan'):.3f})")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "search_efficiency.json"
    path.write_text(json.dumps({"problem": description, "reference": REFERENCE, "summary": summary,
                                "runs": results, "machine": f"{os.cpu_count()} CPUs"}, indent=2))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
