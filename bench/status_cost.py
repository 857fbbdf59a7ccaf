"""What `rvsm status` costs: wall time and peak memory of the command on a study of N trials,
with torch and Ray made unimportable (it is a reader: it must not need them).

Builds the study folder without Ray (the study file, a run record and N trial rows written with
study.results.ResultsWriter, in a child process so that this one stays small: a forked child's
peak memory counts its parent's pages until it execs), then runs `rvsm status` R times in fresh
processes and prints the median and the worst wall time and the peak resident memory of each
process (`os.wait4`).

Usage: python bench/status_cost.py [--trials 10] [--repeats 5]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BLOCKED = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in ("torch", "ray"):
            raise ImportError(name + " is blocked")
sys.meta_path.insert(0, Blocked())
from study.cli import main
sys.exit(main(sys.argv[1:]))
"""

STUDY = """
[study]
name = "bench"
storage = "{storage}"
trials = {trials}

[train]
dataset = "synthetic"
model = "lenet300_100"
"""


def build_study(storage: Path, trials: int) -> Path:
    from analysis import schema
    from study.bookkeeping import plan_run
    from study.results import ResultsWriter, param_types
    from study.spec import dump_toml, loads
    from study.storage import STUDY_FILE, locate
    from trainables.config import TrainConfig
    raw = loads(STUDY.format(storage=storage, trials=trials))
    location = locate(str(storage), "bench")
    location.write_text(dump_toml(raw), STUDY_FILE)
    plan_run(location, trials)
    config = TrainConfig.from_dict(raw["train"]).to_dict()
    writer = ResultsWriter(location, "bench", param_types(config), ["lam", "beta", "lr"])
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    for i in range(trials):
        writer.write_trial(writer.trial_row(
            trial_id=f"t{i:05d}", trial_number=i, state=schema.FINISHED,
            config={**config, "lam": 1e-6 * (i + 1)},
            metrics={"epoch": 3, "val_acc": 0.9 + 0.0001 * i, "sparsity": 0.99 - 0.0001 * i,
                     "test_acc": 0.9},
            started_at=start, ended_at=start + timedelta(seconds=i), node="n", device="cpu"))
    return Path(location.path)


def run_once(folder: Path) -> tuple[float, float]:
    """Wall seconds and peak resident MiB of one `rvsm status` process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", BLOCKED, "status", str(folder)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"rvsm status failed: {child.stderr.read().decode()}")
    return wall, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--build-into", help=argparse.SUPPRESS)  # the child that builds the study
    args = parser.parse_args()
    if args.build_into:
        build_study(Path(args.build_into), args.trials)
        return
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, __file__, "--trials", str(args.trials), "--build-into", tmp],
                       check=True)
        folder = Path(tmp) / "bench"
        runs = [run_once(folder) for _ in range(args.repeats)]
    walls, peaks = [w for w, _ in runs], [m for _, m in runs]
    print(f"rvsm status, {args.trials} trials, torch and Ray blocked, {args.repeats} runs: "
          f"wall median {statistics.median(walls):.2f} s (max {max(walls):.2f} s), "
          f"peak memory median {statistics.median(peaks):.0f} MiB (max {max(peaks):.0f} MiB)")


if __name__ == "__main__":
    main()
