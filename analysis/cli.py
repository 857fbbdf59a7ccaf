"""Command line: ``rvsm pareto``, ``rvsm report`` and ``rvsm export`` (also ``python -m analysis``).

Each ``*_main(argv) -> int`` parses its own options. A problem with the input (a missing
folder, a bad file, a study without finished trials, a bad option) is one line on stderr and
exit status 2, without a traceback.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence

import pandas as pd

from analysis.errors import AnalysisError
from analysis.export import FORMATS as EXPORT_FORMATS
from analysis.export import export_trials, with_ranks
from analysis.load import Results, finished, load_results
from analysis.objectives import default_reference, parse_objectives, parse_reference
from analysis.plot_front import Y_AXES, draw_front, front_plot_info
from analysis.plot_style import DEFAULT_DPI, SPARSITY_AXES, check_image_path, save_figure
from analysis.reference_points import read_references, shipped_references
from analysis.report import DEFAULT_AT_SPARSITY, ReportOptions, write_report
from analysis.summary import RANK_COLUMN, summarise

STUDY_HELP = "study folder (the one holding results/) or a URI such as s3://bucket/study"


def pareto_main(argv: Sequence[str]) -> int:
    """Draw the accuracy-sparsity front of one or more studies to a PNG, SVG or PDF file."""
    parser = _parser("rvsm pareto", pareto_main.__doc__)
    parser.add_argument("studies", nargs="+", metavar="study", help=STUDY_HELP)
    parser.add_argument("-o", "--output", required=True, help="image file: .png, .svg or .pdf")
    _add_plot_options(parser)
    parser.add_argument("--color-by", help="colour points by a column: threshold (default for one"
                        " study), lam, beta, lr, any param_/metric_ column, or study")
    parser.add_argument("--width", type=int, default=1000, help="width in pixels (default 1000)")
    parser.add_argument("--height", type=int, default=700, help="height in pixels (default 700)")
    parser.add_argument("--size", help="WIDTHxHEIGHT in pixels, e.g. 1200x800 (overrides --width/--height)")
    return _run(parser, argv, _pareto)


def report_main(argv: Sequence[str]) -> int:
    """Write <dir>/report.md with the front table, summary and plots of one study."""
    parser = _parser("rvsm report", report_main.__doc__)
    parser.add_argument("study", help=STUDY_HELP)
    parser.add_argument("-o", "--output", required=True, help="folder for report.md and its PNG plots")
    _add_plot_options(parser)
    parser.add_argument("--at-sparsity", type=float, nargs="+", default=DEFAULT_AT_SPARSITY,
                        help="sparsities (0.99 or 99) for 'best accuracy at sparsity >= s'"
                             " (default: %(default)s)")
    parser.add_argument("--at-accuracy", type=float, nargs="+",
                        help="accuracies (0.98 or 98) for 'best sparsity at accuracy >= a'"
                             " (default: the best accuracy minus 0.5, 1 and 2 points)")
    return _run(parser, argv, _report)


def export_main(argv: Sequence[str]) -> int:
    """Write the flat trials table of one or more studies (every state) as CSV or Parquet."""
    parser = _parser("rvsm export", export_main.__doc__)
    parser.add_argument("studies", nargs="+", metavar="study", help=STUDY_HELP)
    parser.add_argument("-o", "--output", required=True, help="output file")
    parser.add_argument("--format", choices=EXPORT_FORMATS, help="default: from the file extension")
    _add_common_options(parser)
    return _run(parser, argv, _export)


class _OneLineParser(argparse.ArgumentParser):
    """An argument error is one line with a hint, not the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    return _OneLineParser(prog=prog, description=description)


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable or foreign results files (listed on stderr)"
                             " instead of stopping")
    parser.add_argument("--objectives", nargs="+", metavar="NAME[:max|min]",
                        help="objectives of the front (default: val_acc sparsity, both maximised);"
                             " the first two are plotted")
    parser.add_argument("--hv-reference", metavar="V1,V2,...",
                        help="hypervolume reference point (default: chance accuracy, 0 sparsity)")


def _add_plot_options(parser: argparse.ArgumentParser) -> None:
    _add_common_options(parser)
    parser.add_argument("--x-axis", choices=SPARSITY_AXES, default="logit",
                        help="sparsity axis: logit (ticks at 50/90/99/99.9%%), plain sparsity in %%,"
                             " or compression 1/(1-sparsity) on a log axis (default: logit)")
    parser.add_argument("--baseline", type=float,
                        help="dense accuracy drawn as a line, e.g. 0.992 or 99.2"
                             " (default: the best λ = 0 trial)")
    parser.add_argument("--references", action="append", default=[], metavar="FILE",
                        help="TOML or CSV of reference results to draw; or a shipped name:"
                             f" {', '.join(shipped_references())} (repeatable)")
    parser.add_argument("--y-axis", choices=Y_AXES, default="linear",
                        help="accuracy axis: linear in %%, or logit to spread out 97/99/99.5%%"
                             " (default: linear)")
    parser.add_argument("--y-min", type=float,
                        help="lowest accuracy shown, e.g. 0.95 or 95; 0: the whole range (default: zoomed to"
                             " the useful trials; lower ones are marks on the bottom edge)")
    parser.add_argument("--dpi", type=int, default=DEFAULT_DPI, help="dots per inch (default %(default)s)")


def _run(parser: argparse.ArgumentParser, argv: Sequence[str], command: Callable) -> int:
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exit_:  # argparse already printed the usage and the error
        return int(exit_.code or 0)
    try:
        command(args)
    except AnalysisError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        message = f"{error.filename}: {error.strerror or error}" if error.filename else str(error)
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    return 0


def _load(args: argparse.Namespace, sources: Sequence[str]) -> Results:
    """Load, warn about skipped files, and refuse a study without any trial."""
    results = load_results(sources, skip_bad=args.skip_bad)
    for bad in results.bad_files:
        print(f"warning: skipped {bad}", file=sys.stderr)
    empty = [s for s in sources if s not in set(results.trials["source"])]
    if empty:
        raise AnalysisError(f"no trials in {', '.join(empty)}: its results/trials folder has no trial file")
    return results


def _summaries(args: argparse.Namespace, trials: pd.DataFrame):
    objectives = parse_objectives(args.objectives)
    if args.hv_reference:
        reference = parse_reference(args.hv_reference, objectives)
    else:  # one reference point for every study, so that their hypervolumes compare
        done = finished(trials)
        reference = default_reference(done, objectives) if len(done) else None
    return summarise(trials, objectives, reference)


def _references(args: argparse.Namespace):
    return tuple(r for spec in args.references for r in read_references(spec))


def _pareto(args: argparse.Namespace) -> None:
    size = _size(args)
    check_image_path(args.output)  # before a possibly slow load
    results = _load(args, args.studies)
    summaries = _summaries(args, results.trials)
    info = front_plot_info(summaries, x_axis=args.x_axis, color_by=args.color_by, baseline=args.baseline,
                           references=_references(args), y_min=args.y_min, y_axis=args.y_axis)
    path = save_figure(draw_front(info, size_px=size, dpi=args.dpi), args.output)
    for summary in summaries:
        n_front = int((summary.ranked[RANK_COLUMN] == 0).sum())
        print(f"{summary.study}: {len(summary.ranked)} finished, {n_front} on the front,"
              f" hypervolume {summary.hypervolume:.4f}")
    reference = ", ".join(f"{o.name} {r:g}" for o, r in zip(summaries[0].objectives, summaries[0].reference))
    print(f"(hypervolume reference point: {reference})")
    print(f"wrote {path}")


def _report(args: argparse.Namespace) -> None:
    results = _load(args, [args.study])
    summaries = _summaries(args, results.trials)
    if len(summaries) != 1:
        names = ", ".join(s.study for s in summaries)
        raise AnalysisError(f"{args.study} holds trials of several studies ({names}): report one at a time")
    options = ReportOptions(
        x_axis=args.x_axis, references=_references(args), baseline=args.baseline,
        y_min=args.y_min, y_axis=args.y_axis, at_sparsity=_fractions(args.at_sparsity),
        at_accuracy=_fractions(args.at_accuracy) if args.at_accuracy else None, dpi=args.dpi,
    )
    summary = summaries[0]
    path = write_report(summary, results.trials, args.output, options, results.bad_files)
    print(f"wrote {path}")


def _export(args: argparse.Namespace) -> None:
    results = _load(args, args.studies)
    trials = with_ranks(results.trials, parse_objectives(args.objectives))
    path = export_trials(trials, args.output, args.format)
    print(f"wrote {path} ({len(trials)} trials)")


def _fractions(values: Sequence[float]) -> tuple[float, ...]:
    """Thresholds given as fractions (0.99) or percents (99)."""
    return tuple(v / 100 if v > 1 else v for v in values)


def _size(args: argparse.Namespace) -> tuple[int, int]:
    if not args.size:
        return args.width, args.height
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", args.size)
    if not match:
        raise AnalysisError(f"--size {args.size!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800")
    return int(match[1]), int(match[2])


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "pareto": pareto_main,
    "report": report_main,
    "export": export_main,
}
