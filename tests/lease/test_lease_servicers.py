"""Lease, Lock and Election servicers over real gRPC on a single-member LocalKv."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from kvstore import errors
from kvstore.pb import (
    rpc_pb2,
    rpc_pb2_grpc,
    v3election_pb2,
    v3election_pb2_grpc,
    v3lock_pb2,
    v3lock_pb2_grpc,
)
from tests.watch.local_node import LocalKv, serving

TIMEOUT = 15.0


def run(coro) -> None:  # noqa: ANN001
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@pytest.fixture
def kv(tmp_path: Path):  # noqa: ANN201
    node = LocalKv(tmp_path / "db")
    yield node
    node.close()


def test_lease_rpcs(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            lease = rpc_pb2_grpc.LeaseStub(ch)
            granted = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=1))
            assert granted.TTL == 2 and granted.ID > 0 and granted.header.member_id
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60, ID=granted.ID))
            assert exc.value.details() == errors.LEASE_EXISTS.message
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001))
            assert exc.value.code() == grpc.StatusCode.OUT_OF_RANGE
            await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", lease=granted.ID))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", lease=999))
            assert exc.value.code() == grpc.StatusCode.NOT_FOUND
            ttl = await lease.LeaseTimeToLive(
                rpc_pb2.LeaseTimeToLiveRequest(ID=granted.ID, keys=True)
            )
            assert (ttl.grantedTTL, list(ttl.keys)) == (2, [b"k"])
            unknown = await lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=5))
            assert unknown.TTL == -1
            listed = await lease.LeaseLeases(rpc_pb2.LeaseLeasesRequest())
            assert [s.ID for s in listed.leases] == [granted.ID]

            call = lease.LeaseKeepAlive(metadata=(("hasleader", "true"),))
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=granted.ID))
            ka = await call.read()
            assert (ka.ID, ka.TTL) == (granted.ID, 2)
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=12345))
            assert (await call.read()).TTL == 0
            call.cancel()

            await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=granted.ID))
            got = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k"))
            assert got.count == 0
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=granted.ID))
            assert exc.value.details() == errors.LEASE_NOT_FOUND.message

    run(scenario())


def test_keepalive_stream_refused_without_leader(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            kv.has_leader = False
            call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(metadata=(("hasleader", "true"),))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                # The refusal may end the call before this write completes.
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=1))
                await call.read()
            assert exc.value.details() == errors.NO_LEADER.message

    run(scenario())


def test_pipelined_keepalives_are_answered_in_request_order(kv: LocalKv) -> None:
    """Renewals of one stream run concurrently but come back in request order
    (the follower's forwarder matches responses first-in first-out)."""

    async def scenario() -> None:
        async with serving(kv) as ch:
            ids = [await _grant(ch, ttl=10 + i) for i in range(5)]
            asked = [ids[i % 5] if i % 3 else 777_000 + i for i in range(60)]
            call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive()
            for lid in asked:
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            await call.done_writing()
            got = [await call.read() for _ in asked]
            assert [r.ID for r in got] == asked
            assert [r.TTL for r in got] == [10 + ids.index(i) if i in ids else 0 for i in asked]
            assert await call.read() is grpc.aio.EOF

    run(scenario())


def test_keepalive_stream_canceled_when_leader_is_lost(kv: LocalKv) -> None:
    """etcd monitorLeader: a hasleader keepalive stream ends with Unavailable
    "etcdserver: no leader" after the member has been leaderless for three
    checks, even while the client sends nothing."""

    async def scenario() -> None:
        async with serving(kv, leader_check_s=0.05) as ch:
            lid = await _grant(ch)
            call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(metadata=(("hasleader", "true"),))
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            assert (await call.read()).TTL == 30
            kv.has_leader = False
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await call.read()
            assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
            assert exc.value.details() == errors.NO_LEADER.message

    run(scenario())


def test_keepalive_stream_without_hasleader_survives_leader_loss(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv, leader_check_s=0.01) as ch:
            lid = await _grant(ch)
            call = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive()
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            assert (await call.read()).TTL == 30
            # A hasleader keepalive stream alongside is canceled; this one is not.
            other = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(metadata=(("hasleader", "true"),))
            await other.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            assert (await other.read()).TTL == 30
            kv.has_leader = False
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await other.read()
            assert exc.value.details() == errors.NO_LEADER.message
            kv.has_leader = True
            await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
            assert (await call.read()).TTL == 30
            await call.done_writing()
            assert await call.read() is grpc.aio.EOF

    run(scenario())


async def _grant(ch: grpc.aio.Channel, ttl: int = 30) -> int:
    return (await rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl))).ID


def test_lock_waits_for_the_holder_and_returns_a_fencing_key(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            lock = v3lock_pb2_grpc.LockStub(ch)
            l1, l2 = await _grant(ch), await _grant(ch)
            first = await lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=l1))
            assert first.key == b"L/%x" % l1
            second = asyncio.ensure_future(lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=l2)))
            done, _ = await asyncio.wait({second}, timeout=0.3)
            assert not done  # still held by the first caller
            await lock.Unlock(v3lock_pb2.UnlockRequest(key=first.key))
            got = await second
            assert got.key == b"L/%x" % l2
            owner = await rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=got.key))
            assert owner.kvs[0].create_revision < got.header.revision + 1
            # Relocking with the same lease returns the same key at once.
            again = await lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=l2))
            assert again.key == got.key

    run(scenario())


def test_lock_fails_if_the_lease_dies_while_waiting(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            lock = v3lock_pb2_grpc.LockStub(ch)
            l1, l2 = await _grant(ch), await _grant(ch)
            first = await lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=l1))
            waiting = asyncio.ensure_future(lock.Lock(v3lock_pb2.LockRequest(name=b"L", lease=l2)))
            done, _ = await asyncio.wait({waiting}, timeout=0.3)
            assert not done
            await rpc_pb2_grpc.LeaseStub(ch).LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=l2))
            await lock.Unlock(v3lock_pb2.UnlockRequest(key=first.key))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await waiting
            assert exc.value.details() == errors.LEASE_NOT_FOUND.message

    run(scenario())


def test_lock_without_lease_uses_a_session_lease(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            got = await v3lock_pb2_grpc.LockStub(ch).Lock(v3lock_pb2.LockRequest(name=b"S"))
            lease_hex = got.key.split(b"/", 1)[1]
            assert kv.lessor.get(int(lease_hex, 16)).ttl == 60

    run(scenario())


def test_election_campaign_proclaim_observe_resign(kv: LocalKv) -> None:
    async def scenario() -> None:
        async with serving(kv) as ch:
            el = v3election_pb2_grpc.ElectionStub(ch)
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await el.Leader(v3election_pb2.LeaderRequest(name=b"E"))
            assert exc.value.code() == grpc.StatusCode.UNKNOWN
            assert exc.value.details() == errors.ELECTION_NO_LEADER.message

            observe = el.Observe(v3election_pb2.LeaderRequest(name=b"E"))
            l1, l2 = await _grant(ch), await _grant(ch)
            c1 = await el.Campaign(v3election_pb2.CampaignRequest(name=b"E", lease=l1, value=b"a"))
            assert c1.leader.key == b"E/%x" % l1 and c1.leader.lease == l1
            assert (await observe.read()).kv.value == b"a"
            c2 = asyncio.ensure_future(
                el.Campaign(v3election_pb2.CampaignRequest(name=b"E", lease=l2, value=b"b"))
            )
            done, _ = await asyncio.wait({c2}, timeout=0.3)
            assert not done
            await el.Proclaim(v3election_pb2.ProclaimRequest(leader=c1.leader, value=b"a2"))
            assert (await observe.read()).kv.value == b"a2"
            leader = await el.Leader(v3election_pb2.LeaderRequest(name=b"E"))
            assert leader.kv.value == b"a2"
            await el.Resign(v3election_pb2.ResignRequest(leader=c1.leader))
            second = await c2
            assert second.leader.key == b"E/%x" % l2
            assert (await observe.read()).kv.value == b"b"
            with pytest.raises(grpc.aio.AioRpcError) as exc:  # the old leader key is stale
                await el.Proclaim(v3election_pb2.ProclaimRequest(leader=c1.leader, value=b"x"))
            assert exc.value.details() == "election: not leader"
            observe.cancel()

    run(scenario())
