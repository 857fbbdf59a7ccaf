"""`package.module:name` references to the user's own code (a network factory, a data loader).

Resolving one imports the module, so it runs that module's code: a study file that names one runs
the named code, on the driver (the spec-time check) and on every Ray worker (the trials).
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Any

IMPORT_PATH = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def is_import_path(value: str) -> bool:
    """True for `package.module:attribute` (attribute may be dotted: `module:Class.method`)."""
    return bool(IMPORT_PATH.match(value))


def import_object(path: str, field: str) -> Any:
    """The object `path` names; a `ConfigError` that starts with `field=path` when the module or
    attribute is missing or the import fails (the module's own error in one line).

    The working directory is searched last (appended to `sys.path`), as `python -m` and a local
    Ray's workers do, so that `rvsm run` and `rvsm train` find a module beside the study file."""
    from .config import ConfigError  # here, not above: config imports this module
    module_name, _, attributes = path.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is one line
        raise ConfigError(f"{field}={path!r}: cannot import module {module_name!r}: {one_line(e)} "
                          "(the module must be installed or on PYTHONPATH, on the Ray workers too)") from None
    for attribute in attributes.split("."):
        if not hasattr(obj, attribute):
            raise ConfigError(f"{field}={path!r}: module {module_name!r} has no attribute {attributes!r}")
        obj = getattr(obj, attribute)
    if not callable(obj):
        raise ConfigError(f"{field}={path!r} is a {type(obj).__name__}, not a function")
    return obj


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, for errors raised by the user's code."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
