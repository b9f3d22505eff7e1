"""MvccBatch: apply-time writes (Put, DeleteRange, Txn, Compact) in one RocksDB WriteBatch.

Owns: etcd's write semantics (revisions, versions, tombstones, txn compares
and paths, compaction) and the events each committed revision produced.
Never: commits anything before `commit()`; never leaves a trace of an op that
raised EtcdError (each op validates everything before its first mutation).

The batch updates its store's in-memory state immediately (index, revision,
`_pending` values), so later ops of the batch and any `store.range` see earlier
ops at once; `commit()` makes them durable with one backend write. A batch must
be committed (the server never abandons one: apply is deterministic), and
batches are committed in the order they were begun.

This module is the store's write half: it uses MvccStore's private state on
purpose (the two are one unit split by size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from kvstore import errors
from kvstore import failpoints as fp
from kvstore.mvcc.compare import INDEX_TARGETS, compare_holds
from kvstore.mvcc.index import wire_range_end
from kvstore.mvcc.revision import encode_revision
from kvstore.mvcc.txn_ops import txn_is_read_only
from kvstore.pb import kv_pb2, rpc_pb2
from kvstore.storage.backend import KV, META
from kvstore.storage.codec import encode_u64

if TYPE_CHECKING:
    from kvstore.mvcc.store import MvccStore

KeyValue = kv_pb2.KeyValue
Event = kv_pb2.Event
META_COMPACT_REVISION = b"mvcc/compact_revision"
RevisionEvents = tuple[int, list[kv_pb2.Event]]


class _WriteCtx:
    """One write transaction: main revision begin+1, a sub-revision per change."""

    __slots__ = ("begin", "changes", "events")

    def __init__(self, begin: int) -> None:
        self.begin = begin
        self.changes = 0
        self.events: list[kv_pb2.Event] = []

    @property
    def read_rev(self) -> int:
        # Reads inside a write txn see its own earlier changes (etcd storeTxnWrite).
        return self.begin + 1 if self.changes else self.begin


class MvccBatch:
    """Created by `MvccStore.begin_batch()`; see the module docstring."""

    def __init__(self, store: MvccStore) -> None:
        self._s = store
        self._wb = store._backend.batch()
        self._events: list[RevisionEvents] = []
        self._written: list[bytes] = []
        self._committed = False

    # --- public ops -------------------------------------------------------------

    def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        """etcd Put. Raises LEASE_NOT_FOUND, then KEY_NOT_FOUND (ignore_value/lease)."""
        self._check_open()
        if req.lease and not self._s._hooks.exists(req.lease):
            raise errors.LEASE_NOT_FOUND()
        ctx = _WriteCtx(self._s._current)
        out = rpc_pb2.PutResponse()
        self._put(req, ctx, out)
        self._finish(ctx)
        return out

    def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        """etcd DeleteRange: one revision for all deleted keys (none deleted: no revision)."""
        self._check_open()
        ctx = _WriteCtx(self._s._current)
        out = rpc_pb2.DeleteRangeResponse()
        self._delete_range(req, ctx, out)
        self._finish(ctx)
        return out

    def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        """etcd Txn. Compares (nested ones too) see the pre-txn state; all writes
        share one revision. Raises KEY_NOT_FOUND / LEASE_NOT_FOUND /
        FUTURE_REVISION / COMPACTED before any change. Like etcd, the checks
        see the pre-txn state; the api layer's duplicate-key rule guarantees
        no op can then fail mid-way (a txn that deletes a key and later puts
        it with ignore_value would, and must be rejected before apply).
        """
        self._check_open()
        s = self._s
        path: list[bool] = []
        self._compare_path(req, path)
        if not txn_is_read_only(req):
            self._check_requests(req, path, 0, self._check_put)
        self._check_requests(req, path, 0, self._check_range)
        ctx = _WriteCtx(s._current)
        out = rpc_pb2.TxnResponse()
        self._apply_txn(req, path, [0], out, ctx)
        out.header.revision = ctx.read_rev
        self._finish(ctx)
        return out

    def compact(self, revision: int) -> rpc_pb2.CompactionResponse:
        """Drop history below `revision` (keeping what a read at it needs), physically.

        Raises COMPACTED (revision <= previous compaction) or FUTURE_REVISION.
        """
        self._check_open()
        s = self._s
        if revision <= s._compact:
            raise errors.COMPACTED()
        if revision > s._current:
            raise errors.FUTURE_REVISION()
        fp.ON and fp.hit("compact_before_apply")
        puts, tombs = s._index.compact(revision)
        pending = s._pending
        for rev in puts:
            key = encode_revision(rev)
            self._wb.delete(KV, key)
            pending.pop(key, None)
            s._cache_drop(key)
        for rev in tombs:
            key = encode_revision(rev, tombstone=True)
            self._wb.delete(KV, key)
            pending.pop(key, None)
            s._cache_drop(key)
        s._compact = revision
        self._wb.put(META, META_COMPACT_REVISION, encode_u64(revision))
        fp.ON and fp.hit("compact_after_apply")
        out = rpc_pb2.CompactionResponse()
        out.header.revision = s._current
        return out

    def set_meta(self, key: bytes, value: bytes) -> None:
        """Write `meta[key] = value` in this batch (e.g. the applied index)."""
        self.put_raw(META, key, value)

    def put_raw(self, cf: str, key: bytes, value: bytes) -> None:
        """Write to a non-kv column family in this batch (lease, meta, ...)."""
        if cf == KV:
            raise ValueError("the kv family is written only through MVCC ops")
        self._check_open()
        self._wb.put(cf, key, value)

    def delete_raw(self, cf: str, key: bytes) -> None:
        if cf == KV:
            raise ValueError("the kv family is written only through MVCC ops")
        self._check_open()
        self._wb.delete(cf, key)

    @property
    def events(self) -> list[RevisionEvents]:
        return self._events

    def commit(self, sync: bool = False) -> list[RevisionEvents]:
        """One backend write for everything in the batch; returns [(revision, events)]
        for every revision this batch created, in order. May run in a worker thread.
        """
        self._check_open()
        self._committed = True
        s = self._s
        s._backend.write(self._wb, sync=sync)
        pending = s._pending
        for key in self._written:
            pending.pop(key, None)
        return self._events

    # --- ops -------------------------------------------------------------------

    def _stage(self, revkey: bytes, raw: bytes) -> None:
        self._wb.put(KV, revkey, raw)
        self._s._pending[revkey] = raw
        self._s._cache_put(revkey, raw)
        self._written.append(revkey)

    def _finish(self, ctx: _WriteCtx) -> None:
        if ctx.changes:
            self._s._current = ctx.begin + 1
            self._events.append((ctx.begin + 1, ctx.events))

    def _put(self, req: rpc_pb2.PutRequest, ctx: _WriteCtx, out: rpc_pb2.PutResponse) -> None:
        s = self._s
        key = req.key
        found = s._live(key, ctx.read_rev)
        old = KeyValue.FromString(s._read(encode_revision(found[0]))) if found else None
        if old is None and (req.ignore_value or req.ignore_lease):
            raise errors.KEY_NOT_FOUND()
        # Validation is over: from here on the op mutates state.
        rev = ctx.begin + 1
        sub = ctx.changes
        lease = old.lease if req.ignore_lease else req.lease  # type: ignore[union-attr]
        kv = KeyValue(
            key=key,
            value=old.value if req.ignore_value else req.value,  # type: ignore[union-attr]
            create_revision=found[1][0] if found else rev,
            mod_revision=rev,
            version=found[2] + 1 if found else 1,
            lease=lease,
        )
        self._stage(encode_revision((rev, sub)), kv.SerializeToString())
        s._index.put(key, (rev, sub))
        ctx.changes += 1
        old_lease = old.lease if old is not None else 0
        if old_lease != lease:
            if old_lease:
                s._hooks.detach(old_lease, key)
            if lease:
                s._hooks.attach(lease, key)
        if old is not None:
            ctx.events.append(Event(type=Event.PUT, kv=kv, prev_kv=old))
            if req.prev_kv:
                out.prev_kv.CopyFrom(old)
        else:
            ctx.events.append(Event(type=Event.PUT, kv=kv))
        out.header.revision = rev

    def _delete_range(
        self, req: rpc_pb2.DeleteRangeRequest, ctx: _WriteCtx, out: rpc_pb2.DeleteRangeResponse
    ) -> None:
        s = self._s
        pairs = s._index.revisions(req.key, wire_range_end(req.range_end), ctx.read_rev)
        if pairs:
            raws = s._read_many([encode_revision(r) for _, r in pairs])
            rev = ctx.begin + 1
            for (key, _), raw in zip(pairs, raws, strict=True):
                old = KeyValue.FromString(raw)
                sub = ctx.changes
                self._stage(
                    encode_revision((rev, sub), tombstone=True),
                    KeyValue(key=key).SerializeToString(),
                )
                s._index.tombstone(key, (rev, sub))
                ctx.changes += 1
                if old.lease:
                    s._hooks.detach(old.lease, key)
                ctx.events.append(
                    Event(type=Event.DELETE, kv=KeyValue(key=key, mod_revision=rev), prev_kv=old)
                )
                if req.prev_kv:
                    out.prev_kvs.append(old)
        out.deleted = len(pairs)
        out.header.revision = ctx.read_rev

    # --- txn ---------------------------------------------------------------------

    def _compare(self, c: rpc_pb2.Compare) -> bool:
        s = self._s
        if c.target in INDEX_TARGETS:
            kvs = s._index_kvs_at(c.key, c.range_end, s._current)
        else:
            kvs = s._kvs_at(c.key, c.range_end, s._current)
        return compare_holds(c, kvs)

    def _compare_path(self, req: rpc_pb2.TxnRequest, path: list[bool]) -> None:
        """Preorder list of branch choices for this txn and the nested txns it runs
        (etcd compareToPath: all evaluated before any op executes)."""
        ok = all(self._compare(c) for c in req.compare)
        path.append(ok)
        for op in req.success if ok else req.failure:
            if op.WhichOneof("request") == "request_txn":
                self._compare_path(op.request_txn, path)

    def _check_requests(
        self,
        req: rpc_pb2.TxnRequest,
        path: list[bool],
        pos: int,
        check: Callable[[rpc_pb2.RequestOp], object],
    ) -> int:
        """Run `check(op)` on every non-txn op along the path; returns nested txns seen."""
        nested = 0
        for op in req.success if path[pos] else req.failure:
            if op.WhichOneof("request") == "request_txn":
                inner = self._check_requests(op.request_txn, path, pos + 1 + nested, check)
                nested += inner + 1
                continue
            check(op)
        return nested

    def _check_put(self, op: rpc_pb2.RequestOp) -> None:
        if op.WhichOneof("request") != "request_put":
            return
        s = self._s
        req = op.request_put
        if (req.ignore_value or req.ignore_lease) and s._live(req.key, s._current) is None:
            raise errors.KEY_NOT_FOUND()
        if req.lease and not s._hooks.exists(req.lease):
            raise errors.LEASE_NOT_FOUND()

    def _check_range(self, op: rpc_pb2.RequestOp) -> None:
        if op.WhichOneof("request") != "request_range":
            return
        s = self._s
        rev = op.request_range.revision
        if rev == 0:
            return
        if rev > s._current:
            raise errors.FUTURE_REVISION()
        if rev < s._compact:
            raise errors.COMPACTED()

    def _apply_txn(
        self,
        req: rpc_pb2.TxnRequest,
        path: list[bool],
        cursor: list[int],
        out: rpc_pb2.TxnResponse,
        ctx: _WriteCtx,
    ) -> None:
        ok = path[cursor[0]]
        out.succeeded = ok
        for op in req.success if ok else req.failure:
            which = op.WhichOneof("request")
            resp = out.responses.add()
            if which == "request_range":
                self._s._range(op.request_range, ctx.read_rev, resp.response_range)
            elif which == "request_put":
                self._put(op.request_put, ctx, resp.response_put)
            elif which == "request_delete_range":
                self._delete_range(op.request_delete_range, ctx, resp.response_delete_range)
            elif which == "request_txn":
                cursor[0] += 1
                nested = resp.response_txn
                nested.header.SetInParent()  # etcd: present but empty for nested txns
                self._apply_txn(op.request_txn, path, cursor, nested, ctx)

    def _check_open(self) -> None:
        if self._committed:
            raise RuntimeError("batch already committed")
