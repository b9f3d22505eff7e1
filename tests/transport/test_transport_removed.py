"""etcd's removed-member handshake in GrpcTransport, over real gRPC on 127.0.0.1.

A member whose id is in a peer's removed set (`set_removed`) has its stream
refused with FAILED_PRECONDITION + MEMBER_REMOVED (etcd's rafthttp: HTTP 410),
and its sender reports that once through `on_removed()`. An id the peer merely
does not know yet (a member being added) is accepted. Waits are conditions with
deadlines (async_wait_until), never sleeps.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest
from transport_harness import CLUSTER, Member, run  # noqa: E402

from kvstore.pb import raftpb_pb2 as pb
from kvstore.pb import raftpb_pb2_grpc as pb_grpc
from kvstore.raft.types import Message, MessageType
from kvstore.testing.waiting import async_wait_until
from kvstore.transport import MEMBER_REMOVED


def heartbeat(sender: int, to: int, term: int = 1) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=sender, term=term)


async def pair() -> tuple[Member, Member]:
    a, b = Member(1), Member(2)
    await a.serve()
    await b.serve()
    return a, b


def test_removed_sender_is_refused_and_told_once() -> None:
    async def body() -> None:
        a, b = await pair()
        try:
            b.transport.set_removed({1, 7})
            a.transport.set_peers({2: b.url})
            await a.transport.start()
            a.transport.send([heartbeat(1, 2)])
            await async_wait_until(lambda: a.removed_calls == 1, what="on_removed fired")
            assert a.transport.told_removed
            assert MEMBER_REMOVED in a.transport.stats(2).last_error
            assert "FAILED_PRECONDITION" in a.transport.stats(2).last_error
            assert not a.transport.reachable(2)
            assert b.received == []
            # The sender keeps retrying and is refused again, but reports only once.
            await async_wait_until(
                lambda: b.transport.rejected_removed >= 3, what="further refused attempts"
            )
            assert a.removed_calls == 1
        finally:
            await a.close()
            await b.close()

    run(body)


def test_unknown_but_not_removed_sender_is_accepted() -> None:
    async def body() -> None:
        a, b = await pair()
        try:
            # b knows neither a's id nor a's URL (a joiner not yet applied on b).
            b.transport.set_removed({5})
            assert b.transport.peers() == {}
            a.transport.set_peers({2: b.url})
            await a.transport.start()
            a.transport.send([heartbeat(1, 2)])
            await async_wait_until(lambda: len(b.received) == 1, what="delivery")
            assert b.received == [heartbeat(1, 2)]
            assert a.transport.reachable(2)
            assert a.removed_calls == 0 and not a.transport.told_removed
            assert b.transport.rejected_removed == 0
        finally:
            await a.close()
            await b.close()

    run(body)


def test_open_stream_is_cut_when_its_sender_becomes_removed() -> None:
    """The removal is applied while the stream is up: the next batch is refused."""

    async def body() -> None:
        a, b = await pair()
        try:
            a.transport.set_peers({2: b.url})
            await a.transport.start()
            a.transport.send([heartbeat(1, 2)])
            await async_wait_until(lambda: len(b.received) == 1, what="first delivery")
            assert a.transport.reachable(2)
            b.transport.set_removed({1})
            a.transport.send([heartbeat(1, 2, term=2)])
            await async_wait_until(lambda: a.removed_calls == 1, what="on_removed fired")
            assert b.received == [heartbeat(1, 2)]
            assert b.transport.rejected_removed >= 1
        finally:
            await a.close()
            await b.close()

    run(body)


def test_removed_sender_without_metadata_is_refused_at_its_first_batch() -> None:
    async def body() -> None:
        b = Member(2)
        await b.serve()
        try:
            b.transport.set_removed({9})
            async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as ch:
                call = pb_grpc.RaftPeerStub(ch).Stream()
                batch = pb.MessageBatch(cluster_id=CLUSTER)
                setattr(batch, "from", 9)  # noqa: B010 - `from` is a Python keyword
                await call.write(batch)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await asyncio.wait_for(call.read(), 10)
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert info.value.details() == MEMBER_REMOVED
            assert b.received == []
        finally:
            await b.close()

    run(body)
