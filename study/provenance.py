"""What produced a result: code version, library versions, host. Recorded beside every trial."""
from __future__ import annotations

import functools
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

LIBRARIES = ("rvsm-study", "torch", "torchvision", "ray", "optuna", "pyarrow", "numpy")


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit (and '-dirty') when run from a checkout."""
    version = _version("rvsm-study") or "unknown"
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty",
                                 "--abbrev=12"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return version
    return f"{version}+{commit.stdout.strip()}" if commit.returncode == 0 else version


@functools.lru_cache(maxsize=1)
def library_versions_json() -> str:
    versions = {name: _version(name) for name in LIBRARIES}
    versions["python"] = platform.python_version()
    return json.dumps(versions, sort_keys=True)


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
