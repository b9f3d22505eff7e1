"""EXPERIMENTAL: gRPC and the HTTP/1.1 gateway on one port (etcd's cmux).

Owns: `SharedPortListener`, a TCP listener that looks at the first bytes of
each connection: the HTTP/2 client preface -> the connection is piped to the
gRPC server's private unix socket; anything else -> handed to the aiohttp
gateway's protocol on the same socket (no copy).
Never: parses HTTP/2 or touches gRPC frames; keeps unbounded buffers (each
direction pauses reading while the other side's write buffer is full).

Why experimental: grpcio cannot adopt an accepted socket nor serve
HTTP/1.1, so every gRPC byte crosses this process's event loop twice
(client -> pipe -> grpc core). Measured with benchmarks/kv_bench.py
(interleaved A/B, see README "HTTP/JSON gateway"): it costs gRPC throughput
more than the 5 % budget, so the gateway is served on etcd 3.5's
--listen-client-http-urls instead, and this is only enabled with
KVSTORE_EXPERIMENTAL_SHARED_CLIENT_PORT=1 (kept to re-measure).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from typing import Any

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ENV_VAR = "KVSTORE_EXPERIMENTAL_SHARED_CLIENT_PORT"


def experimental_shared_socket() -> str:
    """The unix socket path the gRPC server should listen on instead of the
    client URLs when ENV_VAR=1 (a fresh private directory); "" otherwise."""
    if os.environ.get(ENV_VAR, "") != "1":
        return ""
    return os.path.join(tempfile.mkdtemp(prefix="kvstore-grpc-"), "grpc.sock")


class _Pipe(asyncio.Protocol):
    """One direction's receiver: writes what it gets to `peer`."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self._pending.append(data)

    def flush_to_peer(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            for data in self._pending:
                self.peer.transport.write(data)
        self._pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    # Back-pressure: our transport's buffer is full -> stop reading the peer.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Sniffer(asyncio.Protocol):
    def __init__(self, grpc_unix_path: str, http_protocol: Callable[[], asyncio.Protocol]) -> None:
        self._grpc_path = grpc_unix_path
        self._http_protocol = http_protocol
        self._transport: asyncio.Transport | None = None
        self._buf = b""
        self._decided = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._decided:
            self._buf += data  # only while the gRPC side connects
            return
        self._buf += data
        n = min(len(self._buf), len(H2_PREFACE))
        if self._buf[:n] != H2_PREFACE[:n]:
            self._decided = True
            self._to_http()
        elif n == len(H2_PREFACE):
            self._decided = True
            assert self._transport is not None
            self._transport.pause_reading()
            asyncio.get_running_loop().create_task(self._to_grpc())

    def _to_http(self) -> None:
        assert self._transport is not None
        proto = self._http_protocol()
        self._transport.set_protocol(proto)
        proto.connection_made(self._transport)
        proto.data_received(self._buf)
        self._buf = b""

    async def _to_grpc(self) -> None:
        client = self._transport
        assert client is not None
        front = _Pipe()
        front.connection_made(client)
        try:
            _, back = await asyncio.get_running_loop().create_unix_connection(
                _Pipe, self._grpc_path
            )
        except OSError:
            client.close()
            return
        front.peer, back.peer = back, front
        front._pending.append(self._buf)
        self._buf = b""
        client.set_protocol(front)
        front.flush_to_peer()
        back.flush_to_peer()  # grpc may have answered before the link was made
        client.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        return None


class SharedPortListener:
    """Listen on (host, port); HTTP/2 -> `grpc_unix_path`, HTTP/1.x -> aiohttp."""

    def __init__(self, grpc_unix_path: str, http_protocol: Callable[[], Any]) -> None:
        self._grpc_path = grpc_unix_path
        self._http_protocol = http_protocol
        self._servers: list[asyncio.base_events.Server] = []

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Sniffer(self._grpc_path, self._http_protocol), host, port, reuse_address=True
        )
        self._servers.append(server)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2)
        self._servers.clear()
