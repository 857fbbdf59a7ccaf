"""The one exception analysis raises for bad input: the command line prints it and exits 2."""
from __future__ import annotations


class AnalysisError(Exception):
    """A problem with the user's input (a path, a file, an option), not a bug.

    The message is shown as is, without a traceback, so it names the offending file or value.
    """
