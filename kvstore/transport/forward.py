"""Forwarding to the leader: the one way a follower runs a leader-only call.

Owns: `LeaderResolver`, the one lookup of the leader's address (its first
published client URL, from the member table); `LeaderForwarder`, which sends a
unary call (`unary`) or one request of a pipelined stream (`pipelined`) to
that address through the peer client layer and turns every failure into the
etcd error a client of this member must see (`forward_error`, the one
mapping); the descriptors of the calls that are forwarded (lease keepalive and
time-to-live, the Cluster membership RPCs), and `LeaseForwarding`, the lease
service's view of them.

Never: decides WHETHER to forward (the caller knows its role); retries a call
that may have changed state (only idempotent methods are retried, by
`PeerClient`); keeps a stream to a member that is no longer the leader (a new
target replaces the stream and fails what was pending on the old one); closes
the channels (the pool's owner does).

Pipelined streams: requests of one method share ONE long-lived stream to the
leader. They are written in order and the leader answers a stream's requests
in order, so answers are matched to waiters first-in first-out (no per-request
stream setup: pipelined round trips instead of one new HTTP/2 stream each).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar, cast

import grpc

from kvstore import errors
from kvstore.pb import rpc_pb2
from kvstore.seams import MemberDirectory
from kvstore.transport.peer_client import (
    PeerCallError,
    PeerClient,
    PeerDeadlineExceeded,
    StreamMethod,
    UnaryMethod,
    map_rpc_error,
    serialize,
)

FORWARD_TIMEOUT_S = 5.0

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# --- the forwarded calls -----------------------------------------------------------------

LEASE_KEEPALIVE: StreamMethod[rpc_pb2.LeaseKeepAliveRequest, rpc_pb2.LeaseKeepAliveResponse] = (
    StreamMethod("/etcdserverpb.Lease/LeaseKeepAlive", rpc_pb2.LeaseKeepAliveResponse.FromString)
)
LEASE_TIME_TO_LIVE: UnaryMethod[rpc_pb2.LeaseTimeToLiveRequest, rpc_pb2.LeaseTimeToLiveResponse] = (
    UnaryMethod(
        "/etcdserverpb.Lease/LeaseTimeToLive",
        rpc_pb2.LeaseTimeToLiveResponse.FromString,
        idempotent=True,
    )
)
# Membership changes are not idempotent (a MemberAdd sent twice adds twice).
MEMBER_ADD: UnaryMethod[rpc_pb2.MemberAddRequest, rpc_pb2.MemberAddResponse] = UnaryMethod(
    "/etcdserverpb.Cluster/MemberAdd", rpc_pb2.MemberAddResponse.FromString, idempotent=False
)
MEMBER_REMOVE: UnaryMethod[rpc_pb2.MemberRemoveRequest, rpc_pb2.MemberRemoveResponse] = UnaryMethod(
    "/etcdserverpb.Cluster/MemberRemove",
    rpc_pb2.MemberRemoveResponse.FromString,
    idempotent=False,
)
MEMBER_UPDATE: UnaryMethod[rpc_pb2.MemberUpdateRequest, rpc_pb2.MemberUpdateResponse] = UnaryMethod(
    "/etcdserverpb.Cluster/MemberUpdate",
    rpc_pb2.MemberUpdateResponse.FromString,
    idempotent=False,
)
MEMBER_PROMOTE: UnaryMethod[rpc_pb2.MemberPromoteRequest, rpc_pb2.MemberPromoteResponse] = (
    UnaryMethod(
        "/etcdserverpb.Cluster/MemberPromote",
        rpc_pb2.MemberPromoteResponse.FromString,
        idempotent=False,
    )
)


# --- the leader's address ----------------------------------------------------------------


class LeaderResolver:
    """Where the leader serves clients: "host:port" of its first published
    client URL (members publish them through Raft once they run), or None
    while there is no leader or it has not published yet."""

    def __init__(self, leader_id: Callable[[], int], members: MemberDirectory) -> None:
        self._leader_id = leader_id
        self._members = members

    def leader_client_address(self) -> str | None:
        leader = self._leader_id()
        member = self._members.get(leader) if leader else None
        if member is None or not member.client_urls:
            return None
        return member.client_urls[0].split("://", 1)[-1]

    def require(self) -> str:
        """The leader's address; etcd's "no leader" (retryable) when unknown."""
        address = self.leader_client_address()
        if address is None:
            raise errors.NO_LEADER()
        return address


# --- the one error mapping ---------------------------------------------------------------


def forward_error(exc: BaseException) -> errors.EtcdError:
    """A forwarded call's failure as the etcd error this member answers.

    The leader's own etcd error when it sent one (byte-exact); "request timed
    out" when the deadline passed; otherwise "leader changed" (the leader was
    not reached, went away, or is no longer the leader). All but the first are
    UNAVAILABLE, which clients retry."""
    if isinstance(exc, errors.EtcdError):
        return exc
    if isinstance(exc, grpc.aio.AioRpcError):
        exc = map_rpc_error("leader", exc)
    if isinstance(exc, PeerCallError):
        if exc.details.startswith("etcdserver:"):
            return errors.from_message(exc.code, exc.details)
        if isinstance(exc, PeerDeadlineExceeded):
            return errors.TIMEOUT()
    return errors.LEADER_CHANGED()


# --- the forwarder -----------------------------------------------------------------------


@dataclass(eq=False)
class _Stream:
    target: str
    call: grpc.aio.StreamStreamCall
    pending: collections.deque[asyncio.Future[object]] = field(default_factory=collections.deque)
    reader: asyncio.Task[None] | None = None
    dead: bool = False


class LeaderForwarder:
    """Leader-only calls made on a follower's behalf; every method runs in the loop."""

    def __init__(
        self,
        client: PeerClient,
        resolver: LeaderResolver,
        *,
        timeout_s: float = FORWARD_TIMEOUT_S,
    ) -> None:
        self._client = client
        self.resolver = resolver
        self._timeout_s = timeout_s
        self._streams: dict[str, _Stream] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._closed = False

    async def unary(
        self,
        method: UnaryMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float | None = None,
    ) -> Resp:
        """Call `method` on the leader; raises errors.EtcdError (see forward_error).
        An idempotent method is retried on UNAVAILABLE, each attempt going to
        the leader known at that moment."""
        if self._closed:
            raise errors.STOPPED()
        try:
            return await self._client.unary(
                self.resolver.require,
                method,
                request,
                timeout_s=self._timeout_s if timeout_s is None else timeout_s,
            )
        except (PeerCallError, grpc.aio.AioRpcError) as exc:
            raise forward_error(exc) from exc

    async def pipelined(
        self,
        method: StreamMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float | None = None,
    ) -> Resp:
        """Send `request` on the method's shared stream to the leader and wait for
        its answer; raises errors.EtcdError (TIMEOUT when no answer in time)."""
        if self._closed:
            raise errors.STOPPED()
        target = self.resolver.require()
        fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        # Mark a failure as retrieved even if this waiter timed out already.
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        lock = self._locks.setdefault(method.path, asyncio.Lock())
        async with lock:
            stream = self._streams.get(method.path)
            if stream is None or stream.dead or stream.target != target:
                if stream is not None:
                    self._fail(stream, errors.LEADER_CHANGED())
                stream = self._open(method, target)
            stream.pending.append(fut)
            try:
                await stream.call.write(request)
            except Exception as exc:  # noqa: BLE001 - the stream broke: fail its waiters
                self._fail(stream, forward_error(exc))
        try:
            answer = await asyncio.wait_for(
                asyncio.shield(fut), self._timeout_s if timeout_s is None else timeout_s
            )
            return cast(Resp, answer)  # decoded by the method's own `decode`
        except TimeoutError:
            # A stuck stream would delay every later request: start over.
            self._fail(stream, errors.LEADER_CHANGED())
            raise errors.TIMEOUT() from None

    def _open(self, method: StreamMethod[Req, Resp], target: str) -> _Stream:
        call = self._client.channels.channel(target).stream_stream(
            method.path,
            request_serializer=serialize,
            response_deserializer=method.decode,
        )()
        stream = self._streams[method.path] = _Stream(target, call)
        stream.reader = asyncio.get_running_loop().create_task(
            self._read(stream), name=f"forward-{method.path}-{target}"
        )
        return stream

    async def _read(self, stream: _Stream) -> None:
        try:
            while True:
                answer = await stream.call.read()
                if answer is grpc.aio.EOF:
                    raise errors.LEADER_CHANGED()
                if stream.pending:
                    fut = stream.pending.popleft()
                    if not fut.done():
                        fut.set_result(answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped for every waiter
            self._fail(stream, forward_error(exc))

    def _fail(self, stream: _Stream, exc: errors.EtcdError) -> None:
        stream.dead = True
        while stream.pending:
            fut = stream.pending.popleft()
            if not fut.done():
                fut.set_exception(exc)
        stream.call.cancel()
        for path, current in list(self._streams.items()):
            if current is stream:
                del self._streams[path]

    async def close(self) -> None:
        """Fail pending requests with "server stopped" and end the streams."""
        self._closed = True
        streams = list(self._streams.values())
        for stream in streams:
            self._fail(stream, errors.STOPPED())
        for stream in streams:
            if stream.reader is not None:
                stream.reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await stream.reader


class LeaseForwarding:
    """The lease service's forwarding (kvstore.lease.service.LeaseForwarder)."""

    def __init__(self, forwarder: LeaderForwarder) -> None:
        self._forwarder = forwarder

    async def keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        return await self._forwarder.pipelined(
            LEASE_KEEPALIVE, rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
        )

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self._forwarder.unary(LEASE_TIME_TO_LIVE, req)


__all__ = [
    "FORWARD_TIMEOUT_S",
    "LEASE_KEEPALIVE",
    "LEASE_TIME_TO_LIVE",
    "MEMBER_ADD",
    "MEMBER_PROMOTE",
    "MEMBER_REMOVE",
    "MEMBER_UPDATE",
    "LeaderForwarder",
    "LeaderResolver",
    "LeaseForwarding",
    "MemberDirectory",
    "forward_error",
]
