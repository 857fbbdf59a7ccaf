"""Early stopping's grace, measured on a real study: its recorded epochs replayed through the
study's own rule (`study.scheduler.ParetoEarlyStopping`) with shorter graces.

    PYTHONPATH=. .venv/bin/python bench/grace_replay.py rvsm-studies/frontier_lenet5 [--grace 0 1 2 4]

Every epoch row of the study is fed to the rule in the order it was reported (`reported_at`); a
trial counts as finished for the rule when its row says so, at its `ended_at`. With grace g the
replay says which trials the rule would have stopped, at which epoch, and what that costs:
trials of the study's final front (finished trials, validation objectives) that would have been
stopped, the hypervolume of the finished trials that would remain against the study's, and the
share of training epochs saved; and, for each epoch k, how often a dominance seen at epoch k
between two trials that ran to the end still held at their last epoch. Only graces up to the one the study ran with can be replayed
exactly (a trial the study stopped has no epochs after its stop); larger ones are refused. The
sampler's later choices are held fixed: a study that stopped other trials would have sampled
differently after them, which a replay cannot show. Prints what it measured and saves
bench/out/grace_replay_<study>.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from analysis import schema  # noqa: E402
from analysis.hypervolume import hypervolume  # noqa: E402
from analysis.load import load_epochs, load_results  # noqa: E402
from analysis.objectives import default_reference, objective_values, parse_objectives  # noqa: E402
from analysis.pareto import pareto_front_mask  # noqa: E402


def replay(epochs, trials, objectives, *, grace: int, min_dominating: int) -> dict[str, int]:
    """Trial id -> epoch at which the rule, with this grace, stops it (trials it lets run are absent)."""
    from study.scheduler import ParetoEarlyStopping
    rule = ParetoEarlyStopping(objectives, min_dominating=min_dominating, grace_epochs=grace)
    events = [(row.reported_at, 0, row.trial_id, int(row.metric_epoch),
               {o.metric: getattr(row, schema.METRIC_PREFIX + o.metric) for o in objectives})
              for row in epochs.itertuples()]
    events += [(row.ended_at, 1, row.trial_id, None, None)
               for row in trials.itertuples() if row.state == schema.FINISHED]
    stopped: dict[str, int] = {}
    for _, kind, trial_id, epoch, values in sorted(events, key=lambda e: (e[0], e[1])):
        if trial_id in stopped:
            continue
        if kind == 1:
            rule.finish(trial_id)
        elif rule.should_stop(trial_id, epoch, values):
            stopped[trial_id] = epoch
    return stopped


def dominance_agreement(epochs, finished_ids, objectives) -> list[dict]:
    """For each epoch k: of the pairs of finished trials where one dominated the other at epoch k,
    the share where it still dominates at the last epoch, and the share reversed. How telling an
    epoch is about the end, over the trials that ran to it (stopped trials have no end)."""
    from study.scheduler import dominates
    signs = [1.0 if o.direction == "max" else -1.0 for o in objectives]
    columns = [schema.METRIC_PREFIX + o.metric for o in objectives]
    curves = {t: g.set_index("metric_epoch")[columns] for t, g in epochs.groupby("trial_id")
              if t in finished_ids}
    last = {t: tuple(c.iloc[-1]) for t, c in curves.items()}
    rows = []
    for k in sorted({e for c in curves.values() for e in c.index}):
        at = {t: tuple(c.loc[k]) for t, c in curves.items() if k in c.index and c.loc[k].notna().all()}
        pairs = [(a, b) for a in at for b in at if a != b and dominates(at[a], at[b], signs)]
        held = sum(dominates(last[a], last[b], signs) for a, b in pairs)
        reversed_ = sum(dominates(last[b], last[a], signs) for a, b in pairs)
        rows.append({"epoch": int(k), "pairs": len(pairs), "held": held, "reversed": reversed_})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a local study folder")
    parser.add_argument("--grace", nargs="+", type=int, default=None,
                        help="graces to replay (default: 0, 1, 2, ... up to the study's)")
    args = parser.parse_args()

    from study.scheduler import default_grace
    from study.spec import parse_spec
    spec = parse_spec((Path(args.study) / "study.toml").read_bytes(), args.study)
    if not spec.search.early_stopping:
        sys.exit(f"{args.study}: early stopping was off; a replay needs the grace it ran with")
    ran_with = spec.search.early_stopping_grace_epochs
    ran_with = default_grace(spec) if ran_with is None else ran_with
    graces = args.grace if args.grace is not None else list(range(0, ran_with + 1))
    if max(graces) > ran_with:
        sys.exit(f"graces above {ran_with} (the study's) cannot be replayed: stopped trials "
                 "have no epochs after their stop")
    objectives = spec.search.objectives
    trials = load_results([args.study]).trials
    epochs = load_epochs(args.study).to_pandas().sort_values(["trial_id", "metric_epoch"])
    done = trials[trials["state"] == schema.FINISHED].reset_index(drop=True)
    columns = parse_objectives([f"{o.metric}:{o.direction}" for o in objectives])
    values = objective_values(done, columns)
    directions = [o.direction for o in columns]
    reference = default_reference(done, columns)
    front = set(done["trial_id"][pareto_front_mask(values, directions)])
    full_hv = hypervolume(values, reference, directions)
    epochs_run = len(epochs)
    counts = trials["state"].value_counts().to_dict()
    print(f"{args.study}: {len(trials)} trials {counts}, {epochs_run} epochs trained, ran with "
          f"grace {ran_with}, stop when >= {spec.search.early_stopping_min_dominating} finished "
          f"trials dominate at the same epoch; front: {len(front)} trials, hypervolume "
          f"{full_hv:.5f} (reference {tuple(round(r, 4) for r in reference)})")
    rows = []
    for grace in graces:
        stopped = replay(epochs, trials, objectives, grace=grace,
                         min_dominating=spec.search.early_stopping_min_dominating)
        kept = ~done["trial_id"].isin(stopped).to_numpy()
        hv = hypervolume(values[kept], reference, directions) if kept.any() else 0.0
        saved = sum(int((epochs["trial_id"] == t).sum()) - e for t, e in stopped.items())
        row = {"grace": grace, "stopped": len(stopped),
               "finished_trials_stopped": int((~kept).sum()),
               "front_trials_stopped": sorted(front & set(stopped)),
               "hypervolume": hv, "hypervolume_ratio": hv / full_hv if full_hv else float("nan"),
               "epochs_saved": saved, "epochs_saved_share": saved / epochs_run}
        rows.append(row)
        print(f"  grace {grace:2d}: stops {len(stopped):3d} trials ({row['finished_trials_stopped']} "
              f"that finished), {len(row['front_trials_stopped'])} of the {len(front)} front trials; "
              f"hypervolume {hv:.5f} ({hv - full_hv:+.5f}); "
              f"epochs saved {saved} ({row['epochs_saved_share']:.1%})")
    agreement = dominance_agreement(epochs, set(done["trial_id"]), objectives)
    print("  how telling each epoch is (finished trials): of the pairs where one trial dominated "
          "another at epoch k, the share still dominating / reversed at the last epoch")
    for a in agreement:
        if a["pairs"]:
            print(f"    epoch {a['epoch']:2d}: {a['pairs']:4d} pairs, held {a['held'] / a['pairs']:6.1%}, "
                  f"reversed {a['reversed'] / a['pairs']:6.1%}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"grace_replay_{Path(args.study.rstrip('/')).name}.json"
    path.write_text(json.dumps({"study": args.study, "ran_with_grace": ran_with,
                                "trials": len(trials), "epochs_trained": epochs_run,
                                "front": sorted(front), "hypervolume": full_hv,
                                "replays": rows, "dominance_agreement": agreement},
                               indent=2, default=str))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
