"""The original notebook's run, reproduced: `--preset notebook` on real MNIST, evaluated as the
notebook did (the first 256 test images) and on the whole test set.

The notebook reports 96.48% with w and with u on the first 256 test images, 7.03% with the
complement (only the weights u zeroed), and 7.97% of fc1 zero.

Usage: python bench/notebook_replica.py [--data-root ../shared/data] [--seeds 0 1 2]
Saves bench/out/notebook_replica.json.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from statistics import median

import torch

from trainables import PRESETS, TrainConfig, train
from trainables.data import load_splits
from trainables.models import build_model
from trainables.rvsm import complement, hard_threshold
from trainables.train import accuracy

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = {"acc_w_256": 0.96484375, "acc_u_256": 0.96484375, "acc_complement_256": 0.0703125,
            "fc1_sparsity": 255833 / 3211264}


def replicate(data_root: str, seed: int) -> dict:
    config = TrainConfig.from_dict({**PRESETS["notebook"], "dataset": "mnist", "data_root": data_root,
                                    "download": True, "device": "cpu", "seed": seed})
    final: dict = {}
    metrics = train(config, lambda m, state: final.update(state))
    splits = load_splits(config, torch.device("cpu"))
    model = build_model(config.model, in_shape=splits.in_shape, num_classes=splits.num_classes,
                        dropout=config.dropout, init=config.init)
    model.load_state_dict(final["model"])
    w = final["model"]["fc1.weight"]
    t = final["threshold"]
    first = (splits.test[0][:256], splits.test[1][:256])
    variants = {"w": {}, "u": {"fc1.weight": hard_threshold(w, t)},
                "complement": {"fc1.weight": complement(w, t)}}
    row = {"seed": seed, "steps": metrics["step"], "fc1_sparsity": metrics["sparsity"]}
    for name, overrides in variants.items():
        row[f"acc_{name}_256"] = accuracy(model, first, overrides, batch_size=256)
        row[f"acc_{name}_full"] = accuracy(model, splits.test, overrides, batch_size=1000)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for seed in args.seeds:
        rows.append(replicate(args.data_root, seed))
        r = rows[-1]
        print(f"seed {seed}: {r['steps']} steps; fc1 zero {100 * r['fc1_sparsity']:.2f}%; first 256 "
              f"test images: w {100 * r['acc_w_256']:.2f}%, u {100 * r['acc_u_256']:.2f}%, "
              f"complement {100 * r['acc_complement_256']:.2f}%; full test set: w "
              f"{100 * r['acc_w_full']:.2f}%, u {100 * r['acc_u_full']:.2f}%, complement "
              f"{100 * r['acc_complement_full']:.2f}%", flush=True)
    keys = [k for k in rows[0] if k not in ("seed", "steps")]
    medians = {k: median(r[k] for r in rows) for k in keys}
    print("median over seeds (notebook's value in brackets):")
    for k in keys:
        note = f" [{100 * NOTEBOOK[k]:.2f}%]" if k in NOTEBOOK else ""
        print(f"  {k}: {100 * medians[k]:.2f}%{note}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "notebook_replica.json").write_text(json.dumps(
        {"notebook": NOTEBOOK, "runs": rows, "median": medians}, indent=2))
    print(f"saved {out / 'notebook_replica.json'}")


if __name__ == "__main__":
    main()
