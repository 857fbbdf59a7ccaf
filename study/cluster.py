"""Joining a Ray cluster: within a bounded time, with the cluster's token, or one clear line.

Left to itself, `ray.init(address=...)` waits in C++ code that Python signals cannot interrupt:
an address nothing answers costs minutes and ignores SIGTERM, and a cluster that asks for a
token the driver did not send is retried every second before a traceback. So the cluster's
bootstrap server (the GCS) is asked first, from Python, with a deadline: does it answer, and
does it accept this machine's token? Only then does Ray join it, under a watchdog.

Token authentication (Ray >= 2.52; `ray start --head` turns it on whenever a token exists,
and Ray >= 2.59 creates one for every local `ray.init()`): Ray finds the token in
RAY_AUTH_TOKEN, else the file named by RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token, and sends
it only when RAY_AUTH_MODE=token. A cluster that asks for a token gets the one Ray finds here:
token mode is turned on for this process, as `ray start --head` and `ray.init("auto")` do when
a token exists. Trial processes are started by each node's raylet and authenticate with that
node's own settings (docs/cluster.md).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import ray

from study.spec import SpecError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_HOWTO = ("put the cluster's token (`ray get-auth-token` on the head node prints it) in "
               "~/.ray/auth_token, or set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, a file holding "
               "it)")
# Ray logs "Token authentication is enabled for this Ray cluster ..." on every start: noise for
# a study, shown with --verbose only.
AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
EXIT_USAGE = 2  # the CLI's status for input it cannot use; a cluster it cannot join is one


class ClusterError(SpecError):
    """The cluster named in `[cluster]` cannot be joined; reported like a bad input (one line,
    exit status 2), before anything is written."""


def connect(address: str | None, *, timeout_s: float, verbose: bool) -> None:
    """Start a local Ray (address None) or join the cluster at `address` ("auto", "host:port",
    "ray://host:port").

    Joining waits at most `timeout_s` seconds for the cluster to answer, then at most
    `timeout_s` more for Ray to finish joining. Raises ClusterError (one line: what failed
    and what to set); a Ray that hangs past the second limit ends the process with exit
    status 2 and one line on stderr, since its wait cannot be interrupted."""
    logging.getLogger(AUTH_LOGGER).setLevel(logging.INFO if verbose else logging.ERROR)
    if ray.is_initialized():
        return
    options = dict(log_to_driver=verbose,
                   logging_level=logging.INFO if verbose else logging.WARNING)
    if address is None:
        # "local" rather than None: a stale /tmp/ray/ray_current_cluster would make Ray try to
        # join a cluster that is gone.
        ray.init(address="local", include_dashboard=False, **options)
        return
    if address != "auto":
        host, port = _split(address)
        if address.startswith("ray://"):
            _check_listening(address, host, port, timeout_s)
        else:
            _check_gcs(address, host, port, timeout_s)
    with _watchdog(address, timeout_s):
        try:
            ray.init(address=address, **options)
        except Exception as exc:  # Ray raises ConnectionError, RuntimeError, AuthenticationError
            raise ClusterError(f"cannot join the Ray cluster at {address}: "
                               f"{_first_line(exc)}") from None


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return host, int(port)


def _check_listening(address: str, host: str, port: int, timeout_s: float) -> None:
    """Something accepts connections at host:port within `timeout_s`, or ClusterError."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except socket.timeout:
        raise ClusterError(f"cluster.address = {address!r}: no answer within {timeout_s:g} s "
                           f"(cluster.connect_timeout_s); is the head node up and its port "
                           f"open?") from None
    except socket.gaierror as exc:
        raise ClusterError(f"cluster.address = {address!r}: unknown host {host!r} "
                           f"({exc.strerror or exc})") from None
    except OSError as exc:
        raise ClusterError(f"cluster.address = {address!r}: nothing answers there "
                           f"({exc.strerror or exc}); start the head node with `ray start "
                           f"--head --port={port}`, or fix the address") from None


def _check_gcs(address: str, host: str, port: int, timeout_s: float) -> None:
    """The Ray cluster's bootstrap server answers at host:port and accepts this driver's token
    (turning token mode on when the cluster asks for one and a token is found), or
    ClusterError."""
    _check_listening(address, host, port, timeout_s)
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return  # Ray's own TLS set-up: leave the asking to Ray
    mode = os.environ.get(AUTH_MODE, "").lower()
    token = _token() if mode != "disabled" else None
    status = _ask_gcs(host, port, token if mode == "token" else None, timeout_s, address)
    if status != "unauthenticated":
        return
    if mode == "disabled":
        raise ClusterError(f"the Ray cluster at {address} requires token authentication, but "
                           f"{AUTH_MODE}=disabled here; unset it (or set {AUTH_MODE}=token) "
                           f"and {TOKEN_HOWTO}")
    if token is None:
        raise ClusterError(f"the Ray cluster at {address} requires token authentication and no "
                           f"token was found on this machine; {TOKEN_HOWTO}")
    if mode == "token" or _ask_gcs(host, port, token, timeout_s, address) == "unauthenticated":
        raise ClusterError(f"the Ray cluster at {address} refused this machine's token "
                           f"({_token_source()}); {TOKEN_HOWTO}")
    _enable_token_auth()


def _ask_gcs(host: str, port: int, token: str | None, timeout_s: float, address: str) -> str:
    """"ok" or "unauthenticated": the GCS's answer to its cheapest call, with `token` sent as
    Ray sends it. ClusterError when what answers at host:port is not a Ray GCS."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:  # Ray without its client extra: the port answered, Ray asks the rest
        return "ok"
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            stub.GetClusterId(gcs_service_pb2.GetClusterIdRequest(), timeout=timeout_s,
                              metadata=metadata)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAUTHENTICATED:
                return "unauthenticated"
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ClusterError(f"cluster.address = {address!r}: something accepts "
                                   f"connections there, but no Ray head answered within "
                                   f"{timeout_s:g} s (cluster.connect_timeout_s)") from None
            raise ClusterError(f"cluster.address = {address!r}: what answers there is not a "
                               f"Ray cluster's head ({exc.code().name.lower()}: "
                               f"{exc.details()}); the head's port is the one `ray start "
                               f"--head --port=...` was given (6379 by default)") from None
    return "ok"


def _token() -> str | None:
    """The token Ray itself would send (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token),
    or None; ClusterError for a RAY_AUTH_TOKEN_PATH that names no readable token."""
    try:
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # Ray < 2.52: no token authentication
        return None
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path and not os.environ.get("RAY_AUTH_TOKEN"):
        try:
            readable = bool(open(path, "rb").read().strip())
        except OSError:
            readable = False
        if not readable:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH = {path!r} names no readable, non-empty "
                               f"token file")
    loader = AuthenticationTokenLoader.instance()
    loader.reset_cache()  # the environment may have changed since Ray last looked
    try:
        if not loader.has_token(ignore_auth_mode=True):
            return None
        return loader.get_raw_token(ignore_auth_mode=True)
    finally:
        loader.reset_cache()  # nor may what was read here outlive this environment


def _token_source() -> str:
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={os.environ['RAY_AUTH_TOKEN_PATH']}"
    return "~/.ray/auth_token"


def _enable_token_auth() -> None:
    """RAY_AUTH_MODE=token for this process, what `ray start --head` does when a token exists;
    Ray reads its configuration again so that the change holds."""
    from ray._raylet import AuthenticationTokenLoader, Config
    os.environ[AUTH_MODE] = "token"
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


@contextmanager
def _watchdog(address: str, timeout_s: float) -> Iterator[None]:
    """End the process (exit status 2, one line) if the body runs past `timeout_s`: Ray's
    joining waits in C++ code that neither an exception nor SIGTERM can reach."""
    done = threading.Event()

    def watch() -> None:
        if not done.wait(timeout_s):
            print(f"rvsm: error: Ray did not finish joining the cluster at {address} within "
                  f"{timeout_s:g} s (cluster.connect_timeout_s); run rvsm on one of the "
                  f"cluster's nodes, or reach it from outside with address = "
                  f"\"ray://HEAD:10001\"", file=sys.stderr, flush=True)
            os._exit(EXIT_USAGE)

    thread = threading.Thread(target=watch, name="rvsm-connect-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
