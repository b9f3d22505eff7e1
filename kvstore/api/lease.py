"""Lease servicer (`etcdserverpb.Lease`): grant, revoke, keepalive, time-to-live, list.

Owns: the gRPC shape of the lease RPCs over the LeaseService facade:
unary calls through `grpc_errors` (etcd messages and codes), and the
LeaseKeepAlive bidi stream, which answers each request in order (TTL 0 for
an unknown lease) and ends the stream with the etcd error status when the
renewal cannot be served (no leader, leader unreachable).
Never: touches the lessor or Raft directly; never validates TTLs (the
facade clamps to the minimum and rejects too-large TTLs, as etcd does).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore import errors
from kvstore.api.errors import abort_with, grpc_errors
from kvstore.api.watch import requires_leader
from kvstore.pb import rpc_pb2, rpc_pb2_grpc

Context = grpc.aio.ServicerContext


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    """`leases` is a kvstore.lease.LeaseService; `kv` answers `has_leader`."""

    def __init__(self, kv: Any, leases: Any) -> None:
        self._kv = kv
        self._leases = leases

    @grpc_errors
    async def LeaseGrant(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._leases.grant(request)

    @grpc_errors
    async def LeaseRevoke(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._leases.revoke(request)

    @grpc_errors
    async def LeaseTimeToLive(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._leases.time_to_live(request)

    @grpc_errors
    async def LeaseLeases(self, request: Any, context: Context) -> Any:  # noqa: N802
        return self._leases.leases(request)

    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        if requires_leader(context) and not self._kv.has_leader:
            await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
        async for req in request_iterator:
            try:
                resp = await self._leases.keepalive(req.ID)
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - etcd status, or INTERNAL (logged)
                await abort_with(context, exc, "LeaseKeepAlive")
            yield resp
