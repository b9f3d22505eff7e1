"""Watch progress notifications and require-leader streams on real `kvstore` processes.

* `--experimental-watch-progress-notify-interval 200ms`: an idle watch created
  with progress_notify gets header-only responses (its watch_id, no events,
  header.revision = the current revision); a watch without it on the same
  stream gets none.
* `hasleader: true` streams (etcd's clientv3 `WithRequireLeader`): a Watch and a
  LeaseKeepAlive stream open on a follower end with Unavailable
  "etcdserver: no leader" after the other two members are killed (etcd's
  monitorLeader: three election timeouts without a leader).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from kvstore import errors
from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

READ_TIMEOUT_S = 20.0  # generous: 2 shared cores, other suites running
LOSS_DEADLINE_S = 40.0  # election timeout 1 s: expected ~4-6 s to cancel
HASLEADER = (("hasleader", "true"),)


def create(**kw: object) -> rpc_pb2.WatchRequest:
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(**kw))


@pytest.fixture
def single(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    extra = ("--experimental-watch-progress-notify-interval", "200ms")
    with LocalCluster(size=1, base_dir=tmp_path_factory.mktemp("wp"), extra_args=extra) as c:
        c.wait_leader(timeout=30)
        yield c


def test_progress_notify_on_idle_watch(single: LocalCluster) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(single.endpoints[0]) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            await kv.Put(rpc_pb2.PutRequest(key=b"elsewhere", value=b"1"))
            call = rpc_pb2_grpc.WatchStub(ch).Watch()
            await call.write(create(key=b"idle", progress_notify=True))
            await call.write(create(key=b"quiet"))
            first = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
            second = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
            assert first.created and second.created
            notified, silent = first.watch_id, second.watch_id
            current = (await kv.Range(rpc_pb2.RangeRequest(key=b"x"))).header.revision
            for _ in range(2):  # two ticks: the silent watch never appears
                resp = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
                assert resp.watch_id == notified != silent
                assert not resp.events and not resp.created and not resp.canceled
                assert resp.header.revision == current
            # Events still flow, and the next progress carries the new revision.
            put = await kv.Put(rpc_pb2.PutRequest(key=b"idle", value=b"2"))
            resp = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
            assert [e.kv.mod_revision for e in resp.events] == [put.header.revision]
            resp = await asyncio.wait_for(call.read(), READ_TIMEOUT_S)
            assert resp.watch_id == notified and not resp.events
            assert resp.header.revision == put.header.revision
            call.cancel()

    asyncio.run(scenario())


@pytest.fixture
def trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(size=3, base_dir=tmp_path_factory.mktemp("hl")) as c:
        c.wait_leader(timeout=30)
        yield c


def _published(cluster: LocalCluster) -> bool:
    """Every member's client URL is in the member list (followers forward
    keepalives to the leader's published URL)."""
    with grpc.insecure_channel(cluster.endpoints[0]) as ch:
        members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=5)
    urls = {u for m in members.members for u in m.clientURLs}
    return all(f"http://{ep}" in urls for ep in cluster.endpoints)


def test_hasleader_streams_end_when_the_member_loses_its_leader(trio: LocalCluster) -> None:
    leader = trio.wait_leader(timeout=30)
    follower = next(i for i in range(3) if i != leader)
    wait_until(lambda: _published(trio), timeout=30, what="client URLs published")

    async def scenario() -> None:
        async with grpc.aio.insecure_channel(trio.endpoints[follower]) as ch:
            lease_id = (
                await rpc_pb2_grpc.LeaseStub(ch).LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))
            ).ID
            watch = rpc_pb2_grpc.WatchStub(ch).Watch(metadata=HASLEADER)
            await watch.write(create(key=b"k"))
            assert (await asyncio.wait_for(watch.read(), READ_TIMEOUT_S)).created
            keepalive = rpc_pb2_grpc.LeaseStub(ch).LeaseKeepAlive(metadata=HASLEADER)
            await keepalive.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            ka = await asyncio.wait_for(keepalive.read(), READ_TIMEOUT_S)
            assert lease_id == ka.ID and ka.TTL == 60
            # A stream without the metadata stays open (it is not canceled).
            plain = rpc_pb2_grpc.WatchStub(ch).Watch()
            await plain.write(create(key=b"k"))
            assert (await asyncio.wait_for(plain.read(), READ_TIMEOUT_S)).created

            for i in range(3):
                if i != follower:
                    trio.kill(i)
            for call in (watch, keepalive):
                with pytest.raises(grpc.aio.AioRpcError) as exc:
                    await asyncio.wait_for(call.read(), LOSS_DEADLINE_S)
                assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
                assert exc.value.details() == errors.NO_LEADER.message
            assert plain.done() is False
            plain.cancel()

    asyncio.run(scenario())
