"""Fixtures shared by the trainables tests: a private data cache and the `slow` marker."""
from __future__ import annotations

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: about a minute on 2 CPU cores; runs by default (deselect: -m \"not slow\")")


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Decoded-data caches go to a temporary folder, never to ~/.cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("RVSM_CACHE", str(tmp_path_factory.mktemp("rvsm-cache")))
    yield
    mp.undo()
