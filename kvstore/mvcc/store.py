"""MvccStore: etcd's multi-version key-value store on the RocksDB backend.

Owns: the current and compacted revisions, the in-memory key index (rebuilt
from the `kv` column family on open, as etcd does), reads (Range at any
uncompacted revision, hash_kv, history for watch catch-up) and the creation of
apply batches (`begin_batch`, writes live in batch.py).

Never: talks to the network, reads a clock, or decides lease expiry; never
writes to the backend outside `MvccBatch.commit`.

On-disk layout (column family `kv`; see revision.py):

    key   = main(8, BE) '_' sub(8, BE) ['t' if tombstone]
    value = mvccpb.KeyValue bytes   (a tombstone stores KeyValue{key} only)

`meta[b"mvcc/compact_revision"]` holds the last compaction revision (8 bytes BE).

Invariants:
- current_revision starts at 1 on an empty store (etcd: the first write gets 2)
  and grows by one per write op (Put, DeleteRange that deleted something, Txn
  with at least one change); compaction never changes it;
- every revision the index references is readable: from the backend, or from
  `_pending` (written by a batch not yet committed), so reads see applied ops
  immediately;
- compact_revision is -1 until the first compaction (etcd's compactMainRev);
- `_cache` holds copies of recently written/read revision values (bounded by
  `VALUE_CACHE_BYTES`): a revision's value never changes, so an entry is valid
  until compaction deletes the revision (batch.compact drops it) or the store
  is rebuilt (`_rebuild` clears it). It saves a RocksDB get per put (the
  previous value, for events/prev_kv/lease) and per hot read.

Threading: one owner (the apply loop). `MvccBatch.commit` may run in a worker
thread; it only removes entries from `_pending` after the backend write
(the cache is touched only by the owner).
"""

from __future__ import annotations

import heapq
import operator
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from kvstore import errors
from kvstore.mvcc.batch import META_COMPACT_REVISION, MvccBatch
from kvstore.mvcc.hooks import LeaseHooks, NoLeases
from kvstore.mvcc.index import TreeIndex, wire_range_end
from kvstore.mvcc.key_index import KeyIndex, Rev
from kvstore.mvcc.revision import decode_revision, encode_revision, is_tombstone, revision_start
from kvstore.pb import kv_pb2, rpc_pb2
from kvstore.storage.backend import KV, META, Backend
from kvstore.storage.codec import decode_u64

KeyValue = kv_pb2.KeyValue
Event = kv_pb2.Event
RangeRequest = rpc_pb2.RangeRequest

# Sort keys are bytes or ints, both ordered (typed loosely: mypy has no "orderable").
_SORT_KEY: dict[int, Callable[[kv_pb2.KeyValue], Any]] = {
    RangeRequest.KEY: operator.attrgetter("key"),
    RangeRequest.VERSION: operator.attrgetter("version"),
    RangeRequest.CREATE: operator.attrgetter("create_revision"),
    RangeRequest.MOD: operator.attrgetter("mod_revision"),
    RangeRequest.VALUE: operator.attrgetter("value"),
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Bound of the revision-value cache (values + a per-entry estimate of the dict
# slot and key object): 32 MB keeps the latest value of ~80k 256-byte keys, the
# hot set of puts and gets.
VALUE_CACHE_BYTES = 32 << 20
_CACHE_ENTRY_OVERHEAD = 120
# Field-2 prefixes (tag + length varint) for the common small KeyValue sizes.
_KVS_PREFIX = [b"\x12" + _varint(n) for n in range(4096)]


def _kvs_field(raw: bytes) -> bytes:
    """RangeResponse field 2 (kvs) wrapping an encoded KeyValue: tag, length, bytes."""
    n = len(raw)
    return (_KVS_PREFIX[n] if n < 4096 else b"\x12" + _varint(n)) + raw


class MvccStore:
    """etcd MVCC semantics over a `Backend`. See the module docstring for invariants."""

    def __init__(self, backend: Backend, lease_hooks: LeaseHooks | None = None) -> None:
        self._backend = backend
        self._hooks: LeaseHooks = lease_hooks if lease_hooks is not None else NoLeases()
        self._pending: dict[bytes, bytes] = {}
        self._cache: dict[bytes, bytes] = {}  # insertion order = eviction order
        self._cache_bytes = 0
        self._current = 1
        self._compact = -1
        self._index = TreeIndex()
        self._rebuild()

    # --- state ----------------------------------------------------------------

    @property
    def current_revision(self) -> int:
        return self._current

    @property
    def compact_revision(self) -> int:
        """Last compaction revision; -1 if the store was never compacted (as etcd)."""
        return self._compact

    @property
    def lease_hooks(self) -> LeaseHooks:
        return self._hooks

    def restore(self) -> None:
        """Rebuild every in-memory view from the backend, after a Raft snapshot
        install replaced its state (no batch may be staged at that point: the
        driver calls this between apply batches)."""
        self._pending.clear()
        self._compact = -1
        self._rebuild()

    def key_count(self) -> int:
        """Keys with any history in the index (live or deleted-but-uncompacted)."""
        return len(self._index)

    def begin_batch(self) -> MvccBatch:
        """Start an apply batch; its ops are visible to reads at once, durable at commit."""
        return MvccBatch(self)

    # --- reads ----------------------------------------------------------------

    def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        """etcd Range at `req.revision` (<= 0: current). header.revision = current.

        Raises errors.FUTURE_REVISION / errors.COMPACTED.
        """
        out = rpc_pb2.RangeResponse()
        self._range(req, self._current, out)
        return out

    def _range(self, req: rpc_pb2.RangeRequest, cur: int, out: rpc_pb2.RangeResponse) -> None:
        """Range as seen by a reader whose current revision is `cur` (txn-aware)."""
        rev = req.revision
        if rev > cur:
            raise errors.FUTURE_REVISION()
        if rev <= 0:
            rev = cur
        if rev < self._compact:
            raise errors.COMPACTED()
        out.header.revision = cur
        filtered = bool(
            req.min_mod_revision
            or req.max_mod_revision
            or req.min_create_revision
            or req.max_create_revision
        )
        if not req.range_end:
            # Hot path: one key -> one index lookup and at most one read.
            ki = self._index.get(req.key)
            found = ki.get(rev) if ki is not None else None
            if found is None:
                return
            out.count = 1
            if req.count_only:
                return
            if not filtered and not req.keys_only:
                out.MergeFromString(_kvs_field(self._read(encode_revision(found[0]))))
                return
            pairs = [(req.key, found[0])]
        else:
            pairs = self._index.revisions(req.key, wire_range_end(req.range_end), rev)
            out.count = len(pairs)
            if req.count_only or not pairs:
                return
        limit = req.limit if req.limit > 0 else 0
        order = req.sort_order
        if req.sort_target != RangeRequest.KEY and order == RangeRequest.NONE:
            # etcd quirk: a non-KEY target with order NONE sorts ascending, but
            # only the first limit+1 keys (in key order) that it fetched.
            order = RangeRequest.ASCEND
        key_order = req.sort_target == RangeRequest.KEY and order != RangeRequest.DESCEND
        if limit and not filtered and (key_order or req.sort_order == RangeRequest.NONE):
            pairs = pairs[: limit + 1]
        raws = self._read_many([encode_revision(r) for _, r in pairs])
        if key_order and not filtered and not req.keys_only:
            # Fast path: already in key order; splice the stored bytes directly.
            if limit and len(raws) > limit:
                raws = raws[:limit]
                out.more = True
            out.MergeFromString(b"".join(_kvs_field(raw) for raw in raws))
            return
        kvs = [KeyValue.FromString(raw) for raw in raws]
        if req.max_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision <= req.max_mod_revision]
        if req.min_mod_revision:
            kvs = [kv for kv in kvs if kv.mod_revision >= req.min_mod_revision]
        if req.max_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision <= req.max_create_revision]
        if req.min_create_revision:
            kvs = [kv for kv in kvs if kv.create_revision >= req.min_create_revision]
        if order != RangeRequest.NONE:
            key = _SORT_KEY.get(req.sort_target, _SORT_KEY[RangeRequest.KEY])
            # Stable sort: ties keep key order (etcd's Go sort.Sort is only
            # stable for small inputs; ties beyond that are unspecified there).
            kvs.sort(key=key, reverse=order == RangeRequest.DESCEND)
        if limit and len(kvs) > limit:
            kvs = kvs[:limit]
            out.more = True
        if req.keys_only:
            for kv in kvs:
                kv.ClearField("value")
        out.kvs.extend(kvs)

    def _live(self, key: bytes, at: int) -> tuple[Rev, Rev, int] | None:
        ki = self._index.get(key)
        return ki.get(at) if ki is not None else None

    def _kvs_at(self, key: bytes, range_end: bytes, at: int) -> list[kv_pb2.KeyValue]:
        pairs = self._index.revisions(key, wire_range_end(range_end), at)
        raws = self._read_many([encode_revision(r) for _, r in pairs])
        return [KeyValue.FromString(raw) for raw in raws]

    def _index_kvs_at(self, key: bytes, range_end: bytes, at: int) -> list[kv_pb2.KeyValue]:
        """KeyValues with only revision/version fields, from the index (no reads)."""
        out = []
        for ki in self._index.key_indexes(key, wire_range_end(range_end)):
            found = ki.get(at)
            if found is not None:
                mod, created, ver = found
                out.append(
                    KeyValue(key=ki.key, mod_revision=mod[0], create_revision=created[0],
                             version=ver)
                )
        return out

    def _cache_put(self, revkey: bytes, raw: bytes) -> None:
        cache = self._cache
        if revkey in cache:
            return
        cache[revkey] = raw
        self._cache_bytes += len(raw) + _CACHE_ENTRY_OVERHEAD
        while self._cache_bytes > VALUE_CACHE_BYTES and cache:
            old_key = next(iter(cache))
            self._cache_bytes -= len(cache.pop(old_key)) + _CACHE_ENTRY_OVERHEAD

    def _cache_drop(self, revkey: bytes) -> None:
        raw = self._cache.pop(revkey, None)
        if raw is not None:
            self._cache_bytes -= len(raw) + _CACHE_ENTRY_OVERHEAD

    def _read(self, revkey: bytes) -> bytes:
        raw = self._pending.get(revkey)
        if raw is None:
            raw = self._cache.get(revkey)
            if raw is None:
                raw = self._backend.get(KV, revkey)
                if raw is None:
                    raise RuntimeError(
                        f"mvcc: indexed revision {decode_revision(revkey)} missing"
                    )
                self._cache_put(revkey, raw)
        return raw

    def _read_many(self, revkeys: list[bytes]) -> list[bytes]:
        if len(revkeys) == 1:
            return [self._read(revkeys[0])]
        pending = self._pending
        cache = self._cache
        out: list[bytes | None] = [pending.get(k) or cache.get(k) for k in revkeys]
        missing = [k for k, v in zip(revkeys, out, strict=True) if v is None]
        if missing:
            fetched = iter(self._backend.multi_get(KV, missing))
            out = [v if v is not None else next(fetched) for v in out]
        if any(v is None for v in out):
            raise RuntimeError("mvcc: indexed revision missing from the backend")
        return out  # type: ignore[return-value]

    # --- whole-store reads ----------------------------------------------------

    def hash_kv(self, revision: int = 0) -> tuple[int, int]:
        """(hash, compact_revision): CRC-32 (IEEE, zlib) of b"key" then every
        (encoded revision, stored KeyValue) pair with main revision <= `revision`
        (<= 0: current), in revision order. Identical on members that applied
        the same log. Raises COMPACTED (revision <= compact) / FUTURE_REVISION.
        """
        if 0 < revision <= self._compact:
            raise errors.COMPACTED()
        if revision > self._current:
            raise errors.FUTURE_REVISION()
        if revision <= 0:
            revision = self._current
        h = zlib.crc32(b"key")
        for key, value in self._iter_kv(b"", revision_start(revision + 1)):
            h = zlib.crc32(value, zlib.crc32(key, h))
        return h & 0xFFFFFFFF, self._compact

    def events_between(
        self, start_revision: int, end_revision: int | None = None
    ) -> Iterator[tuple[int, list[kv_pb2.Event]]]:
        """History for watch catch-up: (revision, events) for each revision in
        [start_revision, end_revision] (None: current) that changed something,
        events in sub-revision order. PUT events carry the full KeyValue,
        DELETE events key + mod_revision; no prev_kv (read it with a Range at
        revision - 1). Raises COMPACTED if start_revision < compact_revision.
        """
        if start_revision < self._compact:
            raise errors.COMPACTED()
        end = self._current if end_revision is None else min(end_revision, self._current)
        start = max(start_revision, 1)
        if start > end:
            return
        group: list[kv_pb2.Event] = []
        group_rev = 0
        for revkey, raw in self._iter_kv(revision_start(start), revision_start(end + 1)):
            main = decode_revision(revkey).main
            if main != group_rev and group:
                yield group_rev, group
                group = []
            group_rev = main
            kv = KeyValue.FromString(raw)
            if is_tombstone(revkey):
                kv.mod_revision = main
                group.append(Event(type=Event.DELETE, kv=kv))
            else:
                group.append(Event(type=Event.PUT, kv=kv))
        if group:
            yield group_rev, group

    def leased_keys(self) -> Iterator[tuple[bytes, int]]:
        """(key, lease) for every live key with a lease (to rebuild the lessor's key sets)."""
        cur = self._current
        chunk: list[tuple[bytes, Rev]] = []
        for key, ki in self._index.items():
            found = ki.get(cur)
            if found is not None:
                chunk.append((key, found[0]))
            if len(chunk) >= 1024:
                yield from self._leases_of(chunk)
                chunk = []
        if chunk:
            yield from self._leases_of(chunk)

    def _leases_of(self, pairs: list[tuple[bytes, Rev]]) -> Iterator[tuple[bytes, int]]:
        raws = self._read_many([encode_revision(r) for _, r in pairs])
        for (key, _), raw in zip(pairs, raws, strict=True):
            lease = KeyValue.FromString(raw).lease
            if lease:
                yield key, lease

    def _iter_kv(self, start: bytes, end: bytes) -> Iterator[tuple[bytes, bytes]]:
        base = self._backend.iterate(KV, start, end)
        pending = [(k, v) for k, v in list(self._pending.items()) if start <= k < end]
        if not pending:
            yield from base
            return
        pending.sort()
        last = None
        for key, value in heapq.merge(base, pending):
            if key != last:  # committed but not yet dropped from _pending
                yield key, value
            last = key

    # --- open ---------------------------------------------------------------

    def _rebuild(self) -> None:
        """Rebuild the key index and revisions from the `kv` family (etcd restore)."""
        self._cache.clear()
        self._cache_bytes = 0
        raw = self._backend.get(META, META_COMPACT_REVISION)
        if raw is not None:
            self._compact = decode_u64(raw)
        keys: dict[bytes, KeyIndex] = {}
        current = 1
        for revkey, value in self._backend.iterate(KV):
            rev = decode_revision(revkey)
            kv = KeyValue.FromString(value)
            ki = keys.get(kv.key)
            if is_tombstone(revkey):
                # A tombstone of a key we never saw live was compacted away: skip it.
                if ki is not None and ki.generations[-1].revs:
                    ki.tombstone(rev)
            elif ki is None:
                ki = KeyIndex(kv.key)
                ki.restore((kv.create_revision, 0), rev, kv.version)
                keys[kv.key] = ki
            else:
                ki.put(rev)
            current = max(current, rev.main)
        self._index = TreeIndex(keys)
        self._current = max(current, self._compact)
