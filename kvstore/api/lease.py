"""Lease servicer (`etcdserverpb.Lease`): grant, revoke, keepalive, time-to-live, list.

Owns: the gRPC shape of the lease RPCs over the LeaseService facade:
unary calls through `grpc_errors` (etcd messages and codes), and the
LeaseKeepAlive bidi stream, which answers each request in order (TTL 0 for
an unknown lease; up to KEEPALIVE_WINDOW renewals of a stream in progress
at once, so renewals that wait on Raft share one proposal) and ends the
stream with the etcd error status when the renewal cannot be served (no
leader, leader unreachable), or — for streams opened with `hasleader: true`
— when the member has lost its leader for three election timeouts (etcd's
monitorLeader, see api/watch.py).
Never: touches the lessor or Raft directly; never validates TTLs (the
facade clamps to the minimum and rejects too-large TTLs, as etcd does).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore import errors
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import abort_with, grpc_errors
from kvstore.api.watch import LeaderMonitor, leader_check_interval, requires_leader
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.seams import KvFacade, LeaseFacade
from kvstore.server.rpc_stats import counted

Context = grpc.aio.ServicerContext


class LeaseServicer(rpc_pb2_grpc.LeaseServicer):
    """`leases` is a kvstore.lease.LeaseService; `kv` answers `has_leader`."""

    def __init__(
        self,
        kv: KvFacade,
        leases: LeaseFacade,
        *,
        leader_check_s: float | None = None,
        auth: RequestAuth | None = None,
    ) -> None:
        self._kv = kv
        self._auth = auth
        self._leases = leases
        self.monitor = LeaderMonitor(
            lambda: bool(kv.has_leader), leader_check_interval(kv, leader_check_s)
        )

    @grpc_errors
    async def LeaseGrant(  # noqa: N802
        self, request: rpc_pb2.LeaseGrantRequest, context: Context
    ) -> rpc_pb2.LeaseGrantResponse:
        return await self._leases.grant(request)

    @grpc_errors
    async def LeaseRevoke(  # noqa: N802
        self, request: rpc_pb2.LeaseRevokeRequest, context: Context
    ) -> rpc_pb2.LeaseRevokeResponse:
        if self._auth is not None:
            self._auth.bind(context)  # WRITE on every attached key, at apply
        return await self._leases.revoke(request)

    @grpc_errors
    async def LeaseTimeToLive(  # noqa: N802
        self, request: rpc_pb2.LeaseTimeToLiveRequest, context: Context
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._leases.time_to_live(request)

    @grpc_errors
    async def LeaseLeases(  # noqa: N802
        self, request: rpc_pb2.LeaseLeasesRequest, context: Context
    ) -> rpc_pb2.LeaseLeasesResponse:
        return self._leases.leases(request)

    @counted
    async def LeaseKeepAlive(  # noqa: N802
        self, request_iterator: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest], context: Context
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        need_leader = requires_leader(context)
        if need_leader and not self._kv.has_leader:
            await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
        # A reader task feeds a bounded queue so the leader monitor can end
        # the stream while it waits for the client's next request. Renewals
        # of one stream run concurrently (up to KEEPALIVE_WINDOW) and are
        # answered in request order: a renewal that must first clear a
        # checkpoint through Raft then batches with the ones behind it
        # instead of costing each a Raft round trip in turn.
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=KEEPALIVE_QUEUE)
        pending: collections.deque[asyncio.Future[rpc_pb2.LeaseKeepAliveResponse]] = (
            collections.deque()
        )
        lost_leader = False

        def on_lost() -> None:
            nonlocal lost_leader
            lost_leader = True
            for fut in pending:
                fut.cancel()
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(_LOST)  # a full queue is checked via the flag

        unregister = self.monitor.register(on_lost) if need_leader else None
        reader = asyncio.create_task(_feed(request_iterator, queue))
        ended = False
        try:
            while True:
                while not ended and len(pending) < KEEPALIVE_WINDOW:
                    if pending and queue.empty():
                        break  # answer what is in flight before waiting for more
                    req = await queue.get()
                    if lost_leader or req is _LOST:
                        await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
                    if req is _END:
                        ended = True
                    else:
                        fut = asyncio.ensure_future(self._leases.keepalive(req.ID))
                        fut.add_done_callback(_retrieve)
                        pending.append(fut)
                if not pending:
                    return  # half-closed and every renewal answered
                try:
                    resp = await pending.popleft()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if lost_leader and task is not None and not task.cancelling():
                        await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
                    raise
                except grpc.aio.AbortError:
                    raise
                except Exception as exc:  # noqa: BLE001 - etcd status, or INTERNAL (logged)
                    await abort_with(context, exc, "LeaseKeepAlive")
                yield resp
        finally:
            if unregister is not None:
                unregister()
            for waiting in pending:
                waiting.cancel()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader


_END = object()  # the client half-closed (or its stream broke)
_LOST = object()  # the leader monitor gave up on this member's leader
KEEPALIVE_QUEUE = 1024  # requests read ahead of the renewals being answered
KEEPALIVE_WINDOW = 256  # renewals of one stream in progress at once


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a renewal's failure as seen even when the stream ended before it."""
    if not fut.cancelled():
        fut.exception()


async def _feed(requests: AsyncIterator[Any], queue: asyncio.Queue[Any]) -> None:
    try:
        async for req in requests:
            await queue.put(req)
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001, S110 - the client went away: end the stream
        pass
    await queue.put(_END)
