"""Fixtures for client tests: one cluster per backend for the whole session.

`cluster` is parametrized by backend; every test asserts only what etcd and
kvstore must both do. The lead adds the "kvstore" backend here
(kvstore.devcluster.LocalCluster: .endpoints, .kill(i), .restart(i), .stop()).
Tests that kill members must leave the cluster healthy (restart + wait).
"""

from __future__ import annotations

import itertools

import pytest

from kvstore.client import Client
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

BACKENDS = [pytest.param("etcd", marks=pytest.mark.etcd)]

_counter = itertools.count()


def start_cluster(backend: str, size: int = 3):
    if backend == "etcd":
        if not etcd_available():
            pytest.skip("etcd binaries not installed")
        return EtcdCluster(size=size).start()
    raise ValueError(f"unknown backend {backend}")


@pytest.fixture(scope="session", params=BACKENDS)
def cluster(request):
    c = start_cluster(request.param)
    yield c
    _stop_fast(c)


@pytest.fixture
def client(cluster):
    with Client(cluster.endpoints, dial_timeout=2.0, command_timeout=10.0) as c:
        yield c


@pytest.fixture
def ns(request) -> str:
    """A key prefix unique to this test (tests share one cluster)."""
    return f"/t{next(_counter)}-{request.node.name[:40]}/"


def _stop_fast(c) -> None:
    """SIGKILL every member first: the data is thrown away anyway, and a
    graceful etcd cluster stop takes ~7 s (leaders try to hand over)."""
    if isinstance(c, EtcdCluster):
        for i in range(len(c.endpoints)):
            c.kill(i)
    c.stop()
