"""Backend: the only module that touches RocksDB (through rocksdict).

Owns: one rocksdict `Rdict` opened in raw mode (bytes keys, bytewise order)
with the column families in `COLUMN_FAMILIES`, atomic multi-family write
batches, point reads, half-open range iteration, consistent read views,
checkpoints and size figures.

Never: interprets keys or values (mvcc/, raft storage and the server own the
encodings); never runs a write outside `write()`.

Invariants:
- every column family in `COLUMN_FAMILIES` exists after `open()`; families
  found on disk that we do not know are opened too (RocksDB requires it);
- one `write()` is atomic across families (one RocksDB WriteBatch);
- `snapshot()` is a point-in-time view across all families: it is taken under
  the same lock as `write()`, so no batch is half visible.

Threading: callers use one thread (the event loop) plus, at most, worker
threads running `write()` through `asyncio.to_thread`. The lock below only
orders `write()` against `snapshot()`; reads need no lock.

rocksdict quirk (0.3.29): `Snapshot.iter()` / `Snapshot.items()` ignore the
snapshot and read the live database; only `Snapshot[key]` honours it. A plain
`RdictIter` however pins the state it was created in and can be re-seeked, so
`BackendSnapshot` holds one pinned iterator per family and re-seeks it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import rocksdict

KV = "kv"
META = "meta"
LEASE = "lease"
RAFT_LOG = "raft_log"
RAFT_STATE = "raft_state"
COLUMN_FAMILIES: tuple[str, ...] = (KV, META, LEASE, RAFT_LOG, RAFT_STATE)


# One block cache shared by every family: MVCC point reads by revision key are
# random, so cached blocks + bloom filters matter more than sequential speed.
_BLOCK_CACHE_BYTES = 64 << 20
_BLOOM_BITS_PER_KEY = 10
_MAX_TOTAL_WAL_BYTES = 16 << 20


def _family_options(cache: rocksdict.Cache) -> rocksdict.Options:
    opts = rocksdict.Options(raw_mode=True)
    table = rocksdict.BlockBasedOptions()
    table.set_block_cache(cache)
    table.set_bloom_filter(_BLOOM_BITS_PER_KEY, False)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    opts.set_block_based_table_factory(table)
    return opts


def _db_options(cache: rocksdict.Cache) -> rocksdict.Options:
    opts = _family_options(cache)
    opts.create_if_missing(True)
    opts.create_missing_column_families(True)
    # The machine is small; two background jobs keep flush + compaction moving.
    opts.set_max_background_jobs(2)
    # Bound the write-ahead log. A WAL file is deleted only once every family
    # with data in it has flushed, and `meta` / `raft_state` take a tiny write
    # on every apply but (64 MiB memtables) almost never fill up: by default
    # RocksDB lets the WAL grow to 4 x the sum of all memtable budgets (2.5 GiB
    # here) before it forces those flushes, so with compaction deleting old
    # revisions the disk still grew by every byte written (measured with
    # benchmarks/disk_growth_bench.py). Past this size RocksDB flushes the
    # families pinning the oldest WAL file, which it then deletes.
    opts.set_max_total_wal_size(_MAX_TOTAL_WAL_BYTES)
    return opts


class WriteBatch:
    """Buffered puts/deletes over named column families; applied by `Backend.write`.

    Single use: after `Backend.write(batch)` the batch is consumed.
    """

    __slots__ = ("_wb", "_handles")

    def __init__(self, handles: dict[str, rocksdict.ColumnFamily]) -> None:
        self._wb = rocksdict.WriteBatch(raw_mode=True)
        self._handles = handles

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        self._wb.put(key, value, self._handles[cf])

    def delete(self, cf: str, key: bytes) -> None:
        self._wb.delete(key, self._handles[cf])

    def delete_range(self, cf: str, start: bytes, end: bytes) -> None:
        """Delete every key in [start, end) of `cf`."""
        self._wb.delete_range(start, end, self._handles[cf])

    def __len__(self) -> int:
        return self._wb.len()

    def size_bytes(self) -> int:
        return self._wb.size_in_bytes()


class BackendSnapshot:
    """A consistent, read-only view of every column family at one instant.

    Use as a context manager (or call `close()`): it pins RocksDB memtables and
    files until closed.
    """

    def __init__(self, families: dict[str, rocksdict.Rdict]) -> None:
        # Point reads: rocksdict Snapshot honours the snapshot for __getitem__.
        self._snaps = {name: fam.snapshot() for name, fam in families.items()}
        # Iteration: a RdictIter pins the state at creation (see module doc).
        self._iters: dict[str, rocksdict.RdictIter] = {
            name: fam.iter() for name, fam in families.items()
        }
        self._closed = False

    def get(self, cf: str, key: bytes) -> bytes | None:
        self._check_open()
        try:
            return self._snaps[cf][key]
        except KeyError:
            return None
        except Exception as exc:  # rocksdict raises a bare Exception("key not found")
            if "not found" in str(exc):
                return None
            raise

    def iterate(
        self, cf: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of `cf` with start <= key < end, ascending bytewise.

        Several iterations over the same family may interleave: the shared
        cursor is re-seeked when another user moved it.
        """
        self._check_open()
        it = self._iters[cf]
        it.seek(start)
        last: bytes | None = None
        while True:
            if last is not None:
                # Someone else may have moved the shared cursor since our yield.
                if not it.valid() or it.key() != last:
                    it.seek(last)
                it.next()
            if self._closed or not it.valid():
                return
            key = it.key()
            if end is not None and key >= end:
                return
            yield key, it.value()
            last = key

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._iters.clear()
            self._snaps.clear()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("snapshot is closed")

    def __enter__(self) -> BackendSnapshot:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Backend:
    """The RocksDB database of one member. Create with `Backend.open(path)`."""

    def __init__(self, path: str, db: rocksdict.Rdict, families: list[str]) -> None:
        self.path = path
        self._db = db
        self._families: dict[str, rocksdict.Rdict] = {
            name: db.get_column_family(name) for name in families
        }
        self._handles: dict[str, rocksdict.ColumnFamily] = {
            name: db.get_column_family_handle(name) for name in families
        }
        self._write_lock = threading.Lock()
        self._sync_opts = rocksdict.WriteOptions()
        self._sync_opts.sync = True
        self._nosync_opts = rocksdict.WriteOptions()
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Backend:
        """Open (creating if missing) the database at `path` with all column families."""
        path = str(path)
        names = list(COLUMN_FAMILIES)
        if Path(path, "CURRENT").exists():
            for name in rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True)):
                if name not in names and name != "default":
                    names.append(name)
        cache = rocksdict.Cache(_BLOCK_CACHE_BYTES)
        column_families = {name: _family_options(cache) for name in names}
        db = rocksdict.Rdict(path, _db_options(cache), column_families=column_families)
        return cls(path, db, names)

    # --- writes -------------------------------------------------------------

    def batch(self) -> WriteBatch:
        """A new empty write batch over this backend's column families."""
        return WriteBatch(self._handles)

    def write(self, batch: WriteBatch, sync: bool) -> None:
        """Apply `batch` atomically; with `sync=True` it is fsynced before return.

        May run in a worker thread (asyncio.to_thread): rocksdict releases the
        GIL while RocksDB writes (measured: benchmarks/backend_gil.py).
        """
        self._check_open()
        if len(batch) == 0:
            return
        with self._write_lock:
            self._db.write(batch._wb, self._sync_opts if sync else self._nosync_opts)

    # --- reads --------------------------------------------------------------

    def get(self, cf: str, key: bytes) -> bytes | None:
        """The value of `key` in `cf`, or None."""
        return self._families[cf].get(key)

    def multi_get(self, cf: str, keys: list[bytes]) -> list[bytes | None]:
        """Values of `keys` in `cf` (None where missing), in one RocksDB call."""
        if not keys:
            return []
        return self._families[cf].get(keys)

    def iterate(
        self, cf: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs of `cf` with start <= key < end (None: no end), bytewise order.

        The iterator sees the database as of its first step (RocksDB iterators
        pin an implicit snapshot).
        """
        fam = self._families[cf]
        if end is not None:
            opts = rocksdict.ReadOptions()
            opts.set_iterate_upper_bound(end)
            it = fam.iter(opts)
        else:
            it = fam.iter()
        it.seek(start)
        while it.valid():
            yield it.key(), it.value()
            it.next()

    def snapshot(self) -> BackendSnapshot:
        """A consistent read view of all column families (close it when done)."""
        self._check_open()
        with self._write_lock:
            return BackendSnapshot(self._families)

    # --- maintenance --------------------------------------------------------

    def checkpoint(self, directory: str | os.PathLike[str]) -> None:
        """Write an openable copy of the database (hard links where possible) to `directory`.

        `directory` must not exist yet. The copy includes every column family.
        """
        self._check_open()
        with self._write_lock:
            rocksdict.Checkpoint(self._db).create_checkpoint(str(directory))

    def size_bytes(self) -> int:
        """Bytes used on disk by the database directory (SST files, WAL, manifest)."""
        total = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
        return total

    def size_in_use_bytes(self) -> int:
        """RocksDB's estimate of live data (plus memtables) over all families."""
        total = 0
        for fam in self._families.values():
            total += fam.property_int_value("rocksdb.estimate-live-data-size") or 0
            total += fam.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        return total

    def flush(self) -> None:
        """Flush memtables of every family to SST files (tests, before checkpoints)."""
        for fam in self._families.values():
            fam.flush()

    @property
    def column_families(self) -> tuple[str, ...]:
        return tuple(self._families)

    def close(self) -> None:
        """Close the database; idempotent. Outstanding snapshots must be closed first."""
        if self._closed:
            return
        self._closed = True
        for fam in self._families.values():
            fam.close()
        self._families.clear()
        self._handles.clear()
        self._db.close()
        del self._db

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("backend is closed")
