"""KeepAliveForwarder: a follower's pipelined LeaseKeepAlive stream to the leader.

Owns: one long-lived LeaseKeepAlive stream to the current leader's client
URL, shared by every keepalive this follower forwards. Requests are written
in order and the leader answers a stream's requests in order, so responses
are matched to waiters first-in first-out (no per-request stream setup:
pipelined round trips instead of one new HTTP/2 stream per renewal).
Never: renews anything itself (only the leader's LeaderLeases does), or
keeps a stream to a member that is no longer the leader (a new target
replaces the stream and fails what was pending on the old one).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from dataclasses import dataclass, field
from typing import Any

import grpc

from kvstore import errors
from kvstore.pb import rpc_pb2, rpc_pb2_grpc

FORWARD_TIMEOUT_S = 5.0


def forward_error(exc: BaseException) -> errors.EtcdError:
    """A forwarded call's failure as an etcd error: the leader's own etcd error
    when it sent one, else "leader changed" (retryable)."""
    if isinstance(exc, errors.EtcdError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        details = exc.details() or ""
        if details.startswith("etcdserver:"):
            return errors.from_message(exc.code(), details)
    return errors.LEADER_CHANGED()


@dataclass(eq=False)
class _Stream:
    target: str
    call: Any
    pending: collections.deque[asyncio.Future[Any]] = field(default_factory=collections.deque)
    reader: asyncio.Task[None] | None = None
    dead: bool = False


class KeepAliveForwarder:
    def __init__(self, timeout_s: float = FORWARD_TIMEOUT_S) -> None:
        self._timeout_s = timeout_s
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stream: _Stream | None = None
        self._write_lock = asyncio.Lock()

    async def keepalive(self, target: str, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew `lease_id` through the leader at `target` ("host:port")."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        # Mark a failure as retrieved even if this waiter timed out already.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        async with self._write_lock:
            stream = self._stream
            if stream is None or stream.dead or stream.target != target:
                if stream is not None:
                    self._close(stream, errors.LEADER_CHANGED())
                stream = self._stream = self._open(target)
            stream.pending.append(fut)
            try:
                await stream.call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            except Exception as exc:  # noqa: BLE001 - the stream broke: fail its waiters
                self._close(stream, forward_error(exc))
        try:
            return await asyncio.wait_for(asyncio.shield(fut), self._timeout_s)
        except TimeoutError:
            # A stuck stream would delay every later renewal: start over.
            self._close(stream, errors.LEADER_CHANGED())
            raise errors.TIMEOUT() from None

    def _open(self, target: str) -> _Stream:
        channel = self._channels.get(target)
        if channel is None:
            channel = self._channels[target] = grpc.aio.insecure_channel(target)
        call = rpc_pb2_grpc.LeaseStub(channel).LeaseKeepAlive()
        stream = _Stream(target, call)
        stream.reader = asyncio.create_task(self._read(stream), name=f"keepalive-fwd-{target}")
        return stream

    async def _read(self, stream: _Stream) -> None:
        try:
            while True:
                resp = await stream.call.read()
                if resp is grpc.aio.EOF:
                    raise errors.LEADER_CHANGED()
                if stream.pending:
                    fut = stream.pending.popleft()
                    if not fut.done():
                        fut.set_result(resp)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped for every waiter
            self._close(stream, forward_error(exc))

    def _close(self, stream: _Stream, exc: errors.EtcdError) -> None:
        stream.dead = True
        while stream.pending:
            fut = stream.pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
        stream.call.cancel()
        if self._stream is stream:
            self._stream = None

    async def close(self) -> None:
        stream = self._stream
        if stream is not None:
            self._close(stream, errors.STOPPED())
            if stream.reader is not None:
                stream.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream.reader
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
