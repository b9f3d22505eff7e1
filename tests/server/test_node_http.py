"""The metrics/health/version HTTP listener, against a stand-in node."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

from kvstore.server.http import MetricsServer
from kvstore.server.node import DriverStats


def fake_node(leader_id: int) -> SimpleNamespace:
    driver = SimpleNamespace(
        leader_id=leader_id, term=3, commit_index=10, applied_index=9,
        waiters=[], stats=DriverStats(proposals_committed=5),
    )  # fmt: skip
    async def read_barrier() -> None:
        return None

    kv = SimpleNamespace(
        has_leader=bool(leader_id), is_leader=leader_id == 1,
        status=lambda: SimpleNamespace(dbSize=4096),
        maintenance=None, read_barrier=read_barrier,
    )  # fmt: skip
    return SimpleNamespace(driver=driver, kv=kv, watch_hub=None, lessor=None)


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_health_version_and_metrics() -> None:
    async def main() -> None:
        node = fake_node(leader_id=1)
        server = MetricsServer(node)
        await server.start(["http://127.0.0.1:0"])
        port = server.ports[0]
        try:
            assert await http_get(port, "/health") == (200, b'{"health":"true"}')
            status, body = await http_get(port, "/version")
            assert status == 200
            assert json.loads(body) == {"etcdserver": "3.4.23", "etcdcluster": "3.4.0"}
            status, body = await http_get(port, "/metrics")
            assert status == 200
            assert b"etcd_server_has_leader 1.0" in body
            assert b"etcd_server_proposals_committed_total 5.0" in body
            assert (await http_get(port, "/nope"))[0] == 404
            node.driver.leader_id = 0
            node.kv.has_leader = False
            assert await http_get(port, "/health") == (503, b'{"health":"false"}')
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(main(), 10))
