"""``python -m analysis pareto|report|export ...``: the analysis commands without the rest of the project."""
from __future__ import annotations

import sys

from analysis.cli import COMMANDS


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m analysis {{{'|'.join(COMMANDS)}}} ... (--help for each)", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
