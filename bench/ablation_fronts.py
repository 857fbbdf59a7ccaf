"""Issue 11's ablation with the same budget per variant: compare the fronts of several studies.

    PYTHONPATH=. .venv/bin/python bench/ablation_fronts.py rvsm-studies/ablation_lenet5_* \
        [--reference-acc 0.975] [--reference-compression 10] [--at 108]

Each study is one variant (studies/ablation_lenet5_*.toml: 6 trials of 16 epochs each, no early
stopping). For each it prints:
- the hypervolume of its validation front in (validation accuracy, log10 compression), against
  the reference point (--reference-acc, --reference-compression): the area between the front and
  the reference, in accuracy x decades. Sparsity hides the region that matters (100x and 200x
  differ by 0.005 in sparsity), so compression is taken on a log scale;
- the same area with test accuracy (reported, not used to choose);
- among the front's points with compression >= --at, the best test accuracy;
- the kept fraction of each layer at the front point nearest --at (in log compression), beside
  Dynamic Network Surgery's at 108x.
Both look only at front points above the reference accuracy (a collapsed network is on the
front by its compression alone).
Then every finished trial. Saves bench/out/ablation_fronts.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from analysis.hypervolume import hypervolume  # noqa: E402
from analysis.load import finished, load_results  # noqa: E402
from analysis.pareto import MAXIMIZE, pareto_front_mask  # noqa: E402
from bench.ablation import DNS_LENET5_KEPT  # noqa: E402
from trainables.config import TrainConfig  # noqa: E402

MAX2 = (MAXIMIZE, MAXIMIZE)


def log_hypervolume(acc: np.ndarray, compression: np.ndarray, ref_acc: float, ref_compression: float) -> float:
    """Area dominated in (accuracy, log10 compression) above (ref_acc, log10 ref_compression)."""
    values = np.column_stack([acc, np.log10(compression)])
    return hypervolume(values, (ref_acc, math.log10(ref_compression)), MAX2)


def summarise(study: str, args: argparse.Namespace) -> dict:
    trials = finished(load_results([study]).trials).sort_values("metric_compression")
    val = trials["metric_val_acc"].to_numpy(float)
    test = trials["metric_test_acc"].to_numpy(float)
    compression = trials["metric_compression"].to_numpy(float)
    on_front = pareto_front_mask(np.column_stack([val, compression]), MAX2)
    # A collapsed network (every weight cut) is on the front by its compression alone: only
    # front points above the reference accuracy count, as in the hypervolume.
    front = trials[on_front & (val > args.reference_acc)]
    at_or_above = front[front["metric_compression"] >= args.at]
    nearest = front.iloc[int(np.argmin(np.abs(np.log(front["metric_compression"].to_numpy(float) / args.at))))] \
        if len(front) else None
    return {
        "study": Path(study.rstrip("/")).name,
        "finished": len(trials),
        "hv_val": log_hypervolume(val[on_front], compression[on_front], args.reference_acc,
                                  args.reference_compression),
        "hv_test": log_hypervolume(test[on_front], compression[on_front], args.reference_acc,
                                   args.reference_compression),
        "best_test_at": float(at_or_above["metric_test_acc"].max()) if len(at_or_above) else None,
        "nearest": None if nearest is None else {
            "trial_id": nearest["trial_id"], "compression": float(nearest["metric_compression"]),
            "test_acc": float(nearest["metric_test_acc"]),
            "kept": {k: 1 - v for k, v in json.loads(nearest["metric_layer_sparsity_json"]).items()}},
        "trials": [{"trial_id": r.trial_id, "threshold": float(r.param_threshold), "seed": int(r.param_seed),
                    "multipliers": TrainConfig.from_dict(json.loads(r.config_json)).multipliers, "on_front": bool(f),
                    "val_acc": float(r.metric_val_acc), "test_acc": float(r.metric_test_acc),
                    "compression": float(r.metric_compression),
                    "kept": {k: 1 - v for k, v in json.loads(r.metric_layer_sparsity_json).items()}}
                   for r, f in zip(trials.itertuples(), on_front)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", help="local study folders, one per variant")
    parser.add_argument("--reference-acc", type=float, default=0.975)
    parser.add_argument("--reference-compression", type=float, default=10.0)
    parser.add_argument("--at", type=float, default=108.0, help="compression of interest (DNS: 108x)")
    args = parser.parse_args()
    rows = [summarise(study, args) for study in args.studies]
    layers = list(DNS_LENET5_KEPT)
    print(f"hypervolume: area above ({args.reference_acc:.1%}, {args.reference_compression:g}x) in "
          f"accuracy x log10 compression, of each study's validation front")
    head = f"{'variant':28s} {'trials':>6s} {'HV val':>7s} {'HV test':>7s} {'test@>=' + format(args.at, 'g') + 'x':>11s}" \
        f" {'nearest':>8s} {'test':>7s}  " + "  ".join(f"{n.removesuffix('.weight'):>6s}" for n in layers)
    print(head)
    for r in rows:
        best = f"{r['best_test_at']:.2%}" if r["best_test_at"] is not None else "-"
        n = r["nearest"]
        kept = "  ".join(f"{n['kept'].get(name, math.nan):6.1%}" for name in layers) if n else ""
        near = f"{n['compression']:7.1f}x {n['test_acc']:7.2%}" if n else ""
        print(f"{r['study']:28s} {r['finished']:6d} {r['hv_val']:7.4f} {r['hv_test']:7.4f} {best:>11s} {near}  {kept}")
    dns = "  ".join(f"{DNS_LENET5_KEPT[name]:6.1%}" for name in layers)
    print(f"{'DNS (Guo et al. 2016)':28s} {'':6s} {'':7s} {'':7s} {'':11s} {108.0:7.1f}x {0.9909:7.2%}  {dns}")
    print("\nevery finished trial (* on the validation front):")
    for r in rows:
        print(r["study"])
        for t in r["trials"]:
            mult = " m " + " ".join(f"{k} {v:.3g}" for k, v in t["multipliers"].items()) if t["multipliers"] else ""
            kept = " ".join(f"{k.removesuffix('.weight')} {v:.1%}" for k, v in t["kept"].items() if k.endswith("weight"))
            print(f"  {'*' if t['on_front'] else ' '} {t['trial_id']} t {t['threshold']:.4g}{mult} seed {t['seed']}: val "
                  f"{t['val_acc']:.2%} test {t['test_acc']:.2%} at {t['compression']:.1f}x ({kept})")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / "ablation_fronts.json"
    path.write_text(json.dumps({"args": vars(args), "variants": rows}, indent=2, default=str))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
