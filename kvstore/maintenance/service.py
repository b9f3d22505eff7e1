"""MaintenanceService: the Maintenance RPCs that need more than the KvServer.

Owns: Hash, HashKV, Snapshot (backup streamed in etcd's chunking), Defragment
(online, in a worker thread), Alarm (every action goes through Raft, as in
etcd) and the write-time quota check that raises NOSPACE; `status_errors()`
for StatusResponse.errors. `KvServer` delegates to it (`kv.maintenance`).
Never: touches Raft or the MVCC batch directly; never blocks the event loop
on RocksDB-wide work (backup writing and compaction run in worker threads).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from google.protobuf.message import Message

from kvstore import errors
from kvstore.maintenance.backup import iter_chunks, write_backup
from kvstore.maintenance.defrag import defragment
from kvstore.maintenance.hash import backend_hash, hash_kv_response
from kvstore.maintenance.quota import NOSPACE, AlarmTable, QuotaGuard
from kvstore.maintenance.snapshot_install import ThreadWork
from kvstore.pb import rpc_pb2
from kvstore.seams import Proposer
from kvstore.storage.backend import Backend

log = logging.getLogger(__name__)

SIZE_CACHE_S = 0.5


class CachedSize:
    """A db-size reading refreshed at most every `ttl` seconds (the quota check
    runs on every write; scanning the db directory each time would cost more
    than the write). Writes admitted in between are added with `grow`, so a
    burst cannot overshoot the quota while the reading is stale."""

    def __init__(self, read: Callable[[], int], ttl: float = SIZE_CACHE_S) -> None:
        self._read = read
        self._ttl = ttl
        self._value = 0
        self._at = float("-inf")

    def __call__(self) -> int:
        now = time.monotonic()
        if now - self._at >= self._ttl:
            self._value = int(self._read())
            self._at = now
        return self._value

    def grow(self, nbytes: int) -> None:
        self._value += nbytes

    def invalidate(self) -> None:
        self._at = float("-inf")


class MaintenanceService:
    def __init__(
        self,
        kv: Proposer,
        backend: Backend,
        alarms: AlarmTable,
        *,
        quota_bytes: int,
        spool: Path,
    ) -> None:
        self._kv = kv
        self._backend = backend
        self.alarms = alarms
        self.db_size = CachedSize(backend.size_bytes)
        self.quota = QuotaGuard(quota_bytes, self.db_size, alarms, grow=self.db_size.grow)
        self._spool = spool
        self._seq = itertools.count(1)
        self._threads = ThreadWork()

    async def stop(self) -> None:
        """Wait for backup/hash/defrag threads still reading the backend."""
        await self._threads.drain()

    # ------------------------------------------------------------ status
    def status_errors(self) -> list[str]:
        return self.alarms.status_errors()

    # -------------------------------------------------------------- hash
    async def hash(self, req: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        h = await self._threads.run(backend_hash, self._backend)
        return rpc_pb2.HashResponse(header=self._kv.header(), hash=h)

    def hash_kv(self, req: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        # In the loop: the MVCC store's pending view is owned by the loop.
        return hash_kv_response(self._kv.store, req.revision, self._kv.header())

    # ---------------------------------------------------------- snapshot
    async def snapshot(
        self, req: rpc_pb2.SnapshotRequest
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """Consistent backup streamed as etcd does: 32 KiB blobs with
        remaining_bytes, then the 32-byte SHA-256 alone."""
        self._spool.mkdir(parents=True, exist_ok=True)
        path = self._spool / f"backup-{next(self._seq)}.snap"
        try:
            await self._threads.run(write_backup, self._backend, path)
            for blob, remaining in iter_chunks(path):
                yield rpc_pb2.SnapshotResponse(remaining_bytes=remaining, blob=blob)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    # -------------------------------------------------------- defragment
    async def defragment(self, req: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        result = await self._threads.run(defragment, self._backend)
        self.db_size.invalidate()
        log.info(
            "defragmented: %d -> %d bytes in %.2fs",
            result.size_before, result.size_after, result.seconds,
        )  # fmt: skip
        return rpc_pb2.DefragmentResponse()  # no header, as etcd 3.4

    # ------------------------------------------------------------- alarm
    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        resp = await self._kv.propose("alarm", req)
        # etcd 3.4 answers Alarm without a header (`alarm list -w json` prints
        # `{}` when no alarm is raised), so none is added here.
        resp.ClearField("header")
        if req.action != 0:
            self.db_size.invalidate()  # re-read the real size before the next write
        return resp

    # ------------------------------------------------------------- quota
    async def check_write(self, kind: str, req: Message) -> None:
        """Raise NO_SPACE if this write must be refused (etcd quotaKVServer)."""
        if not self.quota.check(kind, req):
            return
        if not self.alarms.has(NOSPACE):
            await self._raise_nospace()
        raise errors.NO_SPACE()

    async def _raise_nospace(self) -> None:
        req = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE,
            memberID=self._kv.member_id,
            alarm=rpc_pb2.NOSPACE,
        )
        log.warning(
            "database size %d exceeds quota %d: raising NOSPACE alarm",
            self.db_size(), self.quota.quota_bytes,
        )  # fmt: skip
        with contextlib.suppress(errors.EtcdError):
            await self._kv.propose("alarm", req)
