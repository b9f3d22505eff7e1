"""Lessor: the replicated lease state — which leases exist, their TTLs, their keys.

Owns: the applied half of leases. Grant, revoke and checkpoint are applied
from committed Raft entries inside the node's single MVCC apply batch, so a
lease, its keys' deletions and the applied index commit together. It is
also the MVCC store's `LeaseHooks` (exists / attach / detach), which keeps
each lease's key set in step with Puts and deletes.
Never: reads a clock, decides expiry, or uses per-node settings — every
member applies the same entries to the same state (expiry is decided by
the leader in leader.py and arrives here as a revoke entry).

On disk (column family `lease`, written in the apply batch):

    key   = lease ID (8 bytes, big-endian, signed)
    value = granted TTL (8 bytes BE) | remaining TTL (8 bytes BE)

`remaining TTL` is the last checkpointed remaining time in seconds (0 = no
checkpoint since the last grant/renewal: a new leader grants the full TTL).
Key sets are not stored: they are rebuilt from the kv family on open
(`MvccStore.leased_keys`), the single source of truth for attachments.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvstore import errors
from kvstore.pb import rpc_pb2
from kvstore.storage.backend import LEASE

if TYPE_CHECKING:
    from kvstore.mvcc import MvccBatch
    from kvstore.storage.backend import Backend

MAX_LEASE_TTL_S = 9_000_000_000  # etcd MaxLeaseTTL
MAX_GRANT_JOURNAL = 100_000  # undrained grant ids kept before falling back to a rescan
_ID = struct.Struct(">q")
_VALUE = struct.Struct(">qq")


@dataclass(eq=False)
class Lease:
    id: int
    ttl: int
    remaining_ttl: int = 0
    keys: set[bytes] = field(default_factory=set)


def encode_id(lease_id: int) -> bytes:
    return _ID.pack(lease_id)


class Lessor:
    """Replicated lease state. Called by the apply loop (apply_*) and by the
    MVCC store during apply (hooks); readers on the same loop see applied state."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}
        # Ids granted since the leader's clock last looked (`take_granted`), so
        # it need not scan every lease each pass; None = too many, rescan all.
        self._granted: list[int] | None = None

    def take_granted(self) -> list[int] | None:
        """Ids granted since the previous call (None: rescan every lease).
        Node-local bookkeeping for leader.py; never part of replicated state."""
        granted, self._granted = self._granted, []
        return granted

    def _note_granted(self, lease_id: int) -> None:
        granted = self._granted
        if granted is not None:
            if len(granted) >= MAX_GRANT_JOURNAL:
                self._granted = None  # nobody is draining (a follower): stop recording
            else:
                granted.append(lease_id)

    # ---------------------------------------------------------------- open
    def recover(self, backend: Backend, leased_keys: Iterable[tuple[bytes, int]]) -> None:
        """Rebuild from the `lease` family and the store's (key, lease) pairs
        (at start, and after a Raft snapshot install replaced the state)."""
        self._leases.clear()
        self._granted = None
        for raw_id, raw in backend.iterate(LEASE):
            (lease_id,) = _ID.unpack(raw_id)
            ttl, remaining = _VALUE.unpack(raw)
            self._leases[lease_id] = Lease(lease_id, ttl, remaining)
        for key, lease_id in leased_keys:
            lease = self._leases.get(lease_id)
            if lease is not None:
                lease.keys.add(key)

    # ---------------------------------------------------------- LeaseHooks
    def exists(self, lease_id: int) -> bool:
        return lease_id in self._leases

    def attach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.add(key)

    def detach(self, lease_id: int, key: bytes) -> None:
        lease = self._leases.get(lease_id)
        if lease is not None:
            lease.keys.discard(key)

    # ---------------------------------------------------------------- apply
    def apply_grant(
        self, batch: MvccBatch, req: rpc_pb2.LeaseGrantRequest
    ) -> rpc_pb2.LeaseGrantResponse:
        """Create lease req.ID with req.TTL (already clamped by the proposer).

        Raises LEASE_EXISTS, LEASE_TTL_TOO_LARGE."""
        if req.ID in self._leases:
            raise errors.LEASE_EXISTS()
        if req.TTL > MAX_LEASE_TTL_S:
            raise errors.LEASE_TTL_TOO_LARGE()
        if req.ID == 0:
            raise errors.LEASE_NOT_FOUND()  # 0 means "no lease"; proposers never send it
        lease = Lease(req.ID, req.TTL)
        self._leases[req.ID] = lease
        self._note_granted(req.ID)
        self._persist(batch, lease)
        return rpc_pb2.LeaseGrantResponse(ID=req.ID, TTL=req.TTL)

    def apply_revoke(
        self, batch: MvccBatch, req: rpc_pb2.LeaseRevokeRequest
    ) -> rpc_pb2.LeaseRevokeResponse:
        """Delete every key of the lease in ONE revision (one DELETE event per
        key, in key order, as etcd's revoke txn), then the lease. Raises
        LEASE_NOT_FOUND."""
        lease = self._leases.get(req.ID)
        if lease is None:
            raise errors.LEASE_NOT_FOUND()
        resp = rpc_pb2.LeaseRevokeResponse()
        keys = sorted(lease.keys)
        if keys:
            txn = rpc_pb2.TxnRequest(
                success=[
                    rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=k))
                    for k in keys
                ]
            )
            resp.header.revision = batch.txn(txn).header.revision
        del self._leases[req.ID]
        batch.delete_raw(LEASE, encode_id(req.ID))
        return resp

    def apply_checkpoint(
        self, batch: MvccBatch, req: rpc_pb2.LeaseCheckpointRequest
    ) -> rpc_pb2.LeaseCheckpointResponse:
        """Record remaining TTLs (0 clears). Unknown leases are skipped: a
        checkpoint may race with the lease's revoke."""
        for cp in req.checkpoints:
            lease = self._leases.get(cp.ID)
            if lease is None:
                continue
            lease.remaining_ttl = max(0, cp.remaining_TTL)
            self._persist(batch, lease)
        return rpc_pb2.LeaseCheckpointResponse()

    def _persist(self, batch: MvccBatch, lease: Lease) -> None:
        batch.put_raw(LEASE, encode_id(lease.id), _VALUE.pack(lease.ttl, lease.remaining_ttl))

    # ---------------------------------------------------------------- reads
    def get(self, lease_id: int) -> Lease | None:
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        return list(self._leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def __len__(self) -> int:
        return len(self._leases)

    def keys_of(self, lease_id: int) -> list[bytes]:
        lease = self._leases.get(lease_id)
        return sorted(lease.keys) if lease is not None else []
