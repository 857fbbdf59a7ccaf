"""The `rvsm` command. Subcommands import what they need only when run, so `rvsm pareto` and
`rvsm status` work on a laptop without Ray or torch, and every input error (the study file, the
storage, the options) is reported in one line, exit status 2, before Ray starts or anything is
written."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

USAGE = """usage: rvsm <command> [options]

commands:
  run STUDY.toml            run a study (a local Ray, or the cluster in [cluster])
  resume STUDY              continue an interrupted study
  extend STUDY --trials N   add N trials to a study
  status STUDY              trials by state, Pareto front size, hypervolume, elapsed time
  train [options]           train one configuration, without Ray
  pareto STUDY... -o FILE   draw the accuracy-sparsity front(s)
  report STUDY -o DIR       write a Markdown report with the front table and plots
  export STUDY -o FILE      write the flat trials table (--format csv|parquet)
  model STUDY --trial ID -o DIR   export a trial's sparse network (or --knee, --best-at 'sparsity>=0.98')

STUDY is a study folder (<storage>/<name>), a URI such as s3://bucket/studies/<name>, or the
study's TOML file. `rvsm <command> --help` for a command's options.
"""


class UsageError(Exception):
    """Bad command-line input; the message is printed as one line, exit status 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but an error is one line with a hint, not the whole usage text."""

    def error(self, message: str) -> None:
        raise UsageError(f"{message} (see {self.prog} --help)")


def main(argv: list[str] | None = None) -> int:
    """Run one command; output cut short by a closed pipe (`rvsm status S | head`) ends quietly."""
    try:
        code = _dispatch(sys.argv[1:] if argv is None else list(argv))
        sys.stdout.flush()
        if argv is None and _storage_probe_abandoned():
            sys.stderr.flush()
            os._exit(code)  # a storage client stuck on the network would delay the exit for minutes
        return code
    except BrokenPipeError:
        # Python's documented recipe: further writes to the closed pipe go to /dev/null, so the
        # flush at interpreter exit raises nothing either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nrvsm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _storage_probe_abandoned() -> bool:
    storage = sys.modules.get("study.storage")
    return storage is not None and storage.probe_abandoned()


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command == "train":
        from trainables.cli import main as train_main
        return train_main(rest)
    if command == "model":
        from study.model_export import main as model_main
        return model_main(rest)
    if command in ("pareto", "report", "export"):
        from analysis import cli as analysis_cli
        return getattr(analysis_cli, f"{command}_main")(rest)
    if command in ("run", "resume", "extend", "status"):
        return _study_command(command, rest)
    print(f"rvsm: error: unknown command {command!r}; commands: run, resume, extend, status, "
          f"train, pareto, report, export, model (see rvsm --help)", file=sys.stderr)
    return EXIT_USAGE


def _parser(command: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=f"rvsm {command}", allow_abbrev=False)
    if command == "run":
        parser.add_argument("study_file", help="the study's TOML file")
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override a study file value, e.g. --set train.epochs=2 "
                                 "(repeatable; the value is read as TOML)")
        parser.add_argument("--fresh", action="store_true",
                            help="delete an existing study of the same name first")
    else:
        parser.add_argument("study", help="study folder, URI, or the study's TOML file")
    if command == "extend":
        parser.add_argument("--trials", type=int, required=True, help="how many trials to add")
    if command == "status":
        parser.add_argument("--skip-bad", action="store_true",
                            help="skip unreadable results files (named on stderr) instead of "
                                 "stopping")
    else:
        parser.add_argument("--verbose", action="store_true",
                            help="show Ray's progress table and the trials' own output")
    return parser


def _study_command(command: str, argv: list[str]) -> int:
    from analysis.errors import AnalysisError
    from study.bookkeeping import StudyFolderError
    from study.spec import SpecError
    from study.storage import StorageError
    try:
        args = _parser(command).parse_args(argv)
        if command == "run":
            return _run(args)
        if command == "status":
            from study.status import print_status
            return print_status(_locate(args.study, writable=False), skip_bad=args.skip_bad)
        return _continue(args, command)
    except (UsageError, SpecError, StorageError, StudyFolderError, AnalysisError) as exc:
        print(f"rvsm {command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE


def _locate(study: str, *, writable: bool = True):
    """A study folder or URI, or the study file that names one; checked before Ray starts."""
    from study.spec import SpecError, read_raw, spec_from_raw
    from study.storage import STUDY_FILE, check_storage
    if study.endswith(".toml") and "://" not in study:
        spec = spec_from_raw(read_raw(study), check_train=writable)  # a reader needs no torch
        location = check_storage(spec.study.storage, spec.study.name, writable=writable)
    else:
        location = check_storage(study, writable=writable)
    if not location.exists(STUDY_FILE):
        raise SpecError(f"no study at {location.uri!r} (no {STUDY_FILE} there); start one with "
                        f"`rvsm run STUDY.toml`")
    return location


def _run(args) -> int:
    from study.bookkeeping import plan_run
    from study.spec import SpecError, dump_toml, read_raw, spec_from_raw
    from study.storage import STUDY_FILE, check_storage
    raw = read_raw(args.study_file, args.set)
    spec = spec_from_raw(raw)  # every input error surfaces here, before Ray starts
    data_root = spec.base_config().get("data_root")  # None when searched
    if data_root is not None and "://" not in data_root:
        # Trials run in other folders, and resume may run from another one.
        try:
            data_root = str(Path(data_root).expanduser().resolve())
        except (OSError, RuntimeError, ValueError) as exc:
            raise SpecError(f"train.data_root = {data_root!r}: {exc}") from None
        raw.setdefault("train", {})["data_root"] = data_root
        spec = spec_from_raw(raw)
    location = check_storage(spec.study.storage, spec.study.name)
    if args.fresh and location.exists():
        location.delete()
    if location.exists(STUDY_FILE):
        raise SpecError(f"study {spec.study.name!r} already exists at {location.uri}; continue it "
                        f"with `rvsm resume {location.uri}` or add trials with `rvsm extend "
                        f"{location.uri} --trials N`, or choose another study.name")
    study_toml = dump_toml(raw)
    from study import launch
    launch.connect(spec, verbose=args.verbose)
    launch.check_resources(spec)
    location.write_text(study_toml, STUDY_FILE)
    run = plan_run(location, spec.study.trials)
    print(f"study {spec.study.name!r}: {spec.study.trials} trials, {spec.study.max_concurrent} at a "
          f"time, sampler {spec.search.sampler}; results in {location.uri}", flush=True)
    return _supervise(lambda: launch.start_run(spec, location, run, verbose=args.verbose),
                      location)


def _continue(args, command: str) -> int:
    from study.bookkeeping import plan_run, target_trials
    from study.spec import MAX_TRIALS, SpecError, grid_size
    from study.status import read_stored_spec, set_aside_bad_results
    location = _locate(args.study)
    spec = read_stored_spec(location)
    if command == "extend":
        if not 1 <= args.trials <= MAX_TRIALS:
            raise SpecError(f"--trials must be in [1, {MAX_TRIALS}], got {args.trials}")
        size, target = grid_size(spec), target_trials(location)
        if size is not None and target + args.trials > size:
            raise SpecError(f"--trials {args.trials}: the study's grid has {size} points and "
                            f"{target} trials are planned; the grid sampler would train repeats "
                            f"(at most --trials {max(size - target, 0)})")
    set_aside_bad_results(location, f"rvsm {command}")
    from study import launch
    launch.connect(spec, verbose=args.verbose)
    launch.check_resources(spec)
    if command == "resume":
        work = lambda: launch.complete_study(spec, location, verbose=args.verbose)  # noqa: E731
    else:
        def work():
            launch.complete_study(spec, location, verbose=args.verbose)  # an unfinished run first
            launch.download_optuna(location)
            launch.start_run(spec, location, plan_run(location, args.trials),
                             verbose=args.verbose)
    return _supervise(work, location)


def _supervise(work, location) -> int:
    from study.launch import StudyInterrupted
    start = time.monotonic()
    try:
        work()
    except (KeyboardInterrupt, StudyInterrupted):
        print(f"\nrvsm: interrupted; nothing finished is lost. Continue with:\n"
              f"  rvsm resume {location.uri}", file=sys.stderr)
        return EXIT_INTERRUPTED
    from study.status import format_duration, print_status
    print(f"done in {format_duration(time.monotonic() - start)}")
    print_status(location, skip_bad=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
