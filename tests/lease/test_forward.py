"""Follower -> leader forwarding of keepalives and time-to-live over real gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from kvstore import errors
from kvstore.lease import LeaderInfo, LeaderLeases, LeaseService, Lessor
from kvstore.lease.clock import FakeClock
from kvstore.pb import rpc_pb2
from tests.watch.local_node import LocalKv, serving


def follower_service(target: list[str]) -> LeaseService:
    lessor = Lessor()

    async def no_propose(kind: str, req: object) -> None:
        raise errors.NO_LEADER()

    return LeaseService(
        lessor,
        LeaderLeases(lessor, FakeClock()),
        propose=no_propose,
        header=lambda revision=None: rpc_pb2.ResponseHeader(member_id=2),
        leader_info=LeaderInfo(lambda: False, lambda: list(target)),
        member_id=2,
        min_ttl_s=2,
    )


def test_pipelined_keepalives_and_ttl_are_answered_by_the_leader(tmp_path: Path) -> None:
    leader = LocalKv(tmp_path / "db")

    async def scenario() -> None:
        async with serving(leader):
            target = [f"http://{leader.address}"]
            follower = follower_service(target)
            try:
                ids = [
                    (await leader.leases.grant(rpc_pb2.LeaseGrantRequest(TTL=30 + i))).ID
                    for i in range(5)
                ]
                asks = [ids[i % 5] for i in range(100)] + [777]
                got = await asyncio.gather(*(follower.keepalive(i) for i in asks))
                assert [(r.ID, r.TTL) for r in got[:100]] == [
                    (ids[i % 5], 30 + i % 5) for i in range(100)
                ]
                assert (got[100].ID, got[100].TTL) == (777, 0)
                assert got[0].header.member_id == 2  # answered in the follower's name
                ttl = await follower.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=ids[0]))
                assert ttl.grantedTTL == 30
                # The leader steps down: its stream ends with its etcd error ...
                leader.is_leader = False
                with pytest.raises(errors.EtcdError) as exc:
                    await follower.keepalive(ids[0])
                assert exc.value == errors.NO_LEADER()
                # ... and the next renewal opens a fresh stream.
                leader.is_leader = True
                assert (await follower.keepalive(ids[1])).TTL == 31
            finally:
                await follower.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 20))
    finally:
        leader.close()


def test_unreachable_leader_is_a_retryable_error(tmp_path: Path) -> None:
    from kvstore.testing.waiting import free_port

    async def scenario() -> None:
        follower = follower_service([f"http://127.0.0.1:{free_port()}"])
        try:
            with pytest.raises(errors.EtcdError) as exc:
                await follower.keepalive(1)
            assert exc.value.retryable
        finally:
            await follower.stop()

    asyncio.run(asyncio.wait_for(scenario(), 20))
