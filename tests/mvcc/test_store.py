"""MvccStore component tests on RocksDB: batches, reopen, compaction, txns, leases, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore import errors
from kvstore.mvcc import MvccStore
from kvstore.mvcc.revision import decode_revision
from kvstore.pb import kv_pb2, rpc_pb2
from kvstore.storage.backend import KV, Backend

from .conftest import StoreHarness

R = rpc_pb2
C = R.Compare
Event = kv_pb2.Event


def put(store: MvccStore, key: bytes, value: bytes = b"v", **kw) -> R.PutResponse:
    batch = store.begin_batch()
    resp = batch.put(R.PutRequest(key=key, value=value, **kw))
    batch.commit()
    return resp


def delete(store: MvccStore, key: bytes, end: bytes = b"") -> R.DeleteRangeResponse:
    batch = store.begin_batch()
    resp = batch.delete_range(R.DeleteRangeRequest(key=key, range_end=end))
    batch.commit()
    return resp


def compact(store: MvccStore, rev: int) -> None:
    batch = store.begin_batch()
    batch.compact(rev)
    batch.commit()


def get(store: MvccStore, key: bytes, rev: int = 0) -> kv_pb2.KeyValue | None:
    resp = store.range(R.RangeRequest(key=key, revision=rev))
    return resp.kvs[0] if resp.kvs else None


def disk_revisions(backend: Backend) -> list[tuple[int, int]]:
    return [tuple(decode_revision(k)) for k, _ in backend.iterate(KV)]


# --- revisions and batches ---------------------------------------------------------


def test_fresh_store_is_at_revision_one(harness: StoreHarness) -> None:
    store = harness.store
    assert store.current_revision == 1 and store.compact_revision == -1
    assert put(store, b"a").header.revision == 2


def test_batch_ops_see_each_other_and_commit_once(harness: StoreHarness) -> None:
    store = harness.store
    batch = store.begin_batch()
    batch.put(R.PutRequest(key=b"a", value=b"1"))
    resp = batch.put(R.PutRequest(key=b"a", value=b"2", prev_kv=True))
    assert resp.prev_kv.value == b"1"
    assert get(store, b"a").value == b"2"  # visible before commit
    assert disk_revisions(harness.backend) == []
    batch.set_meta(b"applied_index", b"\x00" * 7 + b"\x07")
    events = batch.commit(sync=True)
    assert [rev for rev, _ in events] == [2, 3]
    assert disk_revisions(harness.backend) == [(2, 0), (3, 0)]
    assert harness.backend.get("meta", b"applied_index") == b"\x00" * 7 + b"\x07"
    with pytest.raises(RuntimeError):
        batch.put(R.PutRequest(key=b"b"))


def test_failed_op_leaves_no_trace(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a", b"1")
    batch = store.begin_batch()
    with pytest.raises(errors.EtcdError) as info:
        batch.put(R.PutRequest(key=b"missing", ignore_value=True))
    assert info.value == errors.KEY_NOT_FOUND()
    with pytest.raises(errors.EtcdError) as info:
        batch.put(R.PutRequest(key=b"a", value=b"x", lease=5))
    assert info.value == errors.LEASE_NOT_FOUND()
    with pytest.raises(errors.EtcdError):
        batch.txn(
            R.TxnRequest(
                success=[
                    R.RequestOp(request_put=R.PutRequest(key=b"b", value=b"x")),
                    R.RequestOp(request_put=R.PutRequest(key=b"c", ignore_value=True)),
                ]
            )
        )
    assert batch.commit() == []
    assert store.current_revision == 2
    assert get(store, b"b") is None and get(store, b"a").value == b"1"


def test_reopen_rebuilds_index_and_revision(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a", b"1")
    put(store, b"a", b"2")
    put(store, b"b", b"1")
    delete(store, b"b")
    put(store, b"b", b"again")
    before = [store.range(R.RangeRequest(key=b"\x00", range_end=b"\x00", revision=r))
              for r in range(1, 7)]
    store = harness.reopen()
    assert store.current_revision == 6
    after = [store.range(R.RangeRequest(key=b"\x00", range_end=b"\x00", revision=r))
             for r in range(1, 7)]
    assert after == before
    assert put(store, b"b", b"more").header.revision == 7
    assert get(store, b"b").version == 2 and get(store, b"b").create_revision == 6


def test_delete_nothing_keeps_revision(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a")
    resp = delete(store, b"zzz")
    assert resp.deleted == 0 and resp.header.revision == 2 == store.current_revision


# --- compaction ---------------------------------------------------------------------


def test_compaction_keeps_what_reads_need_and_deletes_the_rest(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    put(store, b"b", b"1")  # 4
    delete(store, b"b")  # 5 (tombstone)
    put(store, b"c", b"1")  # 6
    put(store, b"a", b"3")  # 7
    compact(store, 5)
    # a@3 kept (newest <= 5), b's generation ended at 5: gone; c, a@7 untouched.
    assert disk_revisions(harness.backend) == [(3, 0), (6, 0), (7, 0)]
    assert get(store, b"a", 5).value == b"2"
    assert get(store, b"b", 5) is None
    with pytest.raises(errors.EtcdError) as info:
        get(store, b"a", 4)
    assert info.value == errors.COMPACTED()
    store = harness.reopen()
    assert store.compact_revision == 5 and store.current_revision == 7
    assert get(store, b"a", 5).version == 2
    with pytest.raises(errors.EtcdError):
        get(store, b"a", 4)


def test_compaction_of_everything_keeps_current_revision(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a")
    delete(store, b"a")
    compact(store, 3)
    assert disk_revisions(harness.backend) == []
    store = harness.reopen()
    assert store.current_revision == 3 and store.compact_revision == 3
    assert put(store, b"a").header.revision == 4
    assert get(store, b"a").version == 1


def test_compaction_errors(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a")
    batch = store.begin_batch()
    with pytest.raises(errors.EtcdError) as info:
        batch.compact(3)
    assert info.value == errors.FUTURE_REVISION()
    batch.compact(2)
    with pytest.raises(errors.EtcdError) as info:
        batch.compact(2)
    assert info.value == errors.COMPACTED()
    batch.commit()


def test_compaction_in_same_batch_as_writes(harness: StoreHarness) -> None:
    store = harness.store
    batch = store.begin_batch()
    batch.put(R.PutRequest(key=b"a", value=b"1"))
    batch.put(R.PutRequest(key=b"a", value=b"2"))
    batch.compact(3)
    batch.commit()
    assert disk_revisions(harness.backend) == [(3, 0)]
    assert harness.reopen().range(R.RangeRequest(key=b"a")).kvs[0].version == 2


# --- txn ---------------------------------------------------------------------------


def txn(store: MvccStore, req: R.TxnRequest) -> tuple[R.TxnResponse, list]:
    batch = store.begin_batch()
    resp = batch.txn(req)
    return resp, batch.commit()


def test_txn_one_revision_sub_per_change(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"x1")
    put(store, b"x2")
    resp, events = txn(
        store,
        R.TxnRequest(
            success=[
                R.RequestOp(request_put=R.PutRequest(key=b"a", value=b"1")),
                R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=b"x", range_end=b"y")),
                R.RequestOp(request_put=R.PutRequest(key=b"b", value=b"1")),
            ]
        ),
    )
    assert resp.header.revision == 4
    assert disk_revisions(harness.backend)[-4:] == [(4, 0), (4, 1), (4, 2), (4, 3)]
    ((rev, evs),) = events
    assert rev == 4
    assert [(e.type, e.kv.key) for e in evs] == [
        (Event.PUT, b"a"), (Event.DELETE, b"x1"), (Event.DELETE, b"x2"), (Event.PUT, b"b"),
    ]
    assert evs[1].kv.mod_revision == 4 and evs[1].prev_kv.key == b"x1"


def test_nested_compares_see_pre_txn_state(harness: StoreHarness) -> None:
    store = harness.store
    inner = R.TxnRequest(
        compare=[C(key=b"k", target=C.CREATE, result=C.EQUAL, create_revision=0)],
        success=[R.RequestOp(request_put=R.PutRequest(key=b"inner-saw-absent"))],
        failure=[R.RequestOp(request_put=R.PutRequest(key=b"inner-saw-present"))],
    )
    resp, _ = txn(
        store,
        R.TxnRequest(
            success=[
                R.RequestOp(request_put=R.PutRequest(key=b"k", value=b"v")),
                R.RequestOp(request_txn=inner),
            ]
        ),
    )
    # etcd evaluates every compare on the path before running any op.
    assert resp.responses[1].response_txn.succeeded
    assert get(store, b"inner-saw-absent") is not None
    assert resp.responses[1].response_txn.HasField("header")
    assert resp.responses[1].response_txn.header.revision == 0


def test_range_compare_requires_every_key(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"p/1", b"x")
    put(store, b"p/2", b"x")
    put(store, b"p/3", b"y")
    every = C(key=b"p/", range_end=b"p0", target=C.VALUE, result=C.EQUAL, value=b"x")
    resp, events = txn(store, R.TxnRequest(compare=[every]))
    assert not resp.succeeded and events == []
    below = C(key=b"p/", range_end=b"p/3", target=C.VALUE, result=C.EQUAL, value=b"x")
    resp, _ = txn(store, R.TxnRequest(compare=[below]))
    assert resp.succeeded
    empty = C(key=b"q/", range_end=b"q0", target=C.VERSION, result=C.EQUAL, version=0)
    assert txn(store, R.TxnRequest(compare=[empty]))[0].succeeded
    empty_value = C(key=b"q/", range_end=b"q0", target=C.VALUE, result=C.NOT_EQUAL, value=b"z")
    assert not txn(store, R.TxnRequest(compare=[empty_value]))[0].succeeded


@pytest.mark.parametrize(
    ("target", "field", "result", "expected"),
    [
        (C.VERSION, "version", C.EQUAL, 2),
        (C.CREATE, "create_revision", C.LESS, 3),
        (C.MOD, "mod_revision", C.GREATER, 2),
        (C.MOD, "mod_revision", C.NOT_EQUAL, 2),
        (C.VALUE, "value", C.GREATER, b"a"),
        (C.LEASE, "lease", C.EQUAL, 0),
    ],
)
def test_compare_targets(harness: StoreHarness, target, field, result, expected) -> None:
    store = harness.store
    put(store, b"k", b"a")  # 2
    put(store, b"k", b"b")  # 3
    c = C(key=b"k", target=target, result=result, **{field: expected})
    assert txn(store, R.TxnRequest(compare=[c]))[0].succeeded
    c.result = {C.EQUAL: C.NOT_EQUAL, C.NOT_EQUAL: C.EQUAL, C.LESS: C.EQUAL,
                C.GREATER: C.LESS}[result]
    assert not txn(store, R.TxnRequest(compare=[c]))[0].succeeded


def test_compare_with_mismatched_union_compares_against_zero(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"k")
    # target VERSION but the value sits in create_revision: etcd compares version with 0.
    c = C(key=b"k", target=C.VERSION, result=C.GREATER, create_revision=99)
    assert txn(store, R.TxnRequest(compare=[c]))[0].succeeded


# --- leases ------------------------------------------------------------------------


class RecordingLeases:
    def __init__(self, granted: set[int]) -> None:
        self.granted = granted
        self.calls: list[tuple[str, int, bytes]] = []

    def exists(self, lease_id: int) -> bool:
        return lease_id in self.granted

    def attach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("attach", lease_id, key))

    def detach(self, lease_id: int, key: bytes) -> None:
        self.calls.append(("detach", lease_id, key))


def test_lease_hooks(harness: StoreHarness) -> None:
    hooks = RecordingLeases({7, 8})
    # Lease hooks are a constructor argument (reopen() keeps them).
    store = harness.store = MvccStore(harness.backend, hooks)
    put(store, b"k", lease=7)
    put(store, b"k", b"w", ignore_lease=True)  # keeps 7: no calls
    put(store, b"k", lease=8)
    delete(store, b"k")
    assert hooks.calls == [("attach", 7, b"k"), ("detach", 7, b"k"), ("attach", 8, b"k"),
                           ("detach", 8, b"k")]
    put(store, b"m", lease=8)
    store = harness.reopen()
    assert list(store.leased_keys()) == [(b"m", 8)]
    assert get(store, b"m").lease == 8


# --- hashes and history --------------------------------------------------------------


def _workload(store: MvccStore) -> None:
    for i in range(20):
        put(store, b"k%d" % (i % 7), b"v%d" % i)
        if i % 5 == 4:
            delete(store, b"k%d" % (i % 3))
    compact(store, 12)


def test_hash_kv_is_deterministic_and_survives_reopen(tmp_path: Path) -> None:
    hashes = []
    for name in ("one", "two"):
        backend = Backend.open(tmp_path / name)
        store = MvccStore(backend)
        _workload(store)
        hashes.append((store.hash_kv(0), store.hash_kv(15)))
        backend.close()
    assert hashes[0] == hashes[1]
    assert hashes[0][0] != hashes[0][1]
    backend = Backend.open(tmp_path / "one")
    try:
        store = MvccStore(backend)
        assert (store.hash_kv(0), store.hash_kv(15)) == hashes[0]
        assert store.hash_kv(0)[1] == 12
        with pytest.raises(errors.EtcdError):
            store.hash_kv(12)
        with pytest.raises(errors.EtcdError):
            store.hash_kv(store.current_revision + 1)
    finally:
        backend.close()


def test_events_between_replays_history(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    delete(store, b"a")  # 4
    batch = store.begin_batch()
    batch.put(R.PutRequest(key=b"b"))  # 5, uncommitted: still visible
    got = [(rev, [(e.type, e.kv.key, e.kv.mod_revision) for e in evs])
           for rev, evs in store.events_between(3)]
    assert got == [(3, [(Event.PUT, b"a", 3)]), (4, [(Event.DELETE, b"a", 4)]),
                   (5, [(Event.PUT, b"b", 5)])]
    batch.commit()
    assert [rev for rev, _ in store.events_between(2, 3)] == [2, 3]
    compact(store, 3)
    with pytest.raises(errors.EtcdError):
        list(store.events_between(2))


# --- value cache ------------------------------------------------------------------


def test_put_takes_the_previous_value_from_the_cache_not_the_backend(
    harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = harness.store
    put(store, b"k", b"v1")
    reads: list[bytes] = []
    real_get = harness.backend.get
    monkeypatch.setattr(
        harness.backend, "get", lambda cf, key: reads.append(key) or real_get(cf, key)
    )
    resp = put(store, b"k", b"v2", prev_kv=True)
    assert resp.prev_kv.value == b"v1"
    assert get(store, b"k").value == b"v2"
    assert reads == []


def test_cache_is_bounded_and_misses_fall_back_to_the_backend(
    harness: StoreHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kvstore.mvcc.store as store_mod

    monkeypatch.setattr(store_mod, "VALUE_CACHE_BYTES", 2_000)
    store = harness.store
    for i in range(50):
        put(store, b"k%02d" % i, b"x" * 100)
    assert store._cache_bytes <= 2_000 and 0 < len(store._cache) < 50
    for i in range(50):  # evicted ones are read back from RocksDB
        assert get(store, b"k%02d" % i).value == b"x" * 100


def test_compaction_drops_compacted_revisions_from_the_cache(harness: StoreHarness) -> None:
    store = harness.store
    put(store, b"a", b"1")  # rev 2
    put(store, b"a", b"2")  # rev 3
    old = [k for k in store._cache if decode_revision(k)[0] == 2]
    assert old
    compact(store, 3)
    assert not any(k in store._cache for k in old)
    assert get(store, b"a").value == b"2"
    with pytest.raises(errors.EtcdError):
        get(store, b"a", rev=2)
    assert get(harness.reopen(), b"a").value == b"2"  # a rebuilt store starts cold
