"""The clusters that backend-neutral tests run against: real etcd and kvstore.

Client and kvctl tests make the same assertions against both; a test that
passes on etcd and fails on kvstore is a compatibility bug.
"""

from __future__ import annotations

import pytest

from kvstore.devcluster import LocalCluster
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

BACKENDS = [
    pytest.param("etcd", marks=pytest.mark.etcd),
    pytest.param("kvstore", marks=pytest.mark.e2e),
]


def start_cluster(backend: str, size: int = 3) -> EtcdCluster | LocalCluster:
    if backend == "etcd":
        if not etcd_available():
            pytest.skip("etcd binaries not installed (apt-get install etcd-server etcd-client)")
        return EtcdCluster(size=size).start()
    if backend == "kvstore":
        return LocalCluster(size=size).start()
    raise ValueError(f"unknown backend {backend}")


def stop_fast(c: EtcdCluster | LocalCluster) -> None:
    """SIGKILL every member first: the data is thrown away anyway, and a
    graceful stop of all members at once waits for lost peers."""
    for i in range(len(c.endpoints)):
        c.kill(i)
    c.stop()
