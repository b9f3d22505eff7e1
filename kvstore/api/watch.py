"""Watch servicer (`etcdserverpb.Watch/Watch`): one bidi stream, many watches.

Owns: the gRPC side of a watch stream — a reader task that turns
WatchRequests into WatchStream create / cancel / progress calls, a writer
loop that sends the stream's queued responses, and etcd's require-leader
rule (metadata `hasleader: true`: refuse the stream without a leader, and
cancel it with "etcdserver: no leader" once the member has been without
one for `NO_LEADER_CHECKS` consecutive checks, as etcd's monitorLeader).
Never: reads MVCC itself or blocks the hub (the hub and the stream's
bounded outbox do the work; this only moves messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore import errors
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.watch import WatchHub, WatchStream

log = logging.getLogger(__name__)

NO_LEADER_CHECKS = 3


def requires_leader(context: grpc.aio.ServicerContext) -> bool:
    """clientv3 `WithRequireLeader` sends metadata hasleader=true."""
    for key, value in context.invocation_metadata() or ():
        if key == "hasleader" and value == "true":
            return True
    return False


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    """`kv` answers `has_leader`; `hub` is the node's WatchHub."""

    def __init__(self, kv: Any, hub: WatchHub, *, leader_check_s: float = 1.0) -> None:
        self._kv = kv
        self._hub = hub
        self._leader_check_s = leader_check_s

    async def Watch(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        need_leader = requires_leader(context)
        if need_leader and not self._kv.has_leader:
            await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
        stream = self._hub.new_stream()
        reader = asyncio.create_task(self._read(request_iterator, stream))
        misses = 0
        try:
            while True:
                resp = await stream.next(self._leader_check_s if need_leader else None)
                if resp is not None:
                    yield resp
                    continue
                if stream.closed:
                    return
                if need_leader:
                    misses = 0 if self._kv.has_leader else misses + 1
                    if misses >= NO_LEADER_CHECKS:
                        await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            stream.close()

    async def _read(self, requests: AsyncIterator[Any], stream: WatchStream) -> None:
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    stream.create(req.create_request)
                elif kind == "cancel_request":
                    stream.cancel(req.cancel_request.watch_id)
                elif kind == "progress_request":
                    stream.request_progress()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - client went away mid-read
            log.debug("watch stream reader ended: %s", exc)
            stream.close()
        # A half-closed client still receives events (the JSON gateway does
        # this); the call ends when the client cancels it.
