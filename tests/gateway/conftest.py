"""Nodes for the gateway tests: a real etcd 3.4 and a kvstore member (module scope)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_harness import GatewayNode, start_etcd, start_kvstore


@pytest.fixture(scope="module")
def etcd_gw() -> Iterator[GatewayNode]:
    node = start_etcd()
    try:
        yield node
    finally:
        node.cluster.stop()


@pytest.fixture(scope="module")
def kvstore_gw() -> Iterator[GatewayNode]:
    node = start_kvstore()
    try:
        yield node
    finally:
        node.cluster.stop()
