"""Pareto-aware early stopping: hypervolume reached per CPU-hour with and without it.

The same searches (sampler, seeds, problem) run twice: every trial to its last epoch, and with
`study.scheduler.ParetoEarlyStopping` deciding after each epoch whether to stop the trial (the
rule the Ray scheduler applies). How a stopped trial is told to the sampler is the other
variable (`--stopped-as`, one early-stopping search each): `pruned` (what the study does, see
study.search.STATE_IN_OPTUNA), `complete` (its last, partial values: what Ray's OptunaSearch
does) or `fail` (left out of what the sampler learns). Only trials that ran to the end count for
the hypervolume, as in the analysis. Trials run in-process, one thread each, two searches at a time.

The schedule the rule must not judge too early is an option too: `--schedule cosine` and
`--ramp-epochs N` (the threshold ramp) train every trial that way, and `--graces` lists the
graces to compare (one early-stopping search each): epochs, or `default` for the study's own
(study.scheduler.default_grace: the ramp plus a share of the remaining epochs).

Usage: python bench/early_stopping.py [--trials 24] [--epochs 4] [--seeds 0 1 2] [--quick]
                                      [--stopped-as pruned complete fail]
                                      [--schedule constant|cosine] [--ramp-epochs 0]
                                      [--graces 1 default]
Saves bench/out/early_stopping.json.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from search_efficiency import REFERENCE, hypervolume_after, problem, study_text  # noqa: E402


class Stop(Exception):
    pass


def train_text(epochs: int, schedule: str, ramp_epochs: int) -> str:
    return f'\n[train]\nepochs = {epochs}\nschedule = "{schedule}"\nramp_epochs = {ramp_epochs}\n'


def grace_epochs(grace: str, trials: int, epochs: int, schedule: str, ramp_epochs: int) -> int:
    """`grace` as epochs: a number, or `default`, the study's own for this schedule."""
    if grace != "default":
        return int(grace)
    from study.scheduler import default_grace
    from study.spec import parse_spec
    return default_grace(parse_spec(study_text("tpe", trials) + train_text(epochs, schedule, ramp_epochs)))


def run_search(job: tuple) -> dict:
    seed, early, trials, epochs, min_dominating, quick, stopped_as, schedule, ramp_epochs, grace = job
    import optuna
    import torch

    from study.results import ran_to_end
    from study.scheduler import ParetoEarlyStopping
    from study.search import make_sampler, search_space
    from study.spec import parse_spec
    from trainables.config import TrainConfig
    from trainables.train import train

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = parse_spec(study_text("tpe", trials))
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler(spec, seed=seed))
    rule = ParetoEarlyStopping(spec.search.objectives, min_dominating=min_dominating,
                               grace_epochs=grace or 1)
    base, _ = problem(quick)
    finished, epochs_run, start = [], 0, time.process_time()
    for number in range(trials):
        trial = study.ask(fixed_distributions=search_space(spec))
        config = TrainConfig.from_dict({**base, **trial.params, "seed": seed, "epochs": epochs,
                                        "schedule": schedule, "ramp_epochs": ramp_epochs})
        last: dict = {}

        def report(metrics, state, name=f"t{number}"):
            nonlocal epochs_run
            epochs_run += 1
            last.update(metrics)
            # as the study's scheduler: the last epoch is never stopped
            if early and rule.should_stop(name, metrics["epoch"], metrics) and not ran_to_end(metrics):
                raise Stop

        try:
            train(config, report)
            stopped = False
        except Stop:
            stopped = True
        acc, sparsity = last.get("val_acc", math.nan), last.get("sparsity", math.nan)
        if last.get("diverged") or not (math.isfinite(acc) and math.isfinite(sparsity)):
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        if stopped and stopped_as != "complete":
            study.tell(trial, state=optuna.trial.TrialState[stopped_as.upper()])
            continue
        study.tell(trial, [acc, sparsity])
        if not stopped:
            rule.finish(f"t{number}")
            finished.append([acc, sparsity])
    cpu = time.process_time() - start
    return {"seed": seed, "early_stopping": early, "stopped_as": stopped_as if early else None,
            "grace": grace if early else None, "finished": finished, "cpu_s": cpu,
            "epochs_run": epochs_run, "trials": trials}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--min-dominating", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--stopped-as", nargs="+", default=["pruned", "complete"],
                        choices=["pruned", "complete", "fail"],
                        help="how a stopped trial is told to the sampler (one search each)")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    parser.add_argument("--ramp-epochs", type=int, default=0, help="threshold ramp of every trial")
    parser.add_argument("--graces", nargs="+", default=["1"],
                        help="graces to compare, in epochs or 'default' (one search each)")
    args = parser.parse_args()
    if any(g != "default" and not g.isdigit() for g in args.graces) or not 0 <= args.ramp_epochs <= args.epochs:
        parser.error("--graces takes whole numbers or 'default'; --ramp-epochs 0 to --epochs")
    graces = {g: grace_epochs(g, args.trials, args.epochs, args.schedule, args.ramp_epochs)
              for g in args.graces}
    _, description = problem(args.quick)
    description = (f"{description.replace('2 epochs', f'{args.epochs} epochs')}, {args.schedule} "
                   f"schedule, threshold ramp {args.ramp_epochs} epochs")
    print(f"problem: {description}; tpe, {args.trials} trials; stop when dominated by >= "
          f"{args.min_dominating} finished trials at the same epoch; graces "
          + ", ".join(f"{g} = {n}" if g == "default" else g for g, n in graces.items()), flush=True)
    variants = [(False, "complete", None)] + [(True, how, n) for n in graces.values() for how in args.stopped_as]
    jobs = [(seed, early, args.trials, args.epochs, args.min_dominating, args.quick, how,
             args.schedule, args.ramp_epochs, grace)
            for seed in args.seeds for early, how, grace in variants]
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(run_search, jobs))
    rows = []
    for r in results:
        hv = hypervolume_after(r["finished"], len(r["finished"])) if r["finished"] else 0.0
        r["hypervolume"] = hv
        r["hv_per_cpu_hour"] = hv / (r["cpu_s"] / 3600)
        rows.append(r)
        print(f"  seed {r['seed']} {_label(r['early_stopping'], r['stopped_as'], r['grace'])}: "
              f"HV {hv:.4f}, {len(r['finished'])} finished, {r['epochs_run']} epochs, CPU {r['cpu_s']:.0f} s, "
              f"HV per CPU-hour {r['hv_per_cpu_hour']:.2f}")
    summary = {}
    for early, how, grace in variants:
        label = _label(early, how, grace)
        mine = [r for r in rows if _label(r["early_stopping"], r["stopped_as"], r["grace"]) == label]
        summary[label] = {
            "median_hypervolume": float(np.median([r["hypervolume"] for r in mine])),
            "median_cpu_s": float(np.median([r["cpu_s"] for r in mine])),
            "median_epochs_run": float(np.median([r["epochs_run"] for r in mine])),
            "median_hv_per_cpu_hour": float(np.median([r["hv_per_cpu_hour"] for r in mine])),
        }
    off = summary[_label(False, None, None)]
    print("\nmedians (same seeds):")
    for label, m in summary.items():
        print(f"  {label}: HV {m['median_hypervolume']:.4f} in {m['median_cpu_s']:.0f} CPU-s, "
              f"{m['median_epochs_run']:.0f} epochs, "
              f"{m['median_hv_per_cpu_hour']:.2f}/CPU-h "
              f"(x{m['median_hv_per_cpu_hour'] / off['median_hv_per_cpu_hour']:.3f} of off)")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "early_stopping.json").write_text(json.dumps(
        {"problem": description, "reference": REFERENCE, "summary": summary, "runs": rows,
         "machine": f"{os.cpu_count()} CPUs"}, indent=2))
    print(f"saved {out / 'early_stopping.json'}")


def _label(early: bool, stopped_as: str | None, grace: int | None) -> str:
    return f"on, grace {grace}, stopped told as {stopped_as}" if early else "off"


if __name__ == "__main__":
    main()
