"""How results storage and its readers scale with the number of trials.

Writes synthetic studies of N trials x E epochs with the project's ResultsWriter (through its
batch path into part files, then a full compaction, as a finished run leaves them), then times,
each in its own process (wall time and CPU time including interpreter start, and peak
resident memory; CPU time is the steadier figure on a shared machine):
`rvsm status`, `rvsm pareto`, `rvsm report`, `rvsm export`, a pyarrow read of all trials and of
all epochs (`pyarrow.dataset`, the documented line), and `analysis.load.load_epochs` (the exact
reader). Also prints the results' file count and bytes on disk.

    python bench/results_scale.py                          # 200, 2,000 and 20,000 trials x 20 epochs
    python bench/results_scale.py --sizes 200,2000 --live  # the live-file layout (one file per
                                                           # trial and epoch, as schema version 1)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

STUDY_TOML = """
[study]
name = "{name}"
storage = "{storage}"
trials = {trials}
max_concurrent = 2
seed = 0

[search]
sampler = "tpe"
objectives = ["val_acc", "sparsity"]

[search.params.lam]
low = 1e-7
high = 1e-3
log = true

[search.params.beta]
low = 0.1
high = 10.0
log = true

[search.params.lr]
low = 1e-4
high = 1e-2
log = true

[train]
dataset = "mnist"
model = "lenet5"
epochs = {epochs}
"""
BATCH = 500  # trials per write_ended call (what a periodic compaction would gather, and more)


def measure(argv: list[str]) -> None:
    """Run argv as a child; print its wall time, peak RSS and exit status as JSON."""
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the one child; ru_maxrss in kB
    print(json.dumps({"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
                      "peak_mb": usage.ru_maxrss / 1024, "rc": done.returncode,
                      "stderr": done.stderr[-500:]}))


def timed(argv: list[str], env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", "--", *argv], env=env,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def trial_events(rng: np.random.Generator, number: int, epochs: int) -> tuple[str, dict, list[dict]]:
    """A plausible RVSM trial: its end state, config and per-epoch metrics."""
    lam, beta, lr = 10 ** rng.uniform(-7, -3), 10 ** rng.uniform(-1, 1), 10 ** rng.uniform(-4, -2)
    threshold = float(np.sqrt(2 * lam / beta))
    final_sparsity = float(np.clip(1 - np.exp(-(threshold / 2e-3) ** 0.8), 0, 0.9995))
    fate = rng.random()
    state, last = ("diverged", int(rng.integers(1, epochs + 1))) if fate < 0.03 else \
        ("stopped", int(rng.integers(2, epochs))) if fate < 0.25 else ("finished", epochs)
    params, rows = 61706, []
    for epoch in range(1, last + 1):
        progress = epoch / epochs
        sparsity = final_sparsity * min(1.0, 2 * progress)
        acc = float(np.clip(0.99 - 0.3 * max(0.0, sparsity - 0.95) - 0.2 * (1 - progress) ** 3
                            - rng.gamma(2, 0.002), 0.1, 1))
        diverged = state == "diverged" and epoch == last
        nonzeros = max(1, round(params * (1 - sparsity)))
        rows.append({
            "epoch": epoch, "step": epoch * 469, "train_loss": float("nan") if diverged else 1 - acc,
            "val_acc": float("nan") if diverged else acc, "val_acc_dense": None if diverged else acc + 0.001,
            "val_acc_complement": None if diverged else 0.1, "sparsity": sparsity,
            "sparsity_all": sparsity * 0.98, "nonzeros": nonzeros, "params": params,
            "compression": params / nonzeros, "threshold": threshold, "epoch_time_s": 28.0,
            "samples_per_s": 2000.0, "diverged": diverged,
            "layer_sparsity_json": json.dumps({"conv1.weight": sparsity, "fc1.weight": sparsity}),
        })
    if state == "finished":
        rows[-1] = {**rows[-1], "test_acc": rows[-1]["val_acc"] - 0.001,
                    "test_acc_dense": rows[-1]["val_acc"]}
    return state, {"lam": lam, "beta": beta, "lr": lr}, rows


def write_study(folder: Path, trials: int, epochs: int, *, live: bool) -> float:
    """Write the study folder; returns the seconds spent writing results."""
    from study.bookkeeping import plan_run
    from study.results import ResultsWriter, param_types
    from study.spec import parse_spec
    from study.storage import STUDY_FILE, locate
    from trainables.config import TrainConfig

    text = STUDY_TOML.format(name=folder.name, storage=folder.parent.as_posix(), trials=trials,
                             epochs=epochs)
    spec = parse_spec(text)
    location = locate(str(folder))
    location.write_text(text, STUDY_FILE)
    plan_run(location, trials)
    base = TrainConfig.from_dict(spec.train).to_dict()
    writer = ResultsWriter(location, spec.study.name, param_types(base),
                           [p.name for p in spec.search.params],
                           compact_every=10 ** 9 if live else 50)
    rng = np.random.default_rng(0)
    start_of_study = datetime.now(timezone.utc)  # after the run was planned: status counts from it
    started = time.perf_counter()
    trial_rows, epoch_rows = [], []
    for number in range(trials):
        state, params, metrics = trial_events(rng, number, epochs)
        trial_id = f"{number:05d}_{rng.integers(16 ** 5):05x}"
        begin = start_of_study + timedelta(seconds=30 * number)
        for m in metrics:
            row = writer.epoch_row(trial_id=trial_id, trial_number=number, metrics=m)
            epoch_rows.append(row)
            if live:
                writer.write_epoch(row)
        trial = writer.trial_row(trial_id=trial_id, trial_number=number, state=state,
                                 config={**base, **params}, metrics=metrics[-1], started_at=begin,
                                 ended_at=begin + timedelta(seconds=28 * len(metrics)),
                                 node="bench", device="cpu")
        if live:
            writer.write_trial(trial)
            continue
        trial_rows.append(trial)
        if len(trial_rows) == BATCH:
            writer.write_ended(trial_rows, epoch_rows)
            trial_rows, epoch_rows = [], []
    if trial_rows:
        writer.write_ended(trial_rows, epoch_rows)
    if not live:
        writer.compact(full=True)
    return time.perf_counter() - started


def disk(folder: Path) -> tuple[int, int]:
    files = [p for p in (folder / "results").rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def bench_one(root: Path, trials: int, epochs: int, *, live: bool) -> dict:
    folder = root / f"scale{trials}{'-live' if live else ''}"
    shutil.rmtree(folder, ignore_errors=True)
    print(f"writing {trials:,} trials x {epochs} epochs ({'live files' if live else 'parts'}) ...",
          flush=True)
    write_s = write_study(folder, trials, epochs, live=live)
    files, size = disk(folder)
    print(f"  written in {write_s:.1f} s: {files:,} files, {size / 1e6:.1f} MB", flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    py = sys.executable
    trials_dir, epochs_dir = folder / "results" / "trials", folder / "results" / "epochs"
    commands = {
        "rvsm status": [py, "-m", "study.cli", "status", str(folder)],
        "rvsm pareto": [py, "-m", "study.cli", "pareto", str(folder), "-o", str(folder / "front.png")],
        "rvsm report": [py, "-m", "study.cli", "report", str(folder), "-o", str(folder / "report")],
        "rvsm export": [py, "-m", "study.cli", "export", str(folder), "-o", str(folder / "trials.csv")],
        "pyarrow: all trials": [py, "-c", "import pyarrow.dataset as ds; t = ds.dataset("
                                f"{str(trials_dir)!r}, format='parquet').to_table(); print(t.num_rows)"],
        "pyarrow: all epochs": [py, "-c", "import pyarrow.dataset as ds; t = ds.dataset("
                                f"{str(epochs_dir)!r}, format='parquet').to_table(); print(t.num_rows)"],
        "load_epochs (exact)": [py, "-c", "from analysis.load import load_epochs; "
                                f"print(load_epochs({str(folder)!r}).num_rows)"],
    }
    result = {"trials": trials, "epochs": epochs, "layout": "live" if live else "parts",
              "write_s": write_s, "files": files, "bytes": size, "commands": {}}
    for name, argv in commands.items():
        m = timed(argv, env)
        result["commands"][name] = m
        status = "" if m["rc"] == 0 else f"  (exit {m['rc']}: {m['stderr'].strip().splitlines()[-1:]})"
        print(f"  {name:22s} {m['wall_s']:7.2f} s wall {m['cpu_s']:7.2f} s CPU {m['peak_mb']:7.0f} MB"
              f"{status}", flush=True)
    return result


def table(results: list[dict]) -> str:
    names = list(results[0]["commands"])
    head = "| wall (CPU), peak memory | " + " | ".join(f"{r['trials']:,} x {r['epochs']}" + (" (live)" if r["layout"] == "live" else "")
                                for r in results) + " |"
    lines = [head, "| --- |" + " --- |" * len(results)]
    lines.append("| results files | " + " | ".join(f"{r['files']:,}" for r in results) + " |")
    lines.append("| bytes on disk | " + " | ".join(f"{r['bytes'] / 1e6:.1f} MB" for r in results) + " |")
    lines.append("| writing (writer) | " + " | ".join(f"{r['write_s']:.1f} s" for r in results) + " |")
    for name in names:
        cells = []
        for r in results:
            m = r["commands"][name]
            cells.append(f"{m['wall_s']:.1f} s ({m['cpu_s']:.1f} s CPU), {m['peak_mb']:.0f} MB"
                         + ("" if m["rc"] == 0 else f" (exit {m['rc']})"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    if "--measure" in sys.argv:
        measure(sys.argv[sys.argv.index("--") + 1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="200,2000,20000", help="trial counts, comma-separated")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--live", action="store_true",
                        help="leave every row in its live file (no compaction): the old layout")
    parser.add_argument("--root", default=None, help="where the studies go (default: a temp folder, removed)")
    parser.add_argument("--json", default=None, help="also write the measurements here")
    args = parser.parse_args()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        print(f"--sizes {args.sizes!r}: expected comma-separated integers", file=sys.stderr)
        return 2
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="rvsm-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = [bench_one(root, n, args.epochs, live=args.live) for n in sizes]
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print()
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
