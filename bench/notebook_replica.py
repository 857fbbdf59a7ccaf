"""The original notebook's run, reproduced: `--preset notebook` on real MNIST, evaluated as the
notebook did (the first 256 test images) and on the whole test set. With `--study`, the trials of
a finished study (`rvsm run studies/notebook.toml`) are evaluated the same way from their last
checkpoints instead of training here.

The notebook reports 96.48% with w and with u on the first 256 test images, 7.03% with the
complement (only the weights u zeroed), and 7.97% of fc1 zero.

Usage: python bench/notebook_replica.py [--data-root ../shared/data] [--seeds 0 1 2]
       python bench/notebook_replica.py --study rvsm-studies/notebook [--data-root ../shared/data]
Saves bench/out/notebook_replica.json (notebook_replica_<study>.json with --study).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

import torch

from analysis.load import finished, load_results
from analysis.schema import PARAM_PREFIX
from study.spec import TRAIN_FIELDS
from trainables import PRESETS, TrainConfig, train
from trainables.data import load_splits
from trainables.models import build_model
from trainables.rvsm import complement, hard_threshold
from trainables.train import accuracy
from trainables.tune_trainable import STATE_FILE

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = {"acc_w_256": 0.96484375, "acc_u_256": 0.96484375, "acc_complement_256": 0.0703125,
            "fc1_sparsity": 255833 / 3211264}


def replicate(data_root: str, seed: int) -> dict:
    config = TrainConfig.from_dict({**PRESETS["notebook"], "dataset": "mnist", "data_root": data_root,
                                    "download": True, "device": "cpu", "seed": seed})
    final: dict = {}
    metrics = train(config, lambda m, state: final.update(state))
    return {"run": f"seed {seed}", **evaluate(config, final, metrics)}


def from_study(study: Path, data_root: str) -> list[dict]:
    """Each finished trial of a study, from its last checkpoint (the final state)."""
    trials = finished(load_results([str(study)]).trials)
    rows = []
    for trial in trials.itertuples():
        fields = {c.removeprefix(PARAM_PREFIX): getattr(trial, c) for c in trials.columns
                  if c.startswith(PARAM_PREFIX) and c.removeprefix(PARAM_PREFIX) in TRAIN_FIELDS}
        config = TrainConfig.from_dict({**fields, "data_root": data_root, "download": True, "device": "cpu"})
        checkpoints = sorted(study.glob(f"runs/*/trial_{trial.trial_id}/checkpoint_*/{STATE_FILE}"))
        if not checkpoints:
            raise SystemExit(f"trial {trial.trial_id}: no checkpoint under {study}/runs")
        saved = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
        rows.append({"run": f"trial {trial.trial_id} (seed {config.seed})",
                     **evaluate(config, saved["state"], saved["metrics"])})
    return rows


def evaluate(config: TrainConfig, final: dict, metrics: dict) -> dict:
    splits = load_splits(config, torch.device("cpu"))
    model = build_model(config.model, in_shape=splits.in_shape, num_classes=splits.num_classes,
                        dropout=config.dropout, init=config.init)
    model.load_state_dict(final["model"])
    w = final["model"]["fc1.weight"]
    t = final["threshold"]
    first = (splits.test[0][:256], splits.test[1][:256])
    variants = {"w": {}, "u": {"fc1.weight": hard_threshold(w, t)},
                "complement": {"fc1.weight": complement(w, t)}}
    row = {"steps": metrics["step"], "fc1_sparsity": metrics["sparsity"]}
    for name, overrides in variants.items():
        row[f"acc_{name}_256"] = accuracy(model, first, overrides, batch_size=256)
        row[f"acc_{name}_full"] = accuracy(model, splits.test, overrides, batch_size=1000)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--study", type=Path, help="evaluate this study's trials instead of training")
    args = parser.parse_args()
    torch.set_num_threads(2)
    runs = (from_study(args.study, args.data_root) if args.study
            else (replicate(args.data_root, seed) for seed in args.seeds))
    rows = []
    for r in runs:
        rows.append(r)
        print(f"{r['run']}: {r['steps']} steps; fc1 zero {100 * r['fc1_sparsity']:.2f}%; first 256 "
              f"test images: w {100 * r['acc_w_256']:.2f}%, u {100 * r['acc_u_256']:.2f}%, "
              f"complement {100 * r['acc_complement_256']:.2f}%; full test set: w "
              f"{100 * r['acc_w_full']:.2f}%, u {100 * r['acc_u_full']:.2f}%, complement "
              f"{100 * r['acc_complement_full']:.2f}%", flush=True)
    keys = [k for k in rows[0] if k not in ("run", "steps")]
    medians = {k: median(r[k] for r in rows) for k in keys}
    print("median over runs (notebook's value in brackets):")
    for k in keys:
        note = f" [{100 * NOTEBOOK[k]:.2f}%]" if k in NOTEBOOK else ""
        print(f"  {k}: {100 * medians[k]:.2f}%{note}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    name = f"notebook_replica_{args.study.name}.json" if args.study else "notebook_replica.json"
    (out / name).write_text(json.dumps(
        {"notebook": NOTEBOOK, "runs": rows, "median": medians}, indent=2))
    print(f"saved {out / name}")


if __name__ == "__main__":
    main()
