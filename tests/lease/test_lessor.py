"""Lessor (replicated lease state) on a real MvccStore: apply, hooks, persistence."""

from __future__ import annotations

import asyncio

import pytest

from kvstore import errors
from kvstore.pb import kv_pb2, rpc_pb2
from tests.lease.conftest import Cluster

Compare = rpc_pb2.Compare


def grant(cluster: Cluster, lease_id: int, ttl: int = 10) -> rpc_pb2.LeaseGrantResponse:
    return asyncio.run(
        cluster.propose("lease_grant", rpc_pb2.LeaseGrantRequest(ID=lease_id, TTL=ttl))
    )


def test_put_with_unknown_lease_is_refused(cluster: Cluster) -> None:
    with pytest.raises(errors.EtcdError) as exc:
        cluster.put(b"k", lease=5)
    assert exc.value == errors.LEASE_NOT_FOUND()


def test_grant_attach_and_duplicate(cluster: Cluster) -> None:
    assert grant(cluster, 5).ID == 5
    with pytest.raises(errors.EtcdError) as exc:
        grant(cluster, 5)
    assert exc.value == errors.LEASE_EXISTS()
    cluster.put(b"a", 5)
    cluster.put(b"b", 5)
    for m in cluster.members:
        assert m.lessor.keys_of(5) == [b"a", b"b"]


def test_overwrite_moves_key_between_leases(cluster: Cluster) -> None:
    grant(cluster, 1)
    grant(cluster, 2)
    cluster.put(b"k", 1)
    cluster.put(b"k", 2)
    m = cluster.members[0]
    assert (m.lessor.keys_of(1), m.lessor.keys_of(2)) == ([], [b"k"])
    cluster.put(b"k", 0)
    assert m.lessor.keys_of(2) == []


def test_ignore_lease_keeps_the_attachment(cluster: Cluster) -> None:
    grant(cluster, 1)
    cluster.put(b"k", 1)
    asyncio.run(
        cluster.propose("put", rpc_pb2.PutRequest(key=b"k", value=b"new", ignore_lease=True))
    )
    m = cluster.members[0]
    kv = m.store.range(rpc_pb2.RangeRequest(key=b"k")).kvs[0]
    assert (kv.lease, kv.value, m.lessor.keys_of(1)) == (1, b"new", [b"k"])


def test_txn_compare_on_lease(cluster: Cluster) -> None:
    grant(cluster, 9)
    cluster.put(b"k", 9)
    txn = rpc_pb2.TxnRequest(
        compare=[Compare(key=b"k", target=Compare.LEASE, result=Compare.EQUAL, lease=9)]
    )
    assert asyncio.run(cluster.propose("txn", txn)).succeeded


def test_revoke_deletes_all_keys_in_one_revision(cluster: Cluster) -> None:
    grant(cluster, 7)
    for key in (b"c", b"a", b"b"):
        cluster.put(key, 7)
    m = cluster.members[0]
    before = m.store.current_revision
    m.events.clear()
    resp = asyncio.run(cluster.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=7)))
    assert resp.header.revision == before + 1
    [(rev, events)] = m.events
    assert rev == before + 1
    assert [(e.type, e.kv.key) for e in events] == [
        (kv_pb2.Event.DELETE, k) for k in (b"a", b"b", b"c")
    ]
    assert not m.lessor.exists(7)
    assert m.store.range(rpc_pb2.RangeRequest(key=b"a", range_end=b"z")).count == 0
    with pytest.raises(errors.EtcdError) as exc:
        asyncio.run(cluster.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=7)))
    assert exc.value == errors.LEASE_NOT_FOUND()


def test_revoke_without_keys_creates_no_revision(cluster: Cluster) -> None:
    grant(cluster, 3)
    before = cluster.members[0].store.current_revision
    asyncio.run(cluster.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=3)))
    assert cluster.members[0].store.current_revision == before


def test_state_survives_reopen(cluster: Cluster) -> None:
    grant(cluster, 1, ttl=30)
    grant(cluster, 2, ttl=60)
    cluster.put(b"x", 1)
    cluster.put(b"y", 2)
    cp = rpc_pb2.LeaseCheckpointRequest(
        checkpoints=[rpc_pb2.LeaseCheckpoint(ID=2, remaining_TTL=17)]
    )
    asyncio.run(cluster.propose("lease_checkpoint", cp))
    asyncio.run(cluster.propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=1)))
    m = cluster.members[1]
    m.reopen()
    assert sorted(m.lessor.ids()) == [2]
    lease = m.lessor.get(2)
    assert (lease.ttl, lease.remaining_ttl, sorted(lease.keys)) == (60, 17, [b"y"])


def test_checkpoint_of_unknown_lease_is_ignored(cluster: Cluster) -> None:
    cp = rpc_pb2.LeaseCheckpointRequest(
        checkpoints=[rpc_pb2.LeaseCheckpoint(ID=99, remaining_TTL=3)]
    )
    asyncio.run(cluster.propose("lease_checkpoint", cp))
    assert not cluster.members[0].lessor.exists(99)
