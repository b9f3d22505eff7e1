"""The third-party `etcd3gw` client (PyPI, unchanged) against kvstore and etcd.

The same put / get / prefix / delete / lease / watch / lock calls run
against a fresh etcd 3.4.23 and a fresh kvstore member (their gateways);
the results must be the same, lease ids aside. etcd3gw discovers the API
path from /version, so this also checks that handshake.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import pytest
from gateway_harness import GatewayNode

from kvstore.testing.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.etcd, pytest.mark.timeout(120)]


def _client(node: GatewayNode) -> Any:
    url = urlsplit(node.base)
    return etcd3gw.client(host=url.hostname, port=url.port, timeout=10)


def exercise(node: GatewayNode) -> list[tuple[str, Any]]:
    c = _client(node)
    out: list[tuple[str, Any]] = [("api path", c.api_path)]
    out.append(("put", c.put("k1", "v1")))
    out.append(("get", c.get("k1")))
    out.append(("get missing", c.get("nope")))
    for i in range(3):
        c.put(f"pre/{i}", f"p{i}")
    out.append(("get_prefix", c.get_prefix("pre/")))
    out.append(("get_prefix sorted desc", c.get_prefix("pre/", sort_order="descend",
                                                       sort_target="key")))  # fmt: skip
    out.append(("delete", c.delete("k1")))
    out.append(("delete again", c.delete("k1")))
    out.append(("delete_prefix", c.delete_prefix("pre/")))
    out.append(("create", c.create("c1", "x")))
    out.append(("create existing", c.create("c1", "y")))
    out.append(("replace", c.replace("c1", "x", "z")))
    out.append(("replace stale", c.replace("c1", "x", "w")))

    lease = c.lease(ttl=30)
    out.append(("lease put", c.put("lk", "lv", lease=lease)))
    ttl = lease.ttl()
    out.append(("lease ttl in range", 20 <= ttl <= 30))
    out.append(("lease keys", lease.keys()))
    refreshed = lease.refresh()
    out.append(("lease refresh", 20 <= refreshed <= 30))
    out.append(("lease revoke", lease.revoke()))
    out.append(("leased key gone", c.get("lk")))

    events, cancel = c.watch("wk", prev_kv=True)
    got: list[Any] = []

    def consume() -> None:
        got.extend(events)  # until cancel()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    # The watch is created asynchronously: write until its first event shows.
    wait_until(lambda: c.put("wk", "w0") and bool(got), timeout=10, what="watch live")
    first = got[0]["kv"]["value"]
    c.put("wk", "w1")
    c.delete("wk")
    wait_until(lambda: any(e.get("type") == "DELETE" for e in got), timeout=10,
               what="watch delete event")  # fmt: skip
    cancel()
    reader.join(timeout=10)
    out.append(("watch first value", first))
    out.append(("watch tail", [(e.get("type", "PUT"), e["kv"].get("value"),
                                e.get("prev_kv", {}).get("value")) for e in got[-2:]]))  # fmt: skip

    lock = c.lock("L1", ttl=30)
    other = c.lock("L1", ttl=30)
    out.append(("lock acquire", lock.acquire()))
    out.append(("lock is_acquired", lock.is_acquired()))
    out.append(("lock contended", other.acquire()))
    out.append(("lock release", lock.release()))
    out.append(("lock acquire after release", other.acquire()))
    out.append(("lock release other", other.release()))
    out.append(("status version", c.status()["version"]))
    out.append(("members", len(c.members())))
    return out


def test_etcd3gw_same_results(etcd_gw: GatewayNode, kvstore_gw: GatewayNode) -> None:
    expected = exercise(etcd_gw)
    actual = exercise(kvstore_gw)
    assert actual == expected
    assert dict(actual)["api path"] == "/v3/"
    assert dict(actual)["get"] == [b"v1"]
