"""Training-loop speed: this trainable against a pytorch/examples-style DataLoader loop, and the
RVSM step against the same training without RVSM (lambda = 0, the plain step).

    PYTHONPATH=. .venv/bin/python bench/train_step.py [--data-root ../shared/data] [--steps 300]

Every measurement is `--steps` optimizer steps of lenet5, batch 128, Adam, on the same MNIST
training images; measurements are interleaved and repeated, and the medians reported. Targets on
CPU: >= 2x the DataLoader loop; RVSM overhead <= 10% (judged on the overhead paired by repeat:
each repeat's plain run against its RVSM runs, the median over repeats). Writes bench/out/train_step.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainables.config import TrainConfig  # noqa: E402
from trainables.data import IDX_FILES  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.train import train  # noqa: E402

BATCH = 128
OUT = Path(__file__).resolve().parent / "out" / "train_step.json"


def prepare_data(data_root: Path, tmp: Path) -> tuple[Path, str]:
    """A writable torchvision root holding MNIST: a copy of the real files, else synthetic ones."""
    raw = data_root / "MNIST" / "raw"
    target = tmp / "MNIST" / "raw"
    target.mkdir(parents=True)
    if all((raw / f"{name}.gz").is_file() for name in IDX_FILES):
        for name in IDX_FILES:
            shutil.copy(raw / f"{name}.gz", target)
        datasets.MNIST(str(tmp), download=True)  # md5-checked, extracted beside, no network
        return tmp, f"real MNIST from {raw.resolve()}"
    write_synthetic_idx(target)
    return tmp, f"SYNTHETIC IDX files (no MNIST under {raw}): random digits-shaped data"


def write_synthetic_idx(raw: Path) -> None:
    """60,000 + 10,000 random images as extracted IDX files (no md5 to match, so not gzipped)."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60000), ("t10k", 10000)):
        for kind, shape, magic in (("images-idx3", (n, 28, 28), 2051), ("labels-idx1", (n,), 2049)):
            high = 256 if kind.startswith("images") else 10
            header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in shape)
            (raw / f"{prefix}-{kind}-ubyte").write_bytes(header + rng.integers(0, high, shape, np.uint8).tobytes())


def trainable(root: Path, steps: int, lam: float, rule: str = "modified", **extra) -> float:
    """Samples/s of train()'s loop (it times its training steps, not the evaluation)."""
    config = TrainConfig(dataset="mnist", data_root=str(root), model="lenet5", batch_size=BATCH, epochs=1,
                         max_steps=steps, lam=lam, rule=rule, optimizer="adam", device="cpu", **extra)
    return train(config, lambda metrics, state: None)["samples_per_s"]


def dataloader_loop(root: Path, steps: int) -> float:
    """pytorch/examples/mnist: a Dataset with ToTensor and Normalize, a DataLoader, the same model."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    loader = DataLoader(datasets.MNIST(str(root), train=True, transform=transform), batch_size=BATCH, shuffle=True)
    model = build_model("lenet5")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    seen, start = 0, time.perf_counter()
    for batch_idx, (data, target) in enumerate(loader):
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(data), dim=1), target)
        loss.backward()
        optimizer.step()
        seen += len(target)
        if batch_idx + 1 == steps:
            break
    return seen / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", type=Path)
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root, source = prepare_data(args.data_root, Path(tmp))
        print(f"data: {source}; torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
        runs = {
            "trainable_rvsm_modified": lambda: trainable(root, args.steps, 1e-4, "modified"),
            "trainable_rvsm_classic": lambda: trainable(root, args.steps, 1e-4, "classic"),
            # per-tensor thresholds, ramping every step (the whole run is inside the 1-epoch ramp)
            "trainable_rvsm_per_tensor_ramp": lambda: trainable(
                root, args.steps, 1e-4, "modified", threshold_scale="std", ramp_epochs=1,
                threshold_multipliers={"fc*": 2.0}),
            "trainable_plain": lambda: trainable(root, args.steps, 0.0),
            "dataloader_loop": lambda: dataloader_loop(root, args.steps),
        }
        samples = {name: [] for name in runs}
        for repeat in range(args.repeats):
            for name, measure in runs.items():
                samples[name].append(measure())
                print(f"  repeat {repeat + 1} {name:26s} {samples[name][-1]:8.0f} samples/s", flush=True)

    median = {name: statistics.median(values) for name, values in samples.items()}
    ratios = {
        "trainable_rvsm_vs_dataloader": median["trainable_rvsm_modified"] / median["dataloader_loop"],
        "trainable_plain_vs_dataloader": median["trainable_plain"] / median["dataloader_loop"],
        "rvsm_modified_overhead": median["trainable_plain"] / median["trainable_rvsm_modified"] - 1,
        "rvsm_classic_overhead": median["trainable_plain"] / median["trainable_rvsm_classic"] - 1,
        "rvsm_per_tensor_ramp_overhead": median["trainable_plain"] / median["trainable_rvsm_per_tensor_ramp"] - 1,
    }
    # Paired: each repeat's plain run against the same repeat's RVSM runs, measured back to back,
    # so that the machine's slow drifts cancel; the median over repeats.
    paired = {f"rvsm_{kind}_overhead_paired": statistics.median(
        p / r - 1 for p, r in zip(samples["trainable_plain"], samples[f"trainable_rvsm_{kind}"]))
        for kind in ("modified", "classic", "per_tensor_ramp")}
    ratios.update(paired)
    targets = {"speedup_at_least_2x": ratios["trainable_rvsm_vs_dataloader"] >= 2,
               "rvsm_overhead_at_most_10pct": max(paired.values()) <= 0.10}
    print("\nmedian samples/s: " + ", ".join(f"{k} {v:.0f}" for k, v in median.items()))
    print(f"trainable (RVSM) / DataLoader loop: {ratios['trainable_rvsm_vs_dataloader']:.2f}x "
          f"(plain: {ratios['trainable_plain_vs_dataloader']:.2f}x); RVSM overhead: modified "
          f"{ratios['rvsm_modified_overhead']:+.1%}, classic {ratios['rvsm_classic_overhead']:+.1%}, "
          f"per-tensor + ramp {ratios['rvsm_per_tensor_ramp_overhead']:+.1%}")
    print("RVSM overhead, paired by repeat (median): " + ", ".join(
        f"{k.removeprefix('rvsm_').removesuffix('_overhead_paired')} {v:+.1%}" for k, v in paired.items()))
    print("targets: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "data": source, "model": "lenet5", "batch_size": BATCH, "steps": args.steps, "repeats": args.repeats,
        "samples_per_s": samples, "median_samples_per_s": median, "ratios": ratios, "targets": targets,
        "torch": torch.__version__, "torchvision": torchvision.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
    }, indent=1))
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
