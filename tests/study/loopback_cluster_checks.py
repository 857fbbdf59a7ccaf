"""A study joins a real, token-authenticated two-node Ray cluster started with `ray start`.

Run by tests/study/test_real_cluster.py inside a network namespace that has only the loopback
interface (RVSM_LOOPBACK_ONLY=1), where every address is 127.0.0.1; not collected by itself.

The head and a second node run on this machine, each with its own temp folder, a token of
their own (in a private HOME, so no one else's ~/.ray/auth_token is read or written) and
ports picked free at run time. They are stopped by their process ids, never by `ray stop`,
which would stop every other Ray on the machine. The driver is `rvsm run` in a subprocess with
only the token file: it must turn token mode on by itself, as Ray's own tools do.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.study.test_multinode import SLOWER_TRAIN

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).with_name("ray")  # the `ray` command of this environment
START_TIMEOUT_S = 180  # two nodes on a small, shared machine


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _is_this_machine(address: str) -> bool:
    """Only an address of one of this machine's interfaces can be bound to."""
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as s:
        try:
            s.bind((address, 0))
        except OSError:
            return False
    return True


class RayNode:
    """One `ray start` node in a new session, so that its processes share one process group."""

    def __init__(self, args: list[str], env: dict[str, str], temp_dir: Path, log: Path):
        self.temp_dir = temp_dir
        with open(log, "w") as out:
            self.start = subprocess.Popen([str(RAY), "start", *args, f"--temp-dir={temp_dir}",
                                           "--num-cpus=1", "--num-gpus=0",
                                           "--disable-usage-stats"],
                                          env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self.pgid = self.start.pid
        self.log = log

    def wait_started(self) -> None:
        """`ray start` (without --block) returns once its node is up."""
        code = self.start.wait(timeout=START_TIMEOUT_S)
        assert code == 0, self.log.read_text()[-3000:]

    def pids(self) -> list[int]:
        """This node's processes: its process group, and anything naming its temp folder."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                pgid = os.getpgid(int(entry.name))
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except (OSError, ProcessLookupError):
                continue
            if pgid == self.pgid or str(self.temp_dir) in cmdline:
                found.append(int(entry.name))
        return [pid for pid in found if pid != os.getpid()]

    def node_id(self) -> str:
        for pid in self.pids():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "raylet" in cmdline.split("\0")[0]:
                return re.search(r"--node_id=([0-9a-f]+)", cmdline).group(1)
        raise AssertionError(f"no raylet for {self.temp_dir}")

    def stop(self) -> None:
        """SIGTERM to every process of the node, SIGKILL to what is left after 5 s (the GCS server
        may take longer to leave on its own)."""
        for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + grace
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.2)
        if self.start.poll() is None:
            self.start.kill()
        self.start.wait()


@pytest.fixture(scope="module")
def token_cluster():
    """(GCS address, the environment with the cluster's token, the two node ids)."""
    root = Path(tempfile.mkdtemp(prefix="rvsm-ray-", dir="/tmp"))  # short: Unix socket paths
    home = root / "home"
    (home / ".ray").mkdir(parents=True)
    token = secrets.token_hex(32)
    (home / ".ray" / "auth_token").write_text(token)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), RAY_AUTH_MODE="token")
    gcs, client, head_agent, worker_agent = _free_ports(4)
    address = f"127.0.0.1:{gcs}"
    nodes: list[RayNode] = []
    try:
        head = RayNode(["--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
                        "--include-dashboard=false", f"--ray-client-server-port={client}",
                        f"--dashboard-agent-listen-port={head_agent}"],
                       env, root / "head", root / "head.log")
        nodes.append(head)
        head.wait_started()
        worker = RayNode([f"--address={address}", "--node-ip-address=127.0.0.1",
                          f"--dashboard-agent-listen-port={worker_agent}"],
                         env, root / "worker", root / "worker.log")
        nodes.append(worker)
        worker.wait_started()
        yield address, env, home, {head.node_id(), worker.node_id()}
    finally:
        for node in reversed(nodes):
            node.stop()
        shutil.rmtree(root, ignore_errors=True)


def _driver_env(base: dict[str, str], **changes: str) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k != "RAY_AUTH_MODE"}  # the driver finds it
    env.update(changes)
    return env


def test_a_study_runs_on_both_nodes_of_a_token_cluster(token_cluster, write_study, tmp_path):
    address, env, home, node_ids = token_cluster
    path = write_study("real", trials=2, concurrent=2, train=SLOWER_TRAIN,
                       extra=f'[cluster]\naddress = "{address}"\n')
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], cwd=REPO,
                          env=_driver_env(env), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Token authentication" not in done.stderr
    trials = pd.read_parquet(tmp_path / "studies" / "real" / "results" / "trials")
    assert len(trials) == 2 and set(trials["state"]) == {"finished"}
    recorded = {node.rsplit("/", 1)[-1] for node in trials["node"]}
    assert recorded == {node_id[:8] for node_id in node_ids}, (recorded, node_ids)


def test_the_nodes_stay_on_this_machine(token_cluster):
    """Both nodes answer on one address of this machine (127.0.0.1, or the machine's own
    address that Ray puts in its place: docs/cluster.md): nothing leaves the machine."""
    address, env, home, node_ids = token_cluster
    code = ("import json, ray; ray.init(address=%r, log_to_driver=False); "
            "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))"
            % address)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    addresses = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert len(addresses) == 1 and all(map(_is_this_machine, addresses)), addresses
    if os.environ.get("RVSM_LOOPBACK_ONLY") == "1":
        assert addresses == {"127.0.0.1"}, addresses


def _run_driver(path: Path, home: Path, **env_changes: str) -> tuple[int, str]:
    """`rvsm run` as its own process, with a HOME of its own and no RAY_AUTH_* but
    `env_changes`: Ray caches the token it loaded in the process, so a wrong token tried in
    this one would break every later local Ray of the test session. Status, stderr line."""
    home.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(home), **env_changes)
    done = subprocess.run([sys.executable, "-m", "study.cli", "run", str(path)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return done.returncode, lines[0]


def test_without_the_token_the_driver_says_what_to_set(token_cluster, write_study, tmp_path):
    address, env, home, node_ids = token_cluster
    path = write_study("notoken", extra=f'[cluster]\naddress = "{address}"\n')
    code, line = _run_driver(path, tmp_path / "home")
    assert code == 2
    assert "requires token authentication" in line and "RAY_AUTH_TOKEN" in line
    assert "~/.ray/auth_token" in line
    assert not (tmp_path / "studies" / "notoken").exists()


def test_a_wrong_token_is_refused_in_one_line(token_cluster, write_study, tmp_path):
    address, env, home, node_ids = token_cluster
    path = write_study("wrong", extra=f'[cluster]\naddress = "{address}"\n')
    code, line = _run_driver(path, tmp_path / "home", RAY_AUTH_TOKEN="0" * 64)
    assert code == 2 and "refused this machine's token (RAY_AUTH_TOKEN)" in line
    assert not (tmp_path / "studies" / "wrong").exists()
