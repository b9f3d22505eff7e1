"""The one harness for in-process members: real KvNodes (built by the
composition root, kvstore.server.assembly.NodeParts) over real gRPC peer
transport on 127.0.0.1 (port 0) and real RocksDB under a temp dir.

Owns: `member_config` (the NodeConfig every in-process test member uses),
`peer_server` (a peer gRPC server bound before the node starts, so the port
is known for --initial-cluster), and `InProcessCluster` (n members, each with
the etcd API servicers on its client server; restart, stop, leader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from kvstore.api import add_servicers
from kvstore.pb import rpc_pb2
from kvstore.server.config import NodeConfig
from kvstore.server.runtime import KvNode
from kvstore.testing.waiting import async_wait_until
from kvstore.transport import SERVER_OPTIONS


def peer_server(port: int = 0) -> tuple[grpc.aio.Server, int]:
    """A gRPC server bound to 127.0.0.1:`port` (0: any), not started."""
    server = grpc.aio.server(options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 0)])
    return server, server.add_insecure_port(f"127.0.0.1:{port}")


def member_config(
    data_dir: Path,
    name: str,
    peer_port: int,
    initial_cluster: str,
    *,
    client_port: int = 0,
    initial_cluster_state: str = "new",
    initial_cluster_token: str = "in-process",
    **extra: Any,
) -> NodeConfig:
    """A validated config for an in-process member (fast elections: 50 ms
    heartbeats, 500 ms election timeout)."""
    url = f"http://127.0.0.1:{peer_port}"
    client = f"http://127.0.0.1:{client_port}"
    return NodeConfig(
        name=name,
        data_dir=str(data_dir),
        listen_client_urls=(client,),
        advertise_client_urls=(client,) if client_port else (),
        listen_peer_urls=(url,),
        initial_advertise_peer_urls=(url,),
        initial_cluster=initial_cluster,
        initial_cluster_state=initial_cluster_state,
        initial_cluster_token=initial_cluster_token,
        heartbeat_interval_ms=50,
        election_timeout_ms=500,
        **extra,
    ).validate()


class InProcessCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.size = size
        self.ports: list[int] = []
        self.client_ports: list[int] = []
        self.client_servers: list[grpc.aio.Server | None] = [None] * size
        self.nodes: list[KvNode | None] = [None] * size

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"n{j}=http://127.0.0.1:{p}" for j, p in enumerate(self.ports))

    def _config(self, i: int) -> NodeConfig:
        return member_config(
            self.base / f"n{i}", f"n{i}", self.ports[i], self.initial_cluster,
            client_port=self.client_ports[i],
            # Small, so the tests also run log compaction and restart from a
            # compacted log (a restarted member stays within this margin).
            snapshot_count=15,
        )  # fmt: skip

    def _server(self, port: int = 0) -> tuple[grpc.aio.Server, int]:
        return peer_server(port)

    async def start(self) -> None:
        servers = []
        for _ in range(self.size):
            server, port = self._server()
            servers.append(server)
            self.ports.append(port)
            client, client_port = self._server()
            self.client_servers[len(self.client_ports)] = client
            self.client_ports.append(client_port)
        for i in range(self.size):
            await self._start_node(i, servers[i])

    async def _start_node(self, i: int, peer_server: grpc.aio.Server) -> None:
        """Start member i, with the etcd API servicers on its client server."""
        node = KvNode(self._config(i), peer_server=peer_server)
        await node.start()
        self.nodes[i] = node
        client = self.client_servers[i]
        if client is None:
            client, _ = self._server(self.client_ports[i])
            self.client_servers[i] = client
        add_servicers(client, node.kv)
        await client.start()

    async def restart(self, i: int) -> None:
        await self.stop_node(i)
        server, _ = self._server(self.ports[i])
        await self._start_node(i, server)

    async def stop_node(self, i: int) -> None:
        client = self.client_servers[i]
        if client is not None:
            await client.stop(grace=0.5)
            self.client_servers[i] = None
        node = self.nodes[i]
        if node is not None:
            await node.stop()
            self.nodes[i] = None

    async def stop(self) -> None:
        for i in range(self.size):
            await self.stop_node(i)

    def kv(self, i: int) -> Any:
        node = self.nodes[i]
        assert node is not None and node.kv is not None
        return node.kv

    async def leader(self, exclude: tuple[int, ...] = ()) -> int:
        def agreed() -> tuple[int] | None:
            live = [i for i, n in enumerate(self.nodes) if n is not None and i not in exclude]
            leaders = {self.kv(i).driver.leader_id for i in live}
            if len(leaders) != 1 or 0 in leaders:
                return None
            (lid,) = leaders
            idx = [i for i in live if self.kv(i).member_id == lid]
            return (idx[0],) if idx else None

        (idx,) = await async_wait_until(agreed, timeout=20, what="agreed leader")
        return idx


def run(tmp_path: Path, body: Callable[[InProcessCluster], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = InProcessCluster(tmp_path)
        try:
            await cluster.start()
            await body(cluster)
        finally:
            await cluster.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def put(key: bytes, value: bytes) -> Any:
    return rpc_pb2.PutRequest(key=key, value=value)


def get(key: bytes, **kw: Any) -> Any:
    return rpc_pb2.RangeRequest(key=key, **kw)
