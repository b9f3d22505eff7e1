"""Backend hash agrees on equal state; defragment keeps data and frees space."""

from __future__ import annotations

import os

from kvstore.maintenance.defrag import defragment
from kvstore.maintenance.hash import backend_hash


def test_backend_hash_equal_state_equal_hash(member, other) -> None:
    member.fill(200, seed=3)
    other.fill(200, seed=3)
    member.set_meta(b"member_id", b"\x01" * 8)  # member-local: ignored
    other.set_meta(b"member_id", b"\x02" * 8)
    assert backend_hash(member.backend) == backend_hash(other.backend)
    other.put(b"extra", b"1")
    assert backend_hash(member.backend) != backend_hash(other.backend)


def test_defragment_keeps_data_and_shrinks(member) -> None:
    for round_ in range(4):
        for i in range(3000):
            member.put(b"k%05d" % i, os.urandom(64) + bytes([round_]))
        member.backend.flush()
    from kvstore.pb import rpc_pb2

    # Compact MVCC history so most revisions are garbage for RocksDB.
    batch = member.store.begin_batch()
    batch.compact(member.store.current_revision)
    batch.commit(sync=False)
    before_hash = member.store.hash_kv(0)
    result = defragment(member.backend)
    assert result.size_after < result.size_before
    assert member.store.hash_kv(0) == before_hash
    resp = member.store.range(rpc_pb2.RangeRequest(key=b"k", range_end=b"l", count_only=True))
    assert resp.count == 3000
