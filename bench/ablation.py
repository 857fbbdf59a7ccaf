"""Which of issue 11's options carried the gain: one study trial retrained with one option
changed at a time, on the same data, seed and number of epochs.

    PYTHONPATH=. .venv/bin/python bench/ablation.py rvsm-studies/frontier_lenet5 --trial ID \
        [--data-root ../shared/data] [--workers 2] [--only base global ...]

Variants of the trial's configuration (its training fields, as stored in the results):
- `base`: the trial as it was (retrained, so every row comes from this run);
- thresholds (all keep the trial's fc1-sized tensor threshold, the largest tensor's absolute t_l,
  so the total sparsity stays comparable and only its share among layers changes):
  `std_no_multipliers` (std scale, every m_l = 1), `global` (one threshold for every tensor, the
  behaviour before issue 11). No `fan_in` variant: under PyTorch's default initialisation
  (Kaiming-uniform, bound 1/sqrt(fan-in)) a tensor's std is 1/sqrt(3 fan-in) up to sampling
  noise, so `fan_in` thresholds are `std` ones with t scaled by sqrt(3);
- schedule: `no_ramp` (the full thresholds from the first step), `no_finetune` (the fine-tuning
  epochs spent on RVSM instead: same number of epochs), `neither` (`global`, no ramp, no
  fine-tuning: the old method with the same budget);
- fine-tuning: `finetune_half` (the same epochs, half of them fine-tuning), `finetune_lr_x3`
  (three times the fine-tuning learning rate);
- rule: `modified` (loss at u) at the same thresholds and at `--modified-factor` times them.

This is a one-factor-at-a-time ablation at one chosen point, not a search per variant: a variant
that would do better at another threshold is not given it. Prints each variant's validation and
test accuracy, sparsity, compression and the kept fraction of each layer beside Dynamic Network
Surgery's (LeNet-5); saves bench/out/ablation_<study>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Guo et al. 2016, Dynamic Network Surgery, Table 2 (LeNet-5, 108x): fraction of each layer kept.
DNS_LENET5_KEPT = {"conv1.weight": 0.14, "conv2.weight": 0.03, "fc1.weight": 0.007, "fc2.weight": 0.04}


def variants(config: dict, thresholds: dict[str, float], modified_factor: float) -> dict[str, dict]:
    """Variant name -> the training fields to change in `config`."""
    from trainables.config import TrainConfig
    from trainables.thresholds import multiplier
    params = dict(_meta_model(config).named_parameters())
    largest = max(thresholds, key=lambda name: params[name].numel())
    t_abs = thresholds[largest]
    t_std = config["threshold"] * multiplier(largest, TrainConfig.from_dict(config).multipliers)
    epochs = config["epochs"] + config["finetune_epochs"]
    old = {"threshold_scale": "global", "threshold": t_abs, "threshold_multipliers": ()}
    return {
        "base": {},
        "std_no_multipliers": {"threshold": t_std, "threshold_multipliers": ()},
        "global": old,
        "no_ramp": {"ramp_epochs": 0},
        "no_finetune": {"finetune_epochs": 0, "epochs": epochs},
        "neither": {**old, "ramp_epochs": 0, "finetune_epochs": 0, "epochs": epochs},
        "finetune_half": {"epochs": epochs // 2, "finetune_epochs": epochs - epochs // 2,
                          "ramp_epochs": min(config["ramp_epochs"], epochs // 2)},
        "finetune_lr_x3": {"finetune_lr_factor": min(1.0, 3 * config["finetune_lr_factor"])},
        "modified": {"rule": "modified"},
        f"modified_x{modified_factor:g}": {"rule": "modified",
                                           "threshold": config["threshold"] * modified_factor},
    }


def apply(config: dict, change: dict) -> dict:
    """`config` with `change`: a new threshold drops the derived lam, new multipliers drop the
    searched ones (stored as flat `threshold_multipliers.<name>` fields)."""
    fields = dict(config)
    if "threshold" in change:
        fields.pop("lam", None)
    if "threshold_multipliers" in change:
        fields = {k: v for k, v in fields.items() if not k.startswith("threshold_multipliers.")}
    return {**fields, **change}


def _meta_model(config: dict):
    """The trial's network on the meta device (shapes only): MNIST-like 1x28x28 or CIFAR 3x32x32."""
    import torch
    from trainables.models import build_model
    in_shape = (3, 32, 32) if config["dataset"].startswith(("cifar", "svhn")) else (1, 28, 28)
    with torch.device("meta"):
        return build_model(config["model"], in_shape=in_shape, num_classes=10,
                           dropout=config["dropout"], init=config["init"])


def run_variant(job: tuple[str, dict]) -> dict:
    import torch
    from trainables.config import TrainConfig
    from trainables.train import train
    torch.set_num_threads(1)
    name, fields = job
    config = TrainConfig.from_dict(fields)
    start = time.perf_counter()
    last = train(config, lambda metrics, state: None)
    return {"variant": name, "wall_s": time.perf_counter() - start, "config": fields,
            **{k: last.get(k) for k in ("val_acc", "test_acc", "sparsity", "compression",
                                        "nonzeros", "params", "epoch", "diverged")},
            "layer_sparsity": json.loads(last["layer_sparsity_json"]),
            "layer_threshold": json.loads(last["layer_threshold_json"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", help="a local study folder")
    parser.add_argument("--trial", required=True, help="trial id (as in `rvsm status`)")
    parser.add_argument("--data-root", default=None, help="replaces the trial's data_root")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--modified-factor", type=float, default=2.5)
    parser.add_argument("--only", nargs="+", default=None, help="variants to run (default: all)")
    args = parser.parse_args()

    from analysis.load import load_epochs, load_results
    from trainables.config import TrainConfig
    trials = load_results([args.study]).trials
    row = trials[trials["trial_id"] == args.trial]
    if row.empty:
        sys.exit(f"{args.study}: no trial {args.trial!r}")
    config = json.loads(row["config_json"].iloc[0])
    if args.data_root:
        config["data_root"] = args.data_root
    epochs = load_epochs(args.study).to_pandas()
    last = epochs[epochs["trial_id"] == args.trial].sort_values("metric_epoch").iloc[-1]
    thresholds = json.loads(last["metric_layer_threshold_json"])
    chosen = variants(config, thresholds, args.modified_factor)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only}
    print(f"{args.study} trial {args.trial}: {config['model']} on {config['dataset']}, rule "
          f"{config['rule']}, threshold_scale {config['threshold_scale']}, threshold "
          f"{config['threshold']:.4g}, multipliers {TrainConfig.from_dict(config).multipliers}, lr "
          f"{config['lr']:.4g}, ramp {config['ramp_epochs']} ({config['ramp']}), fine-tuning "
          f"{config['finetune_epochs']}, {config['epochs']} RVSM epochs; as recorded: val "
          f"{row['metric_val_acc'].iloc[0]:.2%}, test {row['metric_test_acc'].iloc[0]:.2%}, "
          f"sparsity {row['metric_sparsity'].iloc[0]:.2%}", flush=True)
    jobs = [(name, apply(config, change)) for name, change in chosen.items()]
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        futures = [pool.submit(run_variant, job) for job in jobs]
        for done in as_completed(futures):
            r = done.result()
            print(f"  done: {r['variant']} in {r['wall_s']:.0f} s: val {r['val_acc']:.2%}, "
                  f"sparsity {r['sparsity']:.2%}", flush=True)
    results = [f.result() for f in futures]
    layers = list(results[0]["layer_sparsity"])
    head = f"{'variant':22s} {'val':>7s} {'test':>7s} {'sparsity':>9s} {'compr.':>8s}  " + \
        "  ".join(f"{name.removesuffix('.weight') + ' kept':>11s}" for name in layers)
    print(head)
    for r in results:
        kept = "  ".join(f"{1 - r['layer_sparsity'][name]:11.2%}" for name in layers)
        print(f"{r['variant']:22s} {r['val_acc']:7.2%} {r['test_acc'] or math.nan:7.2%} "
              f"{r['sparsity']:9.2%} {r['compression']:7.1f}x  {kept}")
    if set(layers) == set(DNS_LENET5_KEPT):
        kept = "  ".join(f"{DNS_LENET5_KEPT[name]:11.2%}" for name in layers)
        print(f"{'DNS (Guo et al. 2016)':22s} {'':7s} {'99.09%':>7s} {'':9s} {'108.0':>7s}x  {kept}")
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"ablation_{Path(args.study.rstrip('/')).name}.json"
    path.write_text(json.dumps({"study": args.study, "trial": args.trial, "results": results},
                               indent=2, default=str))
    print(f"saved {path}")


if __name__ == "__main__":
    main()
