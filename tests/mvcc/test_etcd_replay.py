"""Replay one fixed request sequence against a real etcd and against MvccStore.

Every response is compared field by field (headers reduced to `revision`, the
only header field the MVCC layer owns); errors must match in gRPC code and
exact message. This pins revision numbering, create/mod/version, count/more,
sort quirks, txn paths and compaction to etcd 3.4's observed behaviour.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message

from kvstore import errors
from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.storage.backend import Backend
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]

R = rpc_pb2
RR = R.RangeRequest
C = R.Compare


def put(key: bytes, value: bytes = b"", **kw) -> R.PutRequest:
    return R.PutRequest(key=key, value=value, **kw)


def rng(key: bytes, end: bytes = b"", **kw) -> R.RangeRequest:
    return R.RangeRequest(key=key, range_end=end, **kw)


def dele(key: bytes, end: bytes = b"", **kw) -> R.DeleteRangeRequest:
    return R.DeleteRangeRequest(key=key, range_end=end, **kw)


def op(req: Message) -> R.RequestOp:
    if isinstance(req, R.RangeRequest):
        return R.RequestOp(request_range=req)
    if isinstance(req, R.PutRequest):
        return R.RequestOp(request_put=req)
    if isinstance(req, R.DeleteRangeRequest):
        return R.RequestOp(request_delete_range=req)
    return R.RequestOp(request_txn=req)


def txn(compare=(), success=(), failure=()) -> R.TxnRequest:
    return R.TxnRequest(
        compare=list(compare),
        success=[op(x) for x in success],
        failure=[op(x) for x in failure],
    )


def cmp(key: bytes, target: str, result: str, end: bytes = b"", **value) -> R.Compare:
    return C(key=key, range_end=end, target=getattr(C, target), result=getattr(C, result), **value)


def sequence() -> Iterator[tuple[str, Message]]:
    """(rpc name, request); a "compact" request carries the revision."""
    yield "hashkv", R.HashKVRequest(revision=0)  # never compacted: -1
    yield "range", rng(b"a")  # empty store
    yield "put", put(b"a", b"1")
    yield "put", put(b"a", b"2", prev_kv=True)
    yield "put", put(b"b", b"x")
    yield "put", put(b"ab", b"y")
    yield "put", put(b"c", b"")  # empty value
    yield "put", put(b"\xff", b"ff")
    yield "put", put(b"missing", ignore_value=True)  # KEY_NOT_FOUND
    yield "put", put(b"a", ignore_value=True, prev_kv=True)
    yield "put", put(b"a", b"9", lease=12345)  # LEASE_NOT_FOUND
    yield "range", rng(b"a")
    yield "range", rng(b"a", b"b")
    yield "range", rng(b"a", b"\x00")  # from key
    yield "range", rng(b"\x00", b"\x00")  # everything
    yield "range", rng(b"\xff", b"\x00")
    yield "range", rng(b"b", b"a")  # end before key
    yield "range", rng(b"\x00", b"\x00", limit=2)
    yield "range", rng(b"\x00", b"\x00", limit=2, count_only=True)
    yield "range", rng(b"\x00", b"\x00", keys_only=True)
    yield "range", rng(b"\x00", b"\x00", sort_order=RR.DESCEND)
    yield "range", rng(b"\x00", b"\x00", sort_order=RR.DESCEND, sort_target=RR.MOD, limit=3)
    yield "range", rng(b"\x00", b"\x00", sort_order=RR.ASCEND, sort_target=RR.VALUE)
    yield "range", rng(b"\x00", b"\x00", sort_target=RR.VERSION, limit=2)  # NONE + VERSION quirk
    yield "range", rng(b"\x00", b"\x00", sort_target=RR.CREATE)
    yield "range", rng(b"\x00", b"\x00", min_mod_revision=4, max_mod_revision=5)
    yield "range", rng(b"\x00", b"\x00", min_create_revision=3, limit=1)
    yield "range", rng(b"\x00", b"\x00", max_create_revision=3)
    yield "range", rng(b"\x00", b"\x00", sort_order=RR.DESCEND, sort_target=RR.VERSION)
    yield "range", rng(b"a", b"c", limit=10, revision=5, count_only=True)
    yield "put", put(b"b", ignore_lease=True, ignore_value=True, prev_kv=True)
    yield "range", rng(b"a", revision=2)
    yield "range", rng(b"a", revision=3)
    yield "range", rng(b"a", revision=99)  # FUTURE_REVISION
    yield "delete", dele(b"zzz")  # deletes nothing: no new revision
    yield "delete", dele(b"a", b"b", prev_kv=True)  # a, ab
    yield "range", rng(b"a", revision=7)
    yield "put", put(b"a", b"reborn")
    yield "range", rng(b"a")
    yield "txn", txn([cmp(b"a", "VALUE", "EQUAL", value=b"reborn")],
                     [rng(b"a"), put(b"t1", b"v"), rng(b"\x00", b"\x00", count_only=True)],
                     [put(b"t2", b"v")])
    yield "txn", txn([cmp(b"nokey", "VALUE", "NOT_EQUAL", value=b"zz")], [put(b"t3")], [put(b"t4")])
    yield "txn", txn([cmp(b"nokey", "VERSION", "EQUAL", version=0)], [put(b"t5")])
    yield "txn", txn([cmp(b"nokey", "CREATE", "LESS", create_revision=1)], [rng(b"t5")])
    yield "txn", txn([cmp(b"t", "MOD", "GREATER", b"u", mod_revision=5)], [dele(b"t1")],
                     [dele(b"t4")])
    yield "txn", txn([cmp(b"t", "VERSION", "EQUAL", b"u", version=1)], [put(b"t6")],
                     [put(b"t7")])
    yield "txn", txn([cmp(b"a", "LEASE", "EQUAL", lease=0)],
                     [txn([cmp(b"a", "VALUE", "EQUAL", value=b"nope")], [put(b"n1")],
                          [put(b"n2"), rng(b"n", b"o")]),
                      put(b"n3")])
    yield "txn", txn([], [rng(b"a"), rng(b"b")])  # read-only: no revision
    yield "txn", txn([], [put(b"zz", ignore_value=True)])  # KEY_NOT_FOUND
    yield "txn", txn([], [put(b"zz", lease=777)])  # LEASE_NOT_FOUND
    yield "txn", txn([], [rng(b"a", revision=1000)])  # FUTURE_REVISION
    yield "txn", txn([cmp(b"a", "CREATE", "EQUAL", create_revision=0)], [], [dele(b"zzz")])
    yield "txn", txn([cmp(b"a", "MOD", "EQUAL", mod_revision=10)], [put(b"a", b"x")])
    yield "compact", R.CompactionRequest(revision=6)
    yield "range", rng(b"a", revision=5)  # COMPACTED
    yield "range", rng(b"a", revision=6)
    yield "range", rng(b"\x00", b"\x00", revision=6)
    yield "range", rng(b"\x00", b"\x00", revision=8)
    yield "compact", R.CompactionRequest(revision=6)  # COMPACTED
    yield "compact", R.CompactionRequest(revision=5)  # COMPACTED
    yield "compact", R.CompactionRequest(revision=1000)  # FUTURE_REVISION
    yield "put", put(b"b", b"x2")
    yield "compact", R.CompactionRequest(revision=9)
    yield "range", rng(b"\x00", b"\x00", revision=9)
    yield "range", rng(b"\x00", b"\x00")
    yield "txn", txn([], [rng(b"a", revision=8)])  # COMPACTED inside txn
    yield "hashkv", R.HashKVRequest(revision=0)


def _normalise(msg: Message) -> Message:
    """Keep only header.revision (cluster/member/term belong to the server)."""
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        items = value if field.is_repeated else [value]
        for item in items:
            if field.name == "header":
                item.cluster_id = item.member_id = item.raft_term = 0
            else:
                _normalise(item)
    return msg


Outcome = tuple[str, object]


def _etcd_side(endpoint: str) -> list[Outcome]:
    channel = grpc.insecure_channel(endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)
    maint = rpc_pb2_grpc.MaintenanceStub(channel)
    calls: dict[str, Callable[[Message], Message]] = {
        "range": kv.Range, "put": kv.Put, "delete": kv.DeleteRange, "txn": kv.Txn,
        "compact": kv.Compact, "hashkv": maint.HashKV,
    }
    out: list[Outcome] = []
    try:
        for name, req in sequence():
            try:
                resp = calls[name](req, timeout=10)
            except grpc.RpcError as exc:
                out.append(("error", (exc.code(), exc.details())))
                continue
            if name == "hashkv":
                out.append(("hashkv", resp.compact_revision))
            else:
                out.append(("ok", _normalise(resp)))
    finally:
        channel.close()
    return out


def _store_side(path: Path) -> list[Outcome]:
    backend = Backend.open(path)
    store = MvccStore(backend)
    out: list[Outcome] = []
    try:
        for name, req in sequence():
            try:
                if name == "range":
                    resp = store.range(req)
                elif name == "hashkv":
                    out.append(("hashkv", store.hash_kv(req.revision)[1]))
                    continue
                else:
                    batch = store.begin_batch()
                    if name == "put":
                        resp = batch.put(req)
                    elif name == "delete":
                        resp = batch.delete_range(req)
                    elif name == "txn":
                        resp = batch.txn(req)
                    else:
                        resp = batch.compact(req.revision)
                    batch.commit()
            except errors.EtcdError as exc:
                out.append(("error", (exc.code, exc.message)))
                continue
            out.append(("ok", resp))
    finally:
        backend.close()
    return out


def test_store_matches_etcd(tmp_path: Path) -> None:
    (tmp_path / "etcd").mkdir()
    with EtcdCluster(size=1, base_dir=tmp_path / "etcd") as cluster:
        expected = _etcd_side(cluster.endpoints[0])
    got = _store_side(tmp_path / "store")
    requests = list(sequence())
    assert len(expected) == len(got) == len(requests)
    for i, ((name, req), want, have) in enumerate(zip(requests, expected, got, strict=True)):
        assert have == want, f"step {i} {name} {req}\netcd:  {want}\nstore: {have}"
