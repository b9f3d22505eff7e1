"""The peer client layer over real gRPC servers on 127.0.0.1 (port 0): channel
pool, per-call deadline, retry on UNAVAILABLE for idempotent calls only, error
mapping, leader resolution and forwarding to the leader."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace

import grpc
import pytest

from kvstore import errors
from kvstore.pb import rpc_pb2
from kvstore.testing.waiting import free_port
from kvstore.transport.forward import LEASE_KEEPALIVE, LeaderForwarder, LeaderResolver
from kvstore.transport.peer_client import (
    PeerCallError,
    PeerChannels,
    PeerClient,
    PeerDeadlineExceeded,
    PeerUnavailable,
    RetryPolicy,
    UnaryMethod,
)
from tests.transport.transport_harness import run

SERVICE = "kvstore.test.Peer"
READ: UnaryMethod[bytes, bytes] = UnaryMethod(f"/{SERVICE}/Call", None, idempotent=True)
WRITE: UnaryMethod[bytes, bytes] = UnaryMethod(f"/{SERVICE}/Call", None, idempotent=False)
FAST_RETRY = RetryPolicy(attempts=3, backoff_s=0.01, max_backoff_s=0.02)

Handler = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


class Server:
    """A peer answering `/kvstore.test.Peer/Call` with `handler`; counts calls."""

    def __init__(self, handler: Handler) -> None:
        self.calls = 0
        self._handler = handler
        self._server: grpc.aio.Server | None = None
        self.address = ""

    async def _call(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        self.calls += 1
        return await self._handler(request, context)

    async def __aenter__(self) -> Server:
        self._server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Call": grpc.unary_unary_rpc_method_handler(
                    self._call, request_deserializer=None, response_serializer=None
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        assert port
        self.address = f"127.0.0.1:{port}"
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.stop(grace=None)


def fails_then_answers(failures: int, code: grpc.StatusCode, details: str) -> Handler:
    """Abort the first `failures` calls with (code, details), then echo."""
    seen = 0

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal seen
        seen += 1
        if seen <= failures:
            await context.abort(code, details)
        return b"ok:" + request

    return handler


async def never_answers(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await asyncio.Event().wait()  # the scenario: a member that hangs
    raise AssertionError("unreachable")


def dead_address() -> str:
    return f"127.0.0.1:{free_port()}"


# --- channels -----------------------------------------------------------------------------


def test_shared_channels_are_cached_and_closed_by_the_pool() -> None:
    async def body() -> None:
        channels = PeerChannels(credentials=None)
        a = channels.channel("127.0.0.1:1")
        assert channels.channel("127.0.0.1:1") is a
        assert channels.channel("127.0.0.1:2") is not a
        own = channels.open("127.0.0.1:1")
        assert own is not a  # a caller-owned channel is never the shared one
        await own.close()
        await channels.close()
        with pytest.raises(RuntimeError, match="closed"):
            channels.channel("127.0.0.1:1")

    run(body)


def test_credentials_are_used_for_every_channel() -> None:
    """A TLS pool never falls back to plaintext: a plaintext member is not reached."""

    async def body() -> None:
        async with Server(fails_then_answers(0, grpc.StatusCode.OK, "")) as server:
            plain = PeerClient(PeerChannels(credentials=None))
            tls_channels = PeerChannels(credentials=grpc.ssl_channel_credentials())
            tls = PeerClient(tls_channels, retry=FAST_RETRY)
            assert not plain.channels.secure and tls_channels.secure
            assert await plain.unary(server.address, WRITE, b"x", timeout_s=5) == b"ok:x"
            with pytest.raises(PeerUnavailable):
                await tls.unary(server.address, WRITE, b"x", timeout_s=5)
            assert server.calls == 1  # the TLS attempt never reached the handler
            await plain.channels.close()
            await tls_channels.close()

    run(body)


# --- deadline ----------------------------------------------------------------------------


def test_deadline_bounds_the_call() -> None:
    async def body() -> None:
        async with Server(never_answers) as server:
            client = PeerClient(PeerChannels(credentials=None), retry=FAST_RETRY)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(PeerDeadlineExceeded) as exc:
                await client.unary(server.address, READ, b"x", timeout_s=0.3)
            elapsed = loop.time() - started
            assert exc.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert 0.25 <= elapsed < 3.0
            assert server.calls == 1  # a deadline is not retried
            await client.channels.close()

    run(body)


def test_deadline_covers_the_retries() -> None:
    """Retries of an unreachable member stop at the call's deadline."""

    async def body() -> None:
        slow_retry = RetryPolicy(attempts=100, backoff_s=0.2, max_backoff_s=0.2)
        client = PeerClient(PeerChannels(credentials=None), retry=slow_retry)
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(PeerCallError):
            await client.unary(dead_address(), READ, b"x", timeout_s=0.5)
        assert loop.time() - started < 3.0
        await client.channels.close()

    run(body)


# --- retries -----------------------------------------------------------------------------


def test_idempotent_call_is_retried_on_unavailable() -> None:
    async def body() -> None:
        handler = fails_then_answers(2, grpc.StatusCode.UNAVAILABLE, "busy")
        async with Server(handler) as server:
            client = PeerClient(PeerChannels(credentials=None), retry=FAST_RETRY)
            assert await client.unary(server.address, READ, b"r", timeout_s=5) == b"ok:r"
            assert server.calls == 3
            await client.channels.close()

    run(body)


def test_non_idempotent_call_is_tried_once() -> None:
    async def body() -> None:
        handler = fails_then_answers(1, grpc.StatusCode.UNAVAILABLE, "busy")
        async with Server(handler) as server:
            client = PeerClient(PeerChannels(credentials=None), retry=FAST_RETRY)
            with pytest.raises(PeerUnavailable) as exc:
                await client.unary(server.address, WRITE, b"w", timeout_s=5)
            assert (exc.value.code, exc.value.details) == (grpc.StatusCode.UNAVAILABLE, "busy")
            assert server.calls == 1
            await client.channels.close()

    run(body)


def test_other_errors_are_not_retried_even_when_idempotent() -> None:
    async def body() -> None:
        handler = fails_then_answers(1, grpc.StatusCode.NOT_FOUND, "etcdserver: member not found")
        async with Server(handler) as server:
            client = PeerClient(PeerChannels(credentials=None), retry=FAST_RETRY)
            with pytest.raises(PeerCallError) as exc:
                await client.unary(server.address, READ, b"r", timeout_s=5)
            assert type(exc.value) is PeerCallError
            assert exc.value.code == grpc.StatusCode.NOT_FOUND
            assert exc.value.details == "etcdserver: member not found"
            assert exc.value.target == server.address
            assert server.calls == 1
            await client.channels.close()

    run(body)


def test_retry_resolves_the_target_again() -> None:
    """An idempotent call to an unreachable member goes, on retry, wherever the
    target function points then (the leader may have moved)."""

    async def body() -> None:
        async with Server(fails_then_answers(0, grpc.StatusCode.OK, "")) as server:
            targets = iter([dead_address(), server.address])
            asked: list[str] = []

            def target() -> str:
                asked.append(next(targets))
                return asked[-1]

            client = PeerClient(PeerChannels(credentials=None), retry=FAST_RETRY)
            assert await client.unary(target, READ, b"t", timeout_s=5) == b"ok:t"
            assert asked[1] == server.address and len(asked) == 2
            assert server.calls == 1
            await client.channels.close()

    run(body)


# --- leader resolution and forwarding ----------------------------------------------------


def members(**urls: list[str]) -> dict[int, SimpleNamespace]:
    return {int(k[1:]): SimpleNamespace(client_urls=v) for k, v in urls.items()}


def test_leader_resolver() -> None:
    table = members(m1=["http://127.0.0.1:2379", "http://10.0.0.1:2379"], m2=[])
    leader = 0
    resolver = LeaderResolver(lambda: leader, table)
    assert resolver.leader_client_address() is None  # no leader
    with pytest.raises(errors.EtcdError) as exc:
        resolver.require()
    assert exc.value == errors.NO_LEADER()
    leader = 1
    assert resolver.leader_client_address() == "127.0.0.1:2379"  # the first client URL
    leader = 2
    assert resolver.leader_client_address() is None  # not published yet
    leader = 3
    assert resolver.leader_client_address() is None  # not in the table


def test_forwarder_follows_the_leader_and_maps_errors() -> None:
    async def answer_as(name: bytes) -> Handler:
        async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            if request == b"missing":
                await context.abort(grpc.StatusCode.NOT_FOUND, errors.MEMBER_NOT_FOUND.message)
            if request == b"hang":
                await asyncio.Event().wait()
            return name

        return handler

    async def body() -> None:
        async with (
            Server(await answer_as(b"one")) as one,
            Server(await answer_as(b"two")) as two,
        ):
            dead = dead_address()
            table = members(
                m1=[f"http://{one.address}"], m2=[f"http://{two.address}"], m3=[f"http://{dead}"]
            )
            leader = 1
            channels = PeerChannels(credentials=None)
            forwarder = LeaderForwarder(
                PeerClient(channels, retry=FAST_RETRY), LeaderResolver(lambda: leader, table)
            )
            assert await forwarder.unary(WRITE, b"x") == b"one"
            leader = 2
            assert await forwarder.unary(WRITE, b"x") == b"two"
            # The leader's own etcd error comes back byte-exact.
            with pytest.raises(errors.EtcdError) as exc:
                await forwarder.unary(WRITE, b"missing")
            assert exc.value == errors.MEMBER_NOT_FOUND()
            # A deadline is etcd's "request timed out"; both are retryable.
            with pytest.raises(errors.EtcdError) as exc:
                await forwarder.unary(WRITE, b"hang", timeout_s=0.3)
            assert exc.value == errors.TIMEOUT()
            # An unreachable leader is "leader changed".
            leader = 3
            with pytest.raises(errors.EtcdError) as exc:
                await forwarder.unary(WRITE, b"x")
            assert exc.value == errors.LEADER_CHANGED() and exc.value.retryable
            leader = 0
            with pytest.raises(errors.EtcdError) as exc:
                await forwarder.unary(WRITE, b"x")
            assert exc.value == errors.NO_LEADER()
            assert (one.calls, two.calls) == (1, 3)
            await forwarder.close()
            with pytest.raises(errors.EtcdError) as exc:
                await forwarder.unary(WRITE, b"x")
            assert exc.value == errors.STOPPED()
            await channels.close()

    run(body)


# --- pipelined streams -------------------------------------------------------------------


class KeepAliveServer:
    """A LeaseKeepAlive stream endpoint answering TTL=`ttl`; lease ID 0 hangs,
    lease ID 1 ends the stream with etcd's "no leader"."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self.streams = 0
        self._server: grpc.aio.Server | None = None
        self.url = ""

    async def _stream(
        self,
        requests: AsyncIterator[rpc_pb2.LeaseKeepAliveRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[rpc_pb2.LeaseKeepAliveResponse]:
        self.streams += 1
        async for req in requests:
            if req.ID == 0:
                await asyncio.Event().wait()
            if req.ID == 1:
                await context.abort(grpc.StatusCode.UNAVAILABLE, errors.NO_LEADER.message)
            yield rpc_pb2.LeaseKeepAliveResponse(ID=req.ID, TTL=self.ttl)

    async def __aenter__(self) -> KeepAliveServer:
        self._server = grpc.aio.server()
        handler = grpc.method_handlers_generic_handler(
            "etcdserverpb.Lease",
            {
                "LeaseKeepAlive": grpc.stream_stream_rpc_method_handler(
                    self._stream,
                    request_deserializer=rpc_pb2.LeaseKeepAliveRequest.FromString,
                    response_serializer=rpc_pb2.LeaseKeepAliveResponse.SerializeToString,
                )
            },
        )
        self._server.add_generic_rpc_handlers((handler,))
        port = self._server.add_insecure_port("127.0.0.1:0")
        assert port
        self.url = f"http://127.0.0.1:{port}"
        await self._server.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        await self._server.stop(grace=None)


def test_pipelined_requests_share_one_stream_that_follows_the_leader() -> None:
    async def body() -> None:
        async with KeepAliveServer(ttl=10) as one, KeepAliveServer(ttl=20) as two:
            leader = 1
            table = members(m1=[one.url], m2=[two.url])
            channels = PeerChannels(credentials=None)
            forwarder = LeaderForwarder(
                PeerClient(channels), LeaderResolver(lambda: leader, table)
            )

            async def ask(lease_id: int, timeout_s: float | None = None) -> tuple[int, int]:
                req = rpc_pb2.LeaseKeepAliveRequest(ID=lease_id)
                resp = await forwarder.pipelined(LEASE_KEEPALIVE, req, timeout_s=timeout_s)
                return resp.ID, resp.TTL

            ids = list(range(100, 150))
            assert await asyncio.gather(*(ask(i) for i in ids)) == [(i, 10) for i in ids]
            assert one.streams == 1  # fifty requests, one stream
            leader = 2
            assert await ask(7) == (7, 20)  # a new leader: a new stream there
            assert (one.streams, two.streams) == (1, 1)
            # The leader ends the stream with its etcd error: passed on as is.
            with pytest.raises(errors.EtcdError) as exc:
                await ask(1)
            assert exc.value == errors.NO_LEADER()
            # No answer in time: "request timed out", and the stuck stream is dropped.
            with pytest.raises(errors.EtcdError) as exc:
                await ask(0, timeout_s=0.3)
            assert exc.value == errors.TIMEOUT()
            assert await ask(8) == (8, 20)
            assert two.streams == 3
            await forwarder.close()
            await channels.close()

    run(body)
