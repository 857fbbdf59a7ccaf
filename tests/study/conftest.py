"""Study tests share one local Ray (2 CPUs) per session; each study is tiny and synthetic."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

TINY_TRAIN = """
[train]
dataset = "synthetic"
synthetic_size = 600
val_size = 100
model = "lenet300_100"
epochs = 2
batch_size = 64
eval_batch_size = 500
"""


def study_text(name: str, storage: Path, *, trials: int = 6, concurrent: int = 2,
               extra: str = "", train: str = TINY_TRAIN, sampler: str = "tpe",
               early_stopping: bool = False) -> str:
    return textwrap.dedent(f"""
        [study]
        name = "{name}"
        storage = "{storage}"
        trials = {trials}
        max_concurrent = {concurrent}
        seed = 1

        [search]
        sampler = "{sampler}"
        early_stopping = {str(early_stopping).lower()}

        [search.params.lam]
        low = 1e-6
        high = 1e-2
        log = true

        [search.params.beta]
        low = 0.1
        high = 10.0
        log = true

        [search.params.lr]
        low = 1e-3
        high = 1e-2
        log = true
        {extra}
        """) + train


@pytest.fixture(scope="session")
def _ray_shutdown_at_end():
    yield
    import ray
    ray.shutdown()


@pytest.fixture
def ray_session(_ray_shutdown_at_end):
    """One local Ray for the session, started on first use (again after a test that needed a
    cluster of its own)."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    return ray


@pytest.fixture
def write_study(tmp_path):
    def write(name: str = "tiny", **kwargs) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(study_text(name, tmp_path / "studies", **kwargs))
        return path
    return write


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """A local S3-compatible server (moto, on 127.0.0.1 at a free port), with the variables that
    point pyarrow (and so Ray Tune and this project) at it set here and inherited by drivers
    and their Ray workers; yields a boto3 S3 client for making buckets."""
    moto_server = pytest.importorskip("moto.server", reason="moto[server] (the test extra) is not installed")
    import socket

    import boto3
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
                           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
                           "RVSM_CACHE": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(key, value)
        yield boto3.client("s3")
    finally:
        server.stop()
