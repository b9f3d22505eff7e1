"""Fixtures for client tests: one cluster per backend for the whole session.

`cluster` is parametrized by backend; every test asserts only what etcd and
kvstore must both do (clusters come from tests/backends.py).
Tests that kill members must leave the cluster healthy (restart + wait).
"""

from __future__ import annotations

import itertools

import pytest

from kvstore.client import Client
from tests.backends import BACKENDS, start_cluster, stop_fast

_counter = itertools.count()



@pytest.fixture(scope="session", params=BACKENDS)
def cluster(request):
    c = start_cluster(request.param)
    yield c
    stop_fast(c)


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoints, dial_timeout=2.0, command_timeout=10.0) as c:
        yield c


@pytest.fixture
def ns(request) -> str:
    """A key prefix unique to this test (tests share one cluster)."""
    return f"/t{next(_counter)}-{request.node.name[:40]}/"

