"""Resumable watches: an async iterator of events that survives member loss.

Owns: one Watch stream per `Watcher`, and the resume point `next_revision`
(the revision of the first event not yet delivered).

Invariants:
  * events are delivered in revision order, each exactly once: after a broken
    stream (UNAVAILABLE, stream end, "no leader" cancellation) the watcher
    reopens on another endpoint with `start_revision = next_revision`, and
    drops any event below `next_revision` a server might still send;
  * a start revision that was compacted raises `CompactedError` carrying
    `compact_revision`; the watcher never silently skips history;
  * the stream is opened with metadata hasleader=true (clientv3
    WithRequireLeader), so a member that lost its leader cancels it instead of
    leaving the watcher silently stale.

Must never: retry a server-side cancellation other than "no leader" (a
compaction or a rejected request would loop forever).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from typing import TYPE_CHECKING

import grpc

from kvstore.client import _convert
from kvstore.client._transport import REQUIRE_LEADER, stream_write
from kvstore.client.auth import auth_expired, cancel_reason_auth_expired
from kvstore.client.errors import (
    ClientError,
    CompactedError,
    ConnectionFailedError,
    InvalidAuthTokenError,
    WatchCanceledError,
    from_rpc_error,
    from_status,
)
from kvstore.client.types import Event
from kvstore.pb import rpc_pb2

if TYPE_CHECKING:
    from kvstore.client._transport import Transport

_NO_LEADER = "etcdserver: no leader"


# Bounded (in responses): a slow consumer stops the pump -> gRPC flow control.
_QUEUE_RESPONSES = 1024


class _End:
    """Queue sentinel carrying the exception that ended the watch (or None)."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error


class Watcher:
    """Async iterator of `Event`s for a key or range; also an async context manager.

    Example::

        async with client.watch(b"/config/", prefix=True) as watcher:
            async for event in watcher:
                print(event.type.name, event.key, event.value)

    `created_revision` is the store revision when the watch was created.
    `reconnects` counts how often the stream was reopened on another member.
    A background task (owned here, cancelled by `aclose`) reads the stream
    into a bounded queue, so waiting on the iterator with a timeout never
    disturbs the stream.
    """

    def __init__(
        self,
        transport: Transport,
        key: bytes,
        range_end: bytes,
        *,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: tuple[int, ...] = (),
        progress_notify: bool = False,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self._transport = transport
        self._key = key
        self._range_end = range_end
        self._prev_kv = prev_kv
        self._filters = filters
        self._progress_notify = progress_notify
        self._reconnect_timeout = reconnect_timeout
        self.next_revision = start_revision
        self.created_revision = 0
        self.reconnects = 0
        self.endpoint: str | None = None
        self._call: grpc.aio.StreamStreamCall | None = None
        self._metadata: tuple[tuple[str, str], ...] = ()  # of the open stream (its token)
        # One item per WatchResponse: whole revisions (etcd and kvstore never
        # split a revision across responses unless the watch asked to fragment).
        self._queue: asyncio.Queue[list[Event] | _End] = asyncio.Queue(_QUEUE_RESPONSES)
        self._pending: collections.deque[Event] = collections.deque()
        self._pump: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # --- lifecycle -------------------------------------------------------------

    async def start(self) -> Watcher:
        """Open the stream and wait until the server confirms the watch.

        After `start()` returns, every later write in the range is delivered."""
        if not self._started:
            self._started = True
            await self._open(exclude=None)
            self._pump = asyncio.get_running_loop().create_task(self._run_pump())
        return self

    async def aclose(self) -> None:
        self._closed = True
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        self._cancel_call()

    async def __aenter__(self) -> Watcher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> Event:
        if not self._pending:
            self._pending.extend(await self.next_batch())
        return self._pending.popleft()

    async def next_batch(self) -> list[Event]:
        """The events of the next response: one or more WHOLE revisions, in
        order (never part of a revision, so a transaction is seen at once).

        Raises StopAsyncIteration when closed, or the error that ended the
        watch (CompactedError ...). Do not mix with `async for` midway: events
        already taken by the iterator are returned first."""
        if not self._started:
            await self.start()
        if self._pending:
            batch = list(self._pending)
            self._pending.clear()
            return batch
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, _End):
            self._closed = True
            self._queue.put_nowait(item)  # later calls see the same end
            if item.error is not None:
                raise item.error
            raise StopAsyncIteration
        return item

    # --- stream handling ---------------------------------------------------------

    def _cancel_call(self) -> None:
        if self._call is not None:
            self._call.cancel()
            self._call = None

    async def _run_pump(self) -> None:
        try:
            while True:
                events = await self._receive()
                if events:
                    await self._queue.put(events)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            await self._queue.put(_End(exc))

    async def _open(self, exclude: str | None) -> None:
        """(Re)open the stream at `next_revision`; returns after `created`."""
        deadline = time.monotonic() + self._reconnect_timeout
        auth_refreshes = 0
        while True:
            try:
                await self._open_once(exclude)
                return
            except ClientError as err:
                if auth_expired(err) and auth_refreshes < 3:
                    # Token expired or unknown to this member: a new one, same member.
                    auth_refreshes += 1
                    if await self._transport.refresh_token(self._metadata):
                        continue
                if not (err.retryable or isinstance(err, ConnectionFailedError)):
                    raise
                if self.endpoint is not None:
                    self._transport.endpoint_failed(self.endpoint)
                    exclude = self.endpoint
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)  # backoff between reconnection attempts

    async def _open_once(self, exclude: str | None) -> None:
        self._cancel_call()
        ep = await self._transport.connect(exclude=exclude)
        self.endpoint = ep
        stub = self._transport.stub(ep, "Watch")
        self._metadata = await self._transport.call_metadata(REQUIRE_LEADER)
        call = stub.Watch(metadata=self._metadata)
        self._call = call
        create = rpc_pb2.WatchCreateRequest(
            key=self._key,
            range_end=self._range_end,
            start_revision=max(self.next_revision, 0),
            prev_kv=self._prev_kv,
            filters=list(self._filters),
            progress_notify=self._progress_notify,
        )
        try:
            await stream_write(call, rpc_pb2.WatchRequest(create_request=create))
            while True:
                resp = await call.read()
                if resp is grpc.aio.EOF:
                    raise ClientError("watch stream ended", grpc.StatusCode.UNAVAILABLE)
                self._check_canceled(resp)
                if resp.created:
                    if self.next_revision <= 0:
                        # start_revision 0 = "after the current revision".
                        self.next_revision = resp.header.revision + 1
                    if not self.created_revision:
                        self.created_revision = resp.header.revision
                    return
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None

    def _check_canceled(self, resp: rpc_pb2.WatchResponse) -> None:
        if not resp.canceled:
            return
        if resp.compact_revision:
            raise CompactedError(compact_revision=resp.compact_revision)
        if resp.cancel_reason == _NO_LEADER:
            raise from_status(grpc.StatusCode.UNAVAILABLE, _NO_LEADER)  # -> reconnect
        if cancel_reason_auth_expired(resp.cancel_reason):
            raise InvalidAuthTokenError(resp.cancel_reason, grpc.StatusCode.UNAUTHENTICATED)
        raise WatchCanceledError(resp.cancel_reason or "watch canceled by the server")

    async def _receive(self) -> list[Event]:
        """Read one response; reconnect (returning []) when the stream breaks."""
        try:
            if self._call is None:
                raise ClientError("watch stream not open", grpc.StatusCode.UNAVAILABLE)
            try:
                resp = await self._call.read()
            except grpc.aio.AioRpcError as exc:
                raise from_rpc_error(exc) from None
            if resp is grpc.aio.EOF:
                raise ClientError("watch stream ended", grpc.StatusCode.UNAVAILABLE)
            self._check_canceled(resp)
        except ClientError as err:
            if auth_expired(err) and await self._transport.refresh_token(self._metadata):
                self.reconnects += 1
                await self._open(exclude=None)  # same member, new token
                return []
            if not (err.retryable or isinstance(err, ConnectionFailedError)):
                raise
            await self._reconnect()
            return []
        if not resp.events:
            # Progress notification: every event <= header.revision was sent.
            if resp.header.revision and not resp.created:
                self.next_revision = max(self.next_revision, resp.header.revision + 1)
            return []
        fresh = [e for e in _convert.events(resp) if e.revision >= self.next_revision]
        if fresh:
            self.next_revision = fresh[-1].revision + 1
        return fresh

    async def _reconnect(self) -> None:
        failed = self.endpoint
        if failed is not None:
            self._transport.endpoint_failed(failed)
        self.reconnects += 1
        await self._open(exclude=failed)
