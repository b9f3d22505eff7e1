"""GrpcTransport over real gRPC on 127.0.0.1: delivery, order, failures, rejection.

Every test runs its own event loop via `run()` with an overall timeout; all waits
are conditions with deadlines (async_wait_until), never sleeps.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from transport_harness import Member, run  # noqa: E402

from kvstore.pb import raftpb_pb2 as pb
from kvstore.pb import raftpb_pb2_grpc as pb_grpc
from kvstore.raft.types import Entry, Message, MessageType
from kvstore.testing.waiting import async_wait_until
from kvstore.transport import CLUSTER_ID_MISMATCH, peer_address


async def cluster(n: int, **kw: Any) -> list[Member]:
    members = [Member(i + 1, **kw) for i in range(n)]
    for m in members:
        await m.serve()
    for m in members:
        m.transport.set_peers({o.id: o.url for o in members})
        await m.transport.start()
    return members


def app(sender: int, to: int, seq: int, n_entries: int = 2) -> Message:
    ents = tuple(Entry(1, seq * 10 + i, data=b"v%d" % seq) for i in range(n_entries))
    return Message(MessageType.APP, to=to, sender=sender, term=1, index=seq, entries=ents)


def test_peer_address_accepts_urls_and_host_port() -> None:
    assert peer_address("http://127.0.0.1:2380") == "127.0.0.1:2380"
    assert peer_address("127.0.0.1:2380") == "127.0.0.1:2380"
    assert peer_address("https://[::1]:2380") == "[::1]:2380"
    with pytest.raises(ValueError):
        peer_address("http://127.0.0.1")


def test_three_transports_deliver_every_message_in_order_per_peer() -> None:
    per_pair = 400

    async def body() -> None:
        members = await cluster(3)
        try:
            for seq in range(per_pair):
                for m in members:
                    # Many small send() calls: the sender coalesces them into batches.
                    m.transport.send([app(m.id, o.id, seq) for o in members if o is not m])

            def all_in() -> bool:
                return all(len(m.received) == 2 * per_pair for m in members)

            await async_wait_until(all_in, timeout=30, what="all messages delivered")
            for m in members:
                for o in members:
                    if o is m:
                        continue
                    got = [x for x in m.received if x.sender == o.id]
                    assert got == [app(o.id, m.id, seq) for seq in range(per_pair)]
                    assert m.transport.reachable(o.id)
                    assert o.transport.stats(m.id).dropped == 0
                # Batching: fewer stream writes than messages.
                assert m.batches < 2 * per_pair
            assert all(not m.unreachable for m in members)
        finally:
            for m in members:
                await m.close()

    run(body)


def test_dead_peer_is_reported_and_messages_dropped_without_blocking() -> None:
    async def body() -> None:
        a, b = await cluster(2, max_queue=16)
        try:
            a.transport.send([app(1, 2, 0)])
            await async_wait_until(lambda: len(b.received) == 1, what="first delivery")
            await b.kill_server()
            await async_wait_until(
                lambda: not a.transport.reachable(2) and 2 in a.unreachable,
                what="peer 2 reported unreachable",
            )
            # Far more than the queue bound; send() returns at once and never raises.
            for seq in range(1, 200):
                a.transport.send([app(1, 2, seq)])
            stats = a.transport.stats(2)
            assert stats.dropped >= 200 - 1 - 16
            assert stats.failures >= 1
            assert len(b.received) == 1
        finally:
            await a.close()
            await b.close()

    run(body)


def test_restarted_peer_reconnects_and_delivery_resumes() -> None:
    async def body() -> None:
        a, b = await cluster(2, max_queue=64)
        try:
            a.transport.send([app(1, 2, 0)])
            await async_wait_until(lambda: len(b.received) == 1, what="first delivery")
            port = b.port
            await b.kill_server()
            await async_wait_until(lambda: not a.transport.reachable(2), what="peer 2 down")
            a.transport.send([app(1, 2, 1)])  # queued while the peer is down
            await b.serve(port)  # same transport object, same address
            await async_wait_until(lambda: a.transport.reachable(2), what="stream reconnected")
            a.transport.send([app(1, 2, 2)])
            await async_wait_until(lambda: len(b.received) == 3, what="delivery resumed")
            assert [m.index for m in b.received] == [0, 1, 2]
            assert a.transport.stats(2).connects >= 2
            # The reverse direction works too (b's sender reconnects on its own).
            b.transport.send([app(2, 1, 7)])
            await async_wait_until(lambda: len(a.received) == 1, what="reverse delivery")
        finally:
            await a.close()
            await b.close()

    run(body)


def test_cluster_id_mismatch_is_rejected() -> None:
    async def body() -> None:
        a = Member(1, cluster_id=1)
        b = Member(2, cluster_id=2)
        await a.serve()
        await b.serve()
        try:
            a.transport.set_peers({2: b.url})
            await a.transport.start()
            a.transport.send([app(1, 2, 0)])
            await async_wait_until(
                lambda: CLUSTER_ID_MISMATCH in a.transport.stats(2).last_error,
                what="mismatch seen by the sender",
            )
            assert "FAILED_PRECONDITION" in a.transport.stats(2).last_error
            assert not a.transport.reachable(2)
            assert 2 in a.unreachable
            assert b.received == []

            # A client that skips the metadata is still rejected at its first batch.
            async with grpc.aio.insecure_channel(f"127.0.0.1:{b.port}") as ch:
                call = pb_grpc.RaftPeerStub(ch).Stream()
                await call.write(pb.MessageBatch(cluster_id=1))
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await call.read()
                assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert info.value.details() == CLUSTER_ID_MISMATCH
            assert b.received == []
        finally:
            await a.close()
            await b.close()

    run(body)


def test_set_peers_adds_removes_and_updates_at_runtime() -> None:
    async def body() -> None:
        a, b, c = await cluster(3)
        try:
            a.transport.set_peers({2: b.url})  # drop peer 3
            assert set(a.transport.peers()) == {2}
            a.transport.send([app(1, 3, 0), app(1, 2, 0)])
            assert a.transport.dropped_unknown_peer == 1
            await async_wait_until(lambda: len(b.received) == 1, what="peer 2 still served")
            # Update peer 2's address to peer 3's server (as after a member URL change).
            a.transport.set_peers({2: f"127.0.0.1:{c.port}", 3: c.url, 1: a.url})
            assert a.transport.peers() == {2: f"127.0.0.1:{c.port}", 3: f"127.0.0.1:{c.port}"}
            a.transport.send([app(1, 2, 1), app(1, 3, 2)])
            await async_wait_until(lambda: len(c.received) == 2, what="both to c's server")
            assert sorted(m.index for m in c.received) == [1, 2]
            assert len(b.received) == 1
        finally:
            for m in (a, b, c):
                await m.close()

    run(body)


def test_send_before_start_queues_and_consumer_errors_do_not_break_stream() -> None:
    async def body() -> None:
        a = Member(1)
        b = Member(2)
        calls: list[int] = []

        def flaky(msgs: list[Message]) -> None:
            calls.append(len(msgs))
            if len(calls) == 1:
                raise RuntimeError("consumer bug")
            b.received.extend(msgs)

        b.transport.on_messages = flaky
        await b.serve()
        try:
            a.transport.set_peers({2: b.url})
            a.transport.send([app(1, 2, 0)])  # queued: the sender is not running yet
            await a.transport.start()
            await async_wait_until(lambda: len(calls) == 1, what="first batch")
            a.transport.send([app(1, 2, 1)])
            await async_wait_until(lambda: len(b.received) == 1, what="second batch")
            assert b.received[0].index == 1
            assert a.transport.stats(2).connects == 1
        finally:
            await a.close()
            await b.close()

    run(body)


def test_stop_is_idempotent_and_send_after_stop_is_harmless() -> None:
    async def body() -> None:
        a, b = await cluster(2)
        await a.transport.stop()
        a.transport.send([app(1, 2, 0)])
        await a.transport.stop()
        assert not a.transport.reachable(2)
        await a.close()
        await b.close()

    run(body)


@pytest.mark.slow
def test_idle_stream_survives_keepalive_pings_with_server_options(monkeypatch) -> None:
    """With SERVER_OPTIONS the peer server accepts our keepalive pings on an idle
    stream (a default server answers them with GOAWAY "too_many_pings" after a
    few rounds). Keepalive is shortened to 500 ms; the idle period is the scenario."""
    from kvstore.transport import peer

    fast = [(k, 500 if k == "grpc.keepalive_time_ms" else v) for k, v in peer.CHANNEL_OPTIONS]
    monkeypatch.setattr(peer, "CHANNEL_OPTIONS", fast)

    async def body() -> None:
        a, b = await cluster(2)
        try:
            a.transport.send([app(1, 2, 0)])
            await async_wait_until(lambda: len(b.received) == 1, what="first delivery")
            await asyncio.sleep(5)  # idle: ~10 keepalive pings, no data
            assert a.transport.stats(2).failures == 0, a.transport.stats(2).last_error
            assert a.transport.stats(2).connects == 1
            a.transport.send([app(1, 2, 1)])
            await async_wait_until(lambda: len(b.received) == 2, what="second delivery")
        finally:
            await a.close()
            await b.close()

    run(body)
