"""A study on a real, token-authenticated two-node Ray cluster, with every connection on 127.0.0.1.

Ray replaces 127.0.0.1 by the machine's outward address whenever the machine has one (its
`resolve_ip_for_localhost`), for `ray start` and drivers alike. So the checks of
loopback_cluster_checks.py (two `ray start` nodes, `rvsm run` against them, token errors) run in
a network namespace of their own whose only interface is the loopback one (`unshare -rn`, a
user namespace: no privileges needed): there, 127.0.0.1 is the only address Ray can find. Where
user namespaces are not allowed, the same checks run on this machine's network instead, with
both nodes on one of its own addresses.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHECKS = Path(__file__).with_name("loopback_cluster_checks.py")


def _loopback_namespace() -> list[str] | None:
    """The command prefix that runs a command with only a loopback interface, or None."""
    if not (shutil.which("unshare") and shutil.which("ip")):
        return None
    prefix = ["unshare", "-rn", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    return prefix if probe.returncode == 0 else None


def test_a_token_cluster_of_two_nodes_with_every_connection_on_loopback():
    prefix = _loopback_namespace()
    env = {**os.environ, "RVSM_LOOPBACK_ONLY": "1" if prefix else "0"}
    command = [sys.executable, "-m", "pytest", str(CHECKS), "-o", "addopts=", "-q", "-p", "no:cacheprovider"]
    done = subprocess.run([*(prefix or []), *command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "4 passed" in done.stdout, done.stdout[-3000:]
    print(f"loopback namespace: {'yes' if prefix else 'no (unshare not allowed here)'}")
