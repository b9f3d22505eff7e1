"""Watch servicer (`etcdserverpb.Watch/Watch`): one bidi stream, many watches.

Owns: the gRPC side of a watch stream — a reader task that turns
WatchRequests into WatchStream create / cancel / progress calls, a writer
loop that sends the stream's queued responses — and etcd's require-leader
rule for streams (metadata `hasleader: true`): refuse the stream when the
member has no leader, and, through one `LeaderMonitor` per servicer (etcd's
`monitorLeader`), cancel it with Unavailable "etcdserver: no leader" once
the member has been without a leader for `NO_LEADER_CHECKS` consecutive
checks one election timeout apart. The Lease servicer's keepalive streams
use the same monitor type.
Never: reads MVCC itself or blocks the hub (the hub and the stream's
bounded outbox do the work; this only moves messages); never runs a
monitor task while no require-leader stream is open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from kvstore import errors
from kvstore.api.auth_gate import RequestAuth
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.seams import KvFacade
from kvstore.server.rpc_stats import counted
from kvstore.watch import WatchHub, WatchStream

log = logging.getLogger(__name__)

NO_LEADER_CHECKS = 3  # etcd maxNoLeaderCnt
DEFAULT_LEADER_CHECK_S = 1.0  # etcd checks once per election timeout (default 1 s)


def requires_leader(context: grpc.aio.ServicerContext) -> bool:
    """clientv3 `WithRequireLeader` sends metadata hasleader=true."""
    for key, value in context.invocation_metadata() or ():
        if key == "hasleader" and value == "true":
            return True
    return False


def leader_check_interval(kv: KvFacade, given: float | None) -> float:
    """The explicit interval, else the member's election timeout when the
    facade knows one (> 0), else etcd's default (1 s)."""
    if given is not None:
        return given
    value = kv.election_timeout_s
    return float(value) if value > 0 else DEFAULT_LEADER_CHECK_S


class LeaderMonitor:
    """etcd `monitorLeader` for the streams of one servicer.

    Every `interval_s` it asks `has_leader()`; after `checks` consecutive
    answers "no", it calls (once) the `on_lost` callback of every stream
    registered at that moment and forgets them, then starts counting again.
    The task runs only while some stream is registered."""

    def __init__(
        self, has_leader: Callable[[], bool], interval_s: float, checks: int = NO_LEADER_CHECKS
    ) -> None:
        self._has_leader = has_leader
        self.interval_s = interval_s
        self.checks = checks
        self._subs: dict[int, Callable[[], None]] = {}
        self._next = 0
        self._task: asyncio.Task[None] | None = None

    def register(self, on_lost: Callable[[], None]) -> Callable[[], None]:
        """Watch for leader loss on behalf of one stream; returns `unregister`."""
        token = self._next
        self._next += 1
        self._subs[token] = on_lost
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="require-leader-monitor"
            )

        def unregister() -> None:
            self._subs.pop(token, None)

        return unregister

    @property
    def streams(self) -> int:
        return len(self._subs)

    async def _run(self) -> None:
        misses = 0
        while self._subs:
            await asyncio.sleep(self.interval_s)
            if self._has_leader():
                misses = 0
                continue
            misses += 1
            if misses < self.checks:
                continue
            misses = 0
            lost, self._subs = list(self._subs.values()), {}
            log.warning("no leader for %d checks: canceling %d stream(s)", self.checks, len(lost))
            for on_lost in lost:
                try:
                    on_lost()
                except Exception:  # noqa: BLE001 - one stream must not stop the others
                    log.exception("require-leader cancel failed")


class WatchServicer(rpc_pb2_grpc.WatchServicer):
    """`kv` answers `has_leader`; `hub` is the node's WatchHub.

    `leader_check_s`: the require-leader check period (default: the
    member's election timeout if `kv` exposes `election_timeout_s`, else 1 s)."""

    def __init__(
        self,
        kv: KvFacade,
        hub: WatchHub,
        *,
        leader_check_s: float | None = None,
        auth: RequestAuth | None = None,
    ) -> None:
        self._kv = kv
        self._hub = hub
        self._auth = auth
        self.monitor = LeaderMonitor(
            lambda: bool(kv.has_leader), leader_check_interval(kv, leader_check_s)
        )

    @counted
    async def Watch(  # noqa: N802
        self,
        request_iterator: AsyncIterator[rpc_pb2.WatchRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[rpc_pb2.WatchResponse]:
        need_leader = requires_leader(context)
        if need_leader and not self._kv.has_leader:
            await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
        stream = self._hub.new_stream()
        lost_leader = False

        def on_lost() -> None:
            nonlocal lost_leader
            lost_leader = True
            stream.close()  # wakes `next()` below with None

        unregister = self.monitor.register(on_lost) if need_leader else None
        reader = asyncio.create_task(self._read(request_iterator, stream, context))
        try:
            while True:
                resp = await stream.next()
                if resp is not None:
                    yield resp
                    continue
                if lost_leader:
                    await context.abort(errors.NO_LEADER.code, errors.NO_LEADER.message)
                return
        finally:
            if unregister is not None:
                unregister()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            stream.close()

    async def _read(
        self,
        requests: AsyncIterator[rpc_pb2.WatchRequest],
        stream: WatchStream,
        context: grpc.aio.ServicerContext,
    ) -> None:
        auth = self._auth
        try:
            async for req in requests:
                kind = req.WhichOneof("request_union")
                if kind == "create_request":
                    if auth is not None:
                        refusal = auth.watch_refusal(context, req.create_request)
                        if refusal is not None:
                            # etcd 3.4: created + canceled, watch_id -1.
                            hub = self._hub
                            stream.push(rpc_pb2.WatchResponse(
                                header=hub.header(hub.current_revision), watch_id=-1,
                                created=True, canceled=True, cancel_reason=refusal,
                            ))  # fmt: skip
                            continue
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
