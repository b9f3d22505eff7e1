"""Hashes for consistency checks: `Maintenance/Hash` and `Maintenance/HashKV`.

Owns: `backend_hash` — CRC-32 (IEEE) over the replicated state of one
consistent backend view (MVCC revisions, leases, replicated meta), the
analogue of etcd's whole-bbolt hash (testing only, like etcd's) — and
`hash_kv_response`, which wraps `MvccStore.hash_kv` into the RPC answer.
Never: writes anything; never hashes member-local identity keys or the Raft
log (members that applied the same entries must agree).
"""

from __future__ import annotations

import zlib

from kvstore.maintenance.backup import iter_view
from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import Backend


def backend_hash(backend: Backend) -> int:
    """CRC-32 of every (family, key, value) of the replicated state, in order.

    The applied index is part of `meta`, so two members agree only when they
    have applied the same log prefix (etcd's Hash has the same property)."""
    h = 0
    with backend.snapshot() as view:
        for family, key, value in iter_view(view):
            h = zlib.crc32(value, zlib.crc32(key, zlib.crc32(family.encode(), h)))
    return h & 0xFFFFFFFF


def hash_kv_response(
    store: MvccStore, revision: int, header: rpc_pb2.ResponseHeader
) -> rpc_pb2.HashKVResponse:
    """HashKVResponse for `revision` (0: current). Raises COMPACTED / FUTURE_REVISION."""
    h, compact = store.hash_kv(revision)
    resp = rpc_pb2.HashKVResponse(hash=h, compact_revision=compact)  # -1: never, like etcd
    resp.header.CopyFrom(header)
    return resp
