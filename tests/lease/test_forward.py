"""Follower -> leader forwarding of keepalives and time-to-live over real gRPC."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest

from kvstore import errors
from kvstore.lease import LeaderLeases, LeaseService, Lessor
from kvstore.lease.clock import FakeClock
from kvstore.pb import rpc_pb2
from kvstore.transport.forward import LeaderForwarder, LeaderResolver, LeaseForwarding
from kvstore.transport.peer_client import PeerChannels, PeerClient
from tests.watch.local_node import LocalKv, serving

LEADER_ID = 1


class Follower:
    """A follower's lease service whose leader (member 1) serves at `target`."""

    def __init__(self, target: list[str]) -> None:
        lessor = Lessor()

        async def no_propose(kind: str, req: object) -> None:
            raise errors.NO_LEADER()

        self.channels = PeerChannels(credentials=None)
        members = {LEADER_ID: SimpleNamespace(client_urls=list(target))}
        self.forwarder = LeaderForwarder(
            PeerClient(self.channels), LeaderResolver(lambda: LEADER_ID, members)
        )
        self.service = LeaseService(
            lessor,
            LeaderLeases(lessor, FakeClock()),
            propose=no_propose,
            header=lambda revision=None: rpc_pb2.ResponseHeader(member_id=2),
            is_leader=lambda: False,
            forwarder=LeaseForwarding(self.forwarder),
            member_id=2,
            min_ttl_s=2,
        )

    async def keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        return await self.service.keepalive(lease_id)

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        return await self.service.time_to_live(req)

    async def stop(self) -> None:
        await self.service.stop()
        await self.forwarder.close()
        await self.channels.close()


def follower_service(target: list[str]) -> Follower:
    return Follower(target)


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
