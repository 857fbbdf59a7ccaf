"""The `rvsm` command. Subcommands import what they need only when run, so `rvsm pareto` works
on a laptop without Ray or torch, and a typo in a study file is reported before Ray starts."""
from __future__ import annotations

import argparse
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

STUDY is a study folder (<storage>/<name>), a URI such as s3://bucket/studies/<name>, or the
study's TOML file. `rvsm <command> --help` for a command's options.
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return EXIT_OK if argv else EXIT_USAGE
    command, rest = argv[0], argv[1:]
    if command == "train":
        from trainables.cli import main as train_main
        return train_main(rest)
    if command in ("pareto", "report", "export"):
        from analysis import cli as analysis_cli
        return getattr(analysis_cli, f"{command}_main")(rest)
    if command in ("run", "resume", "extend", "status"):
        return _study_command(command, rest)
    print(f"rvsm: error: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return EXIT_USAGE


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"rvsm {command}")
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
    if command != "status":
        parser.add_argument("--verbose", action="store_true",
                            help="show Ray's progress table and the trials' own output")
    return parser


def _study_command(command: str, argv: list[str]) -> int:
    args = _parser(command).parse_args(argv)
    from study.spec import SpecError
    try:
        if command == "run":
            return _run(args)
        if command == "status":
            from study.status import print_status
            return print_status(_locate(args.study))
        return _continue(args, command)
    except SpecError as exc:
        print(f"rvsm {command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _locate(study: str):
    """A study folder or URI, or the study file that names one."""
    from study.spec import SpecError, load_spec
    from study.storage import STUDY_FILE, locate
    if study.endswith(".toml") and "://" not in study:
        spec = load_spec(study)
        location = locate(spec.study.storage, spec.study.name)
    else:
        location = locate(study)
    if not location.exists(STUDY_FILE):
        raise SpecError(f"no study at {location.uri!r} (no {STUDY_FILE} there); start one with "
                        f"`rvsm run STUDY.toml`")
    return location


def _run(args) -> int:
    from study.spec import SpecError, dump_toml, read_raw, spec_from_raw
    from study.storage import STUDY_FILE, locate
    raw = read_raw(args.study_file, args.set)
    train = raw.get("train")
    if isinstance(train, dict) and "://" not in str(train.get("data_root", "")):
        # Trials run in other folders, and resume may run from another one.
        train["data_root"] = str(Path(str(train.get("data_root", "data"))).expanduser().resolve())
    spec = spec_from_raw(raw)  # every input error surfaces here, before Ray starts
    location = locate(spec.study.storage, spec.study.name)
    if args.fresh and location.exists():
        location.delete()
    if location.exists(STUDY_FILE):
        raise SpecError(f"study {spec.study.name!r} already exists at {location.uri}; continue it "
                        f"with `rvsm resume {location.uri}` or add trials with `rvsm extend "
                        f"{location.uri} --trials N`, or choose another study.name")
    from study import launch
    launch.connect(spec, verbose=args.verbose)
    launch.check_resources(spec)
    location.write_text(dump_toml(raw), STUDY_FILE)
    run = launch.plan_run(location, spec.study.trials)
    print(f"study {spec.study.name!r}: {spec.study.trials} trials, {spec.study.max_concurrent} at a "
          f"time, sampler {spec.search.sampler}; results in {location.uri}", flush=True)
    return _supervise(lambda: launch.start_run(spec, location, run, verbose=args.verbose),
                      location)


def _continue(args, command: str) -> int:
    from study import launch
    from study.spec import SpecError, parse_spec
    from study.storage import STUDY_FILE
    location = _locate(args.study)
    spec = parse_spec(location.read_text(STUDY_FILE), source=location.join(STUDY_FILE))
    if command == "extend" and args.trials < 1:
        raise SpecError(f"--trials must be >= 1, got {args.trials}")
    launch.connect(spec, verbose=args.verbose)
    launch.check_resources(spec)
    if command == "resume":
        work = lambda: launch.complete_study(spec, location, verbose=args.verbose)  # noqa: E731
    else:
        def work():
            launch.complete_study(spec, location, verbose=args.verbose)  # an unfinished run first
            launch.download_optuna(location)
            launch.start_run(spec, location, launch.plan_run(location, args.trials),
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
    from study.progress import format_duration
    from study.status import print_status
    print(f"done in {format_duration(time.monotonic() - start)}")
    print_status(location)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
