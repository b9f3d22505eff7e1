"""Helpers shared by the gateway tests: HTTP calls, starting etcd / kvstore.

`GatewayNode.base` is the URL of the HTTP/JSON gateway (etcd: its client
URL, where etcd serves both; kvstore: its --listen-client-http-urls),
`.metrics_base` the metrics listener. Nodes are fresh single-member
clusters, so both sides' revisions line up.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import pytest

from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available
from kvstore.testing.waiting import free_port, wait_until


@dataclass
class GatewayNode:
    name: str
    base: str
    metrics_base: str
    cluster: Any

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        return http("GET", self.base + path, None, timeout)

    def post(self, path: str, body: Any, timeout: float = 10.0) -> tuple[int, bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http("POST", self.base + path, data, timeout)


def http(method: str, url: str, data: bytes | None, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _up(node: GatewayNode) -> bool:
    try:
        status, body = node.get("/health", timeout=2)
    except OSError:
        return False
    return status == 200 and json.loads(body) == {"health": "true"}


def start_etcd() -> GatewayNode:
    if not etcd_available():
        pytest.skip("etcd binary not installed")
    metrics = free_port()
    cluster = EtcdCluster(
        size=1, extra_args=("--listen-metrics-urls", f"http://127.0.0.1:{metrics}")
    ).start()
    m = cluster.members[0]
    node = GatewayNode("etcd", f"http://127.0.0.1:{m.client_port}",
                       f"http://127.0.0.1:{metrics}", cluster)  # fmt: skip
    wait_until(lambda: _up(node), timeout=30, what="etcd gateway up")
    return node


def start_kvstore(extra_args: tuple[str, ...] = ()) -> GatewayNode:
    from kvstore.devcluster import LocalCluster

    http_port = free_port()
    cluster = LocalCluster(
        size=1,
        metrics=True,
        extra_args=("--listen-client-http-urls", f"http://127.0.0.1:{http_port}", *extra_args),
    ).start()
    m = cluster.members[0]
    node = GatewayNode("kvstore", f"http://127.0.0.1:{http_port}",
                       f"http://127.0.0.1:{m.metrics_port}", cluster)  # fmt: skip
    wait_until(lambda: _up(node), timeout=60, what="kvstore gateway up")
    return node
