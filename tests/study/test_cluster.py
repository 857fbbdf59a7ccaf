"""Joining a cluster that cannot be joined: one line, exit 2, within the connect timeout, and a
SIGTERM during the wait ends the driver. Nothing here starts Ray (the real cluster is in
test_real_cluster.py)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from study import cluster
from study.cli import main

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentListener:
    """Accepts TCP connections on 127.0.0.1 and never says a word, like a firewall that lets
    the connection in or a process that is not Ray; counts the connections accepted."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Semaphore(0)
        self.open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.open.append(conn)
            self.accepted.release()

    def close(self) -> None:
        for conn in self.open:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent():
    listener = SilentListener()
    yield listener
    listener.close()


@pytest.fixture
def no_ray():
    """The CLI joins the study's cluster only when this process holds no Ray yet."""
    import ray
    ray.shutdown()


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_an_address_nothing_listens_on_is_one_line_and_exit_2(write_study, tmp_path, capsys,
                                                             no_ray):
    port = _free_port()  # bound, then closed: nothing listens there now
    path = write_study("nobody", extra=f'[cluster]\naddress = "127.0.0.1:{port}"\n')
    assert main(["run", str(path)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"127.0.0.1:{port}" in line and "nothing answers" in line
    assert not (tmp_path / "studies" / "nobody").exists()


def test_port_1_is_refused_at_once(write_study, tmp_path, capsys, no_ray):
    path = write_study("port1", extra='[cluster]\naddress = "127.0.0.1:1"\n')
    assert main(["run", str(path)]) == 2
    assert "127.0.0.1:1" in _one_error_line(capsys.readouterr().err)
    assert not (tmp_path / "studies" / "port1").exists()


def test_a_silent_address_times_out_after_connect_timeout(write_study, tmp_path, capsys,
                                                         silent, no_ray):
    path = write_study("silent", extra=f'[cluster]\naddress = "127.0.0.1:{silent.port}"\n'
                                       f'connect_timeout_s = 2\n')
    start = time.monotonic()
    assert main(["run", str(path)]) == 2
    waited = time.monotonic() - start
    assert 2 <= waited < 120, waited  # the configured wait, then no more
    line = _one_error_line(capsys.readouterr().err)
    assert "connect_timeout_s" in line and f"127.0.0.1:{silent.port}" in line
    assert not (tmp_path / "studies" / "silent").exists()


@pytest.mark.parametrize("sig, codes", [(signal.SIGTERM, (-signal.SIGTERM, 128 + signal.SIGTERM)),
                                        (signal.SIGINT, (130,))], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_ends_the_driver_while_it_waits_for_the_cluster(write_study, tmp_path, silent,
                                                                 sig, codes):
    path = write_study("term", extra=f'[cluster]\naddress = "127.0.0.1:{silent.port}"\n'
                                     f'connect_timeout_s = 600\n')
    driver = subprocess.Popen([sys.executable, "-m", "study.cli", "run", str(path)], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the TCP check, then the question to the (silent) head: the driver is now waiting
        assert silent.accepted.acquire(timeout=120) and silent.accepted.acquire(timeout=30)
        driver.send_signal(sig)
        driver.wait(timeout=15)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    assert driver.returncode in codes, driver.returncode
    assert "Traceback" not in driver.stderr.read()
    assert not (tmp_path / "studies" / "term").exists()


def test_connect_timeout_is_validated(write_study, capsys):
    for value in ("0", "-1", "nan", "inf", "1e9", '"30"'):
        path = write_study("bad", extra=f'[cluster]\naddress = "127.0.0.1:6379"\n'
                                        f'connect_timeout_s = {value}\n')
        assert main(["run", str(path)]) == 2
        assert "cluster.connect_timeout_s" in _one_error_line(capsys.readouterr().err)


def test_an_unreadable_token_path_is_named(monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", "/nonexistent/auth_token")
    with pytest.raises(cluster.ClusterError, match="RAY_AUTH_TOKEN_PATH"):
        cluster._token()


def test_a_ray_that_hangs_while_joining_ends_the_process_with_one_line():
    """The watchdog's promise, with a sleep standing in for Ray's uninterruptible wait."""
    code = ("import time; from study import cluster\n"
            "with cluster._watchdog('127.0.0.1:9', 1):\n"
            "    time.sleep(60)\n")
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert time.monotonic() - start < 55  # well before the 60 s sleep would have ended
    line = _one_error_line(done.stderr)
    assert "127.0.0.1:9" in line and "connect_timeout_s" in line


def test_rays_token_warning_only_with_verbose(monkeypatch):
    import ray
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # nothing is started
    logger = logging.getLogger(cluster.AUTH_LOGGER)
    cluster.connect(None, timeout_s=30, verbose=False)
    assert not logger.isEnabledFor(logging.WARNING)
    cluster.connect(None, timeout_s=30, verbose=True)
    assert logger.isEnabledFor(logging.WARNING)
    cluster.connect(None, timeout_s=30, verbose=False)



def test_a_local_ray_starts_without_rays_token_warning(tmp_path):
    """Ray 2.60 turns token authentication on for every local Ray and says so on stderr; a
    study does not (the fresh HOME also makes Ray write its token there, not in ~/.ray)."""
    code = ("from study import cluster; import ray\n"
            "cluster.connect(None, timeout_s=30, verbose=False)\n"
            "print(ray.is_initialized()); ray.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
    assert "Token authentication" not in done.stderr, done.stderr
    assert (tmp_path / ".ray" / "auth_token").exists()  # it was on: the warning had a cause
