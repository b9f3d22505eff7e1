"""Backend: the only module that touches RocksDB (through rocksdict).

Owns: one rocksdict `Rdict` opened in raw mode (bytes keys, bytewise order)
with the column families in `COLUMN_FAMILIES`, atomic multi-family write
batches, point reads, half-open range iteration, consistent read views,
checkpoints and size figures; and the state generations (below), including
their crash recovery in `open()`.

Never: interprets keys or values (mvcc/, raft storage and the server own the
encodings); never runs a write outside `write()`.

Invariants:
- every column family in `COLUMN_FAMILIES` exists after `open()`; families
  found on disk that we do not know are opened too (RocksDB requires it);
- one `write()` is atomic across families (one RocksDB WriteBatch);
- `snapshot()` is a point-in-time view across all families: it is taken under
  the same lock as `write()`, so no batch is half visible.

State generations (replacing the whole state machine in bounded memory): the
families in `STATE_FAMILIES` (kv, meta, lease) are logical names mapped to
the RocksDB families of the current generation: generation 0 is `kv`, `meta`,
`lease`; generation g > 0 is `kv@g<g>` ... The generation number lives in
the `default` family under `GENERATION_KEY` (the Backend's own key; nobody else
uses `default`). `stage_state()` creates the families of generation g+1,
which the caller fills with bounded, unsynced batches nobody else can see;
`StagedState.commit()` then writes the last batch, the caller's own final
operations (e.g. the Raft log reset) and the new generation number in ONE
synced WriteBatch: that write is the switch. Only then are the in-memory
handles swapped and the old generation's families dropped.
Crash recovery (`open()`): the stored generation names the complete state; the
families of any other generation (a build that never committed, or an old
one whose drop did not happen) are dropped. So a crash at any point leaves
the complete old or the complete new state, never a mix. `raft_log` and
`raft_state` are not generational (they are reset in the switching batch).
Objects taken before a switch (BackendSnapshot, `iterate()` generators) keep
reading the old generation: RocksDB keeps a dropped family's data alive until
the last reference to it goes away.

Threading: callers use one thread (the event loop) plus, at most, worker
threads running `write()` through `asyncio.to_thread`. The lock below only
orders `write()` against `snapshot()`; reads need no lock.

rocksdict quirk (0.3.29): `Snapshot.iter()` / `Snapshot.items()` ignore the
snapshot and read the live database; only `Snapshot[key]` honours it. A plain
`RdictIter` however pins the state it was created in and can be re-seeked, so
`BackendSnapshot` holds one pinned iterator per family and re-seeks it.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import rocksdict

KV = "kv"
META = "meta"
LEASE = "lease"
RAFT_LOG = "raft_log"
RAFT_STATE = "raft_state"
COLUMN_FAMILIES: tuple[str, ...] = (KV, META, LEASE, RAFT_LOG, RAFT_STATE)
# Replaced together by a state install (see "State generations" above).
STATE_FAMILIES: tuple[str, ...] = (KV, META, LEASE)
GENERATION_KEY = b"kvstore/state_generation"
# Bulk writes of a staged state are cut into batches of about this size.
STAGE_BATCH_BYTES = 4 << 20
_GEN_NAME = re.compile(r"^(?P<base>[a-z_]+)@g(?P<gen>[0-9]+)$")
_U64 = struct.Struct(">Q")
_RECORD_OVERHEAD = 16  # rough WriteBatch bytes per put besides key and value


class StorageCorruption(Exception):
    """RocksDB reported an error mid-iteration (e.g. a block checksum
    mismatch): the data read so far is NOT the whole range."""


def _raise_if_failed(it: rocksdict.RdictIter) -> None:
    """An iterator that stops being valid has either reached the end or hit
    an error; only `status()` tells which (it raises on error). Without this
    check a corrupt block silently ends a range, as if the data ended there."""
    try:
        it.status()
    except Exception as exc:  # noqa: BLE001 - rocksdict raises plain exceptions
        raise StorageCorruption(str(exc).splitlines()[0] if str(exc) else repr(exc)) from exc


def physical_name(family: str, generation: int) -> str:
    """The RocksDB family holding logical state family `family` in `generation`."""
    return family if generation == 0 else f"{family}@g{generation}"


def _logical_name(name: str) -> str:
    m = _GEN_NAME.match(name)
    return m["base"] if m is not None and m["base"] in STATE_FAMILIES else name


def _generation_of(name: str) -> int | None:
    """Generation of a state family's RocksDB name; None for other families."""
    if name in STATE_FAMILIES:
        return 0
    m = _GEN_NAME.match(name)
    if m is None or m["base"] not in STATE_FAMILIES:
        return None
    return int(m["gen"])


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
            if self._closed:
                return
            if not it.valid():
                _raise_if_failed(it)
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

    def __init__(
        self,
        path: str,
        db: rocksdict.Rdict,
        families: list[str],
        generation: int = 0,
        cache: rocksdict.Cache | None = None,
    ) -> None:
        """`families`: logical names; state families resolve to `generation`'s."""
        self.path = path
        self._db = db
        self._cache = cache if cache is not None else rocksdict.Cache(_BLOCK_CACHE_BYTES)
        self.generation = generation
        physical = {
            name: physical_name(name, generation) if name in STATE_FAMILIES else name
            for name in families
        }
        self._families: dict[str, rocksdict.Rdict] = {
            name: db.get_column_family(real) for name, real in physical.items()
        }
        self._handles: dict[str, rocksdict.ColumnFamily] = {
            name: db.get_column_family_handle(real) for name, real in physical.items()
        }
        self._physical = physical
        self._write_lock = threading.Lock()
        self._sync_opts = rocksdict.WriteOptions()
        self._sync_opts.sync = True
        self._nosync_opts = rocksdict.WriteOptions()
        self._staging = False
        self._switch_failed = False
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Backend:
        """Open (creating if missing) the database at `path` with all column families.

        Also the crash recovery of state generations: the families of any
        generation other than the stored one are dropped (see module doc)."""
        path = str(path)
        on_disk: list[str] = []
        if Path(path, "CURRENT").exists():
            on_disk = [
                name
                for name in rocksdict.Rdict.list_cf(path, rocksdict.Options(raw_mode=True))
                if name != "default"
            ]
        # A brand-new database starts at generation 0; an existing one may be
        # at another, so its state families are created after reading it.
        names = list(on_disk) if on_disk else list(COLUMN_FAMILIES)
        for name in COLUMN_FAMILIES:
            if name not in STATE_FAMILIES and name not in names:
                names.append(name)
        cache = rocksdict.Cache(_BLOCK_CACHE_BYTES)
        column_families = {name: _family_options(cache) for name in names}
        db = rocksdict.Rdict(path, _db_options(cache), column_families=column_families)
        try:
            raw = db.get(GENERATION_KEY)
            generation = _U64.unpack(bytes(raw))[0] if raw is not None else 0
            for name in list(names):
                gen = _generation_of(name)
                if gen is not None and gen != generation:
                    db.drop_column_family(name)  # unfinished build or undropped old state
                    names.remove(name)
            for family in STATE_FAMILIES:
                real = physical_name(family, generation)
                if real not in names:
                    db.create_column_family(real, _family_options(cache))
                    names.append(real)
        except BaseException:
            db.close()
            raise
        logical = [_logical_name(name) for name in names]
        order = [n for n in COLUMN_FAMILIES if n in logical]
        order += [n for n in logical if n not in COLUMN_FAMILIES]
        return cls(path, db, order, generation, cache)

    # --- state generations -------------------------------------------------------

    def stage_state(self, batch_bytes: int = STAGE_BATCH_BYTES) -> StagedState:
        """Start building the next generation of the state families (one at a time).

        Use as a context manager: leaving it without `commit()` drops what was built."""
        self._check_open()
        if self._staging:
            raise RuntimeError("a state install is already being staged")
        if self._switch_failed:
            raise RuntimeError("a state switch failed: reopen the backend (restart) first")
        staged = StagedState(self, self.generation + 1, batch_bytes)
        self._staging = True
        return staged

    def _create_families(self, generation: int) -> dict[str, str]:
        names = {family: physical_name(family, generation) for family in STATE_FAMILIES}
        for real in names.values():
            # A leftover of the same name (a failed abort) is garbage: start clean.
            with contextlib.suppress(Exception):
                self._db.drop_column_family(real)
            self._db.create_column_family(real, _family_options(self._cache))
        return names

    def _drop_families(self, names: list[str]) -> None:
        for real in names:
            with contextlib.suppress(Exception):  # recovery in open() retries
                self._db.drop_column_family(real)

    def _adopt(self, generation: int, names: dict[str, str]) -> list[str]:
        """Point the state families at `generation` (under the write lock); returns
        the RocksDB names of the families that were replaced."""
        old = [self._physical[family] for family in names]
        physical = {**self._physical, **names}
        families = dict(self._families)
        handles = dict(self._handles)
        for family, real in names.items():
            families[family] = self._db.get_column_family(real)
            handles[family] = self._db.get_column_family_handle(real)
        # New dicts, not in-place updates: a WriteBatch made before the switch
        # keeps the old handles and fails loudly instead of writing into the
        # new state.
        self._physical, self._families, self._handles = physical, families, handles
        self.generation = generation
        return old

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
        # rocksdict's stubs type a key list as list[str | int | ...] (invariant).
        return self._families[cf].get(keys)  # type: ignore[arg-type,return-value]

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
        _raise_if_failed(it)

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


class StagedState:
    """The next generation of the state families, being built (Backend.stage_state).

    `put()` buffers into a WriteBatch written (unsynced) whenever it holds about
    `batch_bytes`, so memory stays bounded whatever the state size; nothing
    written here is visible through the Backend until `commit()`.
    """

    def __init__(self, backend: Backend, generation: int, batch_bytes: int) -> None:
        self._backend = backend
        self.generation = generation
        self._limit = max(1, batch_bytes)
        self._names = backend._create_families(generation)
        handles = dict(backend._handles)
        for family, real in self._names.items():
            handles[family] = backend._db.get_column_family_handle(real)
        self._handles = handles
        self._batch = WriteBatch(handles)
        self._pending = 0
        self._done = False
        # Figures for tests and benchmarks.
        self.batches_written = 0
        self.max_batch_bytes = 0
        self.records = 0

    def put(self, cf: str, key: bytes, value: bytes) -> None:
        """Add a record of state family `cf` (kv, meta or lease) to the new state."""
        if cf not in self._names:
            raise ValueError(f"{cf!r} is not a state family")
        self._check_active()
        self._batch.put(cf, key, value)
        self.records += 1
        self._pending += len(key) + len(value) + _RECORD_OVERHEAD
        if self._pending >= self._limit:
            self._flush()

    def flush(self) -> None:
        """Write what is buffered now (unsynced), e.g. from the worker thread that
        built the state, so the switch later writes only the final operations."""
        self._check_active()
        self._flush()

    def _flush(self) -> None:
        batch = self._batch
        if len(batch) == 0:
            return
        self._backend._check_open()
        self.max_batch_bytes = max(self.max_batch_bytes, batch.size_bytes())
        # Unsynced: the synced switch in commit() makes everything before it durable.
        self._backend._db.write(batch._wb, self._backend._nosync_opts)
        self.batches_written += 1
        self._batch = WriteBatch(self._handles)
        self._pending = 0

    def commit(self, final: Callable[[WriteBatch], None] | None = None) -> None:
        """Switch to the new state: ONE synced write of the last buffered records,
        whatever `final(batch)` adds (it may touch any family, e.g. reset the Raft
        log; state families there mean the NEW ones) and the generation number.
        Then swap the Backend's handles and drop the old generation."""
        self._check_active()
        batch = self._batch
        if final is not None:
            final(batch)
        batch._wb.put(GENERATION_KEY, _U64.pack(self.generation))
        backend = self._backend
        backend._check_open()
        self.max_batch_bytes = max(self.max_batch_bytes, batch.size_bytes())
        with backend._write_lock:
            # From here on neither generation is dropped in this process: if the
            # write fails it may still be durable (e.g. a failed fsync of a WAL
            # record that recovery replays), so only open() can tell which
            # generation is the state, and this Backend refuses further installs.
            self._done = True
            backend._staging = False
            try:
                self._write_switch(batch)
                old = backend._adopt(self.generation, self._names)
            except BaseException:
                backend._switch_failed = True
                raise
            self.batches_written += 1
        backend._drop_families(old)

    def _write_switch(self, batch: WriteBatch) -> None:
        self._backend._db.write(batch._wb, self._backend._sync_opts)

    def abort(self) -> None:
        """Drop what was built; the Backend keeps its current state. Idempotent."""
        if self._done:
            return
        self._done = True
        self._backend._staging = False
        self._batch = WriteBatch(self._handles)
        if not self._backend._closed:
            self._backend._drop_families(list(self._names.values()))

    def _check_active(self) -> None:
        if self._done:
            raise RuntimeError("staged state already committed or aborted")

    def __enter__(self) -> StagedState:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()
