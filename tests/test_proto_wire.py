"""Our hand-written protos are wire-compatible with a real etcd 3.4.

Owns: calling a real single-member etcd through kvstore.pb stubs and checking
that responses decode into sensible values. Never talks to anything but
127.0.0.1; the etcd process is stopped by the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from kvstore.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    with EtcdCluster(size=1, base_dir=tmp_path_factory.mktemp("etcd")) as cluster:
        ch = grpc.insecure_channel(cluster.endpoints[0])
        try:
            yield ch
        finally:
            ch.close()


def test_kv_roundtrip(channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    put = kv.Put(rpc_pb2.PutRequest(key=b"wire/a", value=b"1"), timeout=10)
    assert put.header.revision >= 2 and put.header.cluster_id != 0
    put2 = kv.Put(rpc_pb2.PutRequest(key=b"wire/a", value=b"2", prev_kv=True), timeout=10)
    assert put2.prev_kv.value == b"1" and put2.prev_kv.version == 1
    assert put2.header.revision == put.header.revision + 1

    rng = kv.Range(rpc_pb2.RangeRequest(key=b"wire/", range_end=b"wire0"), timeout=10)
    assert rng.count == 1 and not rng.more
    (item,) = rng.kvs
    assert (item.key, item.value, item.version) == (b"wire/a", b"2", 2)
    assert item.create_revision == put.header.revision
    assert item.mod_revision == put2.header.revision

    txn = kv.Txn(
        rpc_pb2.TxnRequest(
            compare=[
                rpc_pb2.Compare(
                    key=b"wire/a",
                    target=rpc_pb2.Compare.VALUE,
                    result=rpc_pb2.Compare.EQUAL,
                    value=b"2",
                )
            ],
            success=[
                rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"wire/a")),
                rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"wire/b", value=b"x")),
            ],
        ),
        timeout=10,
    )
    assert txn.succeeded
    assert txn.responses[0].WhichOneof("response") == "response_range"
    assert txn.responses[0].response_range.kvs[0].value == b"2"
    assert txn.responses[1].WhichOneof("response") == "response_put"
    assert txn.header.revision == put2.header.revision + 1

    deleted = kv.DeleteRange(
        rpc_pb2.DeleteRangeRequest(key=b"wire/", range_end=b"wire0", prev_kv=True), timeout=10
    )
    assert deleted.deleted == 2
    assert sorted(p.key for p in deleted.prev_kvs) == [b"wire/a", b"wire/b"]

    kv.Compact(rpc_pb2.CompactionRequest(revision=put2.header.revision), timeout=10)
    with pytest.raises(grpc.RpcError) as info:
        kv.Range(rpc_pb2.RangeRequest(key=b"wire/a", revision=put.header.revision), timeout=10)
    assert info.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info.value.details() == "etcdserver: mvcc: required revision has been compacted"


def test_maintenance_cluster_and_lease(channel: grpc.Channel) -> None:
    status = rpc_pb2_grpc.MaintenanceStub(channel).Status(rpc_pb2.StatusRequest(), timeout=10)
    assert status.version.startswith("3.")
    assert status.leader == status.header.member_id != 0
    assert status.raftIndex >= 1 and status.raftTerm >= 1 and status.dbSize > 0

    members = rpc_pb2_grpc.ClusterStub(channel).MemberList(rpc_pb2.MemberListRequest(), timeout=10)
    (member,) = members.members
    assert status.header.member_id == member.ID
    assert member.name == "etcd1" and member.peerURLs and member.clientURLs
    assert not member.isLearner

    lease = rpc_pb2_grpc.LeaseStub(channel)
    grant = lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=30), timeout=10)
    assert grant.ID != 0 and grant.TTL == 30
    ttl = lease.LeaseTimeToLive(rpc_pb2.LeaseTimeToLiveRequest(ID=grant.ID), timeout=10)
    assert ttl.grantedTTL == 30 and 0 < ttl.TTL <= 30
    lease.LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=grant.ID), timeout=10)


def test_watch_stream(channel: grpc.Channel) -> None:
    kv = rpc_pb2_grpc.KVStub(channel)
    start = kv.Put(rpc_pb2.PutRequest(key=b"watch/k", value=b"v1"), timeout=10).header.revision
    kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"watch/k"), timeout=10)

    requests = iter(
        [
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(
                    key=b"watch/k", start_revision=start, prev_kv=True
                )
            )
        ]
    )
    stream = rpc_pb2_grpc.WatchStub(channel).Watch(requests, timeout=10)
    events: list[kv_pb2.Event] = []
    try:
        for resp in stream:
            if resp.created:
                assert resp.header.revision >= start + 1
            events.extend(resp.events)
            if len(events) >= 2:
                break
    finally:
        stream.cancel()
    put_event, delete_event = events
    assert put_event.type == kv_pb2.Event.PUT and put_event.kv.value == b"v1"
    assert put_event.kv.mod_revision == start
    assert delete_event.type == kv_pb2.Event.DELETE
    assert delete_event.kv.key == b"watch/k" and delete_event.kv.mod_revision == start + 1
    assert delete_event.prev_kv.value == b"v1"
