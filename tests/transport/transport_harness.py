"""Shared harness for the GrpcTransport tests: a transport with its own peer
gRPC server on 127.0.0.1 that records what it receives, and `run()`, which
gives every test its own event loop with an overall timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from kvstore.raft.types import Message
from kvstore.transport import SERVER_OPTIONS, GrpcTransport
from kvstore.transport.peer_client import PeerChannels

CLUSTER = 0xC1


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    async def main() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)

    return asyncio.run(main())


class Member:
    """A transport plus its own peer gRPC server, recording what it receives."""

    def __init__(self, member_id: int, cluster_id: int = CLUSTER, **kw: Any) -> None:
        self.id = member_id
        self.received: list[Message] = []
        self.batches = 0
        self.unreachable: list[int] = []
        self.removed_calls = 0
        self.transport = GrpcTransport(
            member_id,
            cluster_id,
            self._on_messages,
            channels=PeerChannels(credentials=None),
            on_unreachable=self.unreachable.append,
            **kw,
        )
        self.transport.on_removed = self._on_removed
        self.server: grpc.aio.Server | None = None
        self.port = 0

    def _on_messages(self, msgs: list[Message]) -> None:
        self.batches += 1
        self.received.extend(msgs)

    def _on_removed(self) -> None:
        self.removed_calls += 1

    async def serve(self, port: int = 0) -> None:
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.transport.add_to_server(self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port, "could not bind"
        await self.server.start()

    async def kill_server(self) -> None:
        assert self.server is not None
        await self.server.stop(grace=None)
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def close(self) -> None:
        await self.transport.stop()
        if self.server is not None:
            await self.kill_server()
