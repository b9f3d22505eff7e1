"""Raft snapshots, state-machine side: the state file a leader sends, and the
atomic install of a received one on a follower.

Owns:
- `BackupSnapshotSource` (leader): the `SnapshotSource` of the transport's
  SnapshotSender (transport/snapshot_send.py). It writes a snapshot file
  from ONE consistent backend view (backup.py), in a worker thread, and says
  which applied index/term and membership that file holds.
- `SnapshotInstaller` (follower): called by the driver when Raft hands out the
  snapshot in a Ready, BEFORE the Raft write. Unless that file was staged
  ahead (`prepare`, awaited by the transport's SnapshotReceiver before Raft
  sees the message), it verifies the file's checksum, then builds the MVCC
  data, leases and replicated meta as the backend's next state generation in
  bounded batches (never the whole state in memory); then it switches, on
  the loop, with ONE small synced WriteBatch that also sets the applied index
  and resets the Raft log/hard state to the snapshot point; then the
  in-memory views are reloaded. A crash before that write leaves the old
  state (the half-built generation is dropped when the backend is opened, the
  spooled file removed on the next start); after it, the new one — never a mix.
- `ThreadWork`: worker-thread calls that must finish before the backend closes.

Never: touches the network (sending and receiving are transport/'s);
blocks the event loop on writing a file (worker thread); installs a file
whose checksum does not match; holds a received state in memory (at most
one ~4 MiB write batch of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvstore import failpoints as fp
from kvstore.maintenance.backup import (
    APPLIED_INDEX_KEY,
    APPLIED_TERM_KEY,
    LOCAL_META_KEYS,
    BackupError,
    read_records,
    verify_file,
    write_backup,
)
from kvstore.raft.types import (
    ConfState,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from kvstore.storage.backend import STAGE_BATCH_BYTES, StagedState
from kvstore.storage.raft_log import (
    HARD_STATE_KEY,
    LAST_INDEX_KEY,
    LOG_CF,
    LOG_START_KEY,
    SNAPSHOT_KEY,
    STATE_CF,
    encode_snapshot,
)
from kvstore.storage.snapshot_spool import file_of, remove_received

log = logging.getLogger(__name__)

_KEY_END = b"\xff" * 64
_U64 = struct.Struct(">Q")
_U64X2 = struct.Struct(">QQ")
_U64X3 = struct.Struct(">QQQ")


def conf_state_from_members(raw: bytes) -> ConfState:
    """ConfState (voters, learners) of a JSON member table (server/membership.py)."""
    if not raw:
        return ConfState()
    members = json.loads(raw).get("members", [])
    voters = sorted(int(m["id"]) for m in members if not m.get("is_learner"))
    learners = sorted(int(m["id"]) for m in members if m.get("is_learner"))
    return ConfState(tuple(voters), tuple(learners))


class ThreadWork:
    """Worker-thread calls that must finish before the backend closes.

    Cancelling the awaiting task does not stop a thread; `drain()` (called on
    stop, before the node closes RocksDB) waits for the ones still running so
    no thread reads a closed database."""

    def __init__(self) -> None:
        self._running: set[asyncio.Future[Any]] = set()

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._running.add(fut)
        fut.add_done_callback(self._running.discard)
        return await asyncio.shield(fut)

    async def drain(self, timeout: float = 60.0) -> None:
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout)


class BackupSnapshotSource:
    """Leader side: the state file a SnapshotSender streams (one consistent view)."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self._threads = ThreadWork()

    async def write(self, path: Path) -> tuple[SnapshotMetadata, int]:
        """Write the state to `path`: (what it holds, its size in bytes)."""
        info = await self._threads.run(write_backup, self._backend, path)
        meta = SnapshotMetadata(
            info.applied_index, info.applied_term, conf_state_from_members(info.members)
        )
        return meta, info.size

    async def drain(self) -> None:
        await self._threads.drain()


class _Prepared:
    """A state being / already staged from one spooled file (SnapshotInstaller.prepare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.staged: StagedState | None = None
        self.cancel = threading.Event()
        self.finished = threading.Event()  # the worker thread is done with `staged`
        self.ok = False


class _Cancelled(Exception):
    pass


class SnapshotInstaller:
    """Follower side: swap the state machine for a received snapshot, atomically.

    The new state is built as the backend's next state generation (see
    storage/backend.py) in batches of about `batch_bytes`, invisible until one
    small synced write switches to it together with the Raft log reset; so the
    memory used does not grow with the state, and a crash at any point leaves
    either the complete old or the complete new state.

    Where the build runs: `prepare(path)` (awaited by the receiver before it
    hands the message to Raft) builds it in a worker thread, so the driver's
    `install()` on the loop only writes the switch. When nothing was prepared
    for that file (no receiver hook, a newer file displaced it, a failure),
    `install()` builds it itself, on the loop. The switch and the reloaders
    always run on the loop, in the driver task."""

    def __init__(
        self,
        backend: Any,
        reloaders: list[Callable[[Snapshot], None]] | None = None,
        *,
        batch_bytes: int = STAGE_BATCH_BYTES,
    ) -> None:
        self._backend = backend
        self.reloaders = reloaders if reloaders is not None else []
        self.batch_bytes = batch_bytes
        self.installed = 0
        self.prepared_installs = 0  # installs that found their state already staged
        # Of the last install: write batches used and the largest one, in bytes.
        self.last_batches = 0
        self.last_max_batch_bytes = 0
        self._prepared: _Prepared | None = None
        self._threads = ThreadWork()
        self._stopped = False

    # --- off-loop preparation (receiver side) ---------------------------------------

    async def prepare(self, path: Path) -> None:
        """Stage the state of the (already verified) spooled file `path` in a worker
        thread. Never raises: on any failure `install()` simply builds it itself."""
        if self._stopped:
            return
        current = self._prepared
        if current is not None:
            if not current.finished.is_set():
                return  # one build at a time: install() handles this file itself
            self._discard()
        job = _Prepared(path)
        try:
            job.staged = self._backend.stage_state(self.batch_bytes)
        except Exception as exc:  # noqa: BLE001 - e.g. the backend refuses installs
            log.warning("cannot stage snapshot %s ahead of install: %s", path, exc)
            return
        self._prepared = job
        try:
            await self._threads.run(self._fill_prepared, job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001
            if not job.finished.is_set():  # the worker never ran (loop shutting down)
                job.finished.set()
                job.staged.abort()
            if not isinstance(exc, _Cancelled):
                log.warning("staging snapshot %s ahead of install failed: %s", path, exc)
            if self._prepared is job:
                self._prepared = None

    def _fill_prepared(self, job: _Prepared) -> None:
        staged = job.staged
        assert staged is not None
        try:
            verify_file(job.path)
            self._fill(staged, job.path, job.cancel)
            staged.flush()  # the switch on the loop then writes only the final ops
            job.ok = True
        except BaseException:
            staged.abort()
            raise
        finally:
            job.finished.set()

    def _discard(self) -> None:
        """Drop a prepared state (waiting for its worker thread to notice)."""
        job, self._prepared = self._prepared, None
        if job is None:
            return
        job.cancel.set()
        # Blocks the loop only until the worker sees the flag (one record).
        if not job.finished.wait(60):
            raise RuntimeError(f"staging snapshot {job.path} did not stop")
        if job.staged is not None:
            job.staged.abort()

    async def stop(self) -> None:
        """No more preparing; wait for a running build and drop what was staged."""
        self._stopped = True
        if self._prepared is not None:
            self._prepared.cancel.set()
        await self._threads.drain()
        with contextlib.suppress(Exception):
            self._discard()

    # --- the install (driver, on the loop) -------------------------------------------

    def install(self, snapshot: Snapshot, hard_state: HardState | None, current: HardState) -> None:
        """Replace the state with the spooled file named by `snapshot.data`.

        Raises RuntimeError if there is no valid file: installing nothing while
        Raft moves on would silently diverge, so the driver must stop instead."""
        path = file_of(snapshot.data)
        if path is None:
            raise RuntimeError(
                f"snapshot at index {snapshot.metadata.index} has no state file to install"
            )
        md = snapshot.metadata
        hs = hard_state or current
        hs = HardState(hs.term, hs.vote, max(hs.commit, md.index))
        b = self._backend
        job = self._prepared
        staged: StagedState | None = None
        if job is not None and job.path == path and job.finished.is_set() and job.ok:
            self._prepared = None
            staged = job.staged  # built from this very file after its checksum check
        else:
            self._discard()
        if staged is None:
            try:
                # The whole file is checked before the backend is touched at all.
                verify_file(path)
            except (BackupError, OSError) as exc:
                raise RuntimeError(f"cannot install snapshot {path}: {exc}") from exc
        # Member-local identity stays; the applied index/term are the snapshot's.
        local = {}
        for key in LOCAL_META_KEYS:
            value = b.get("meta", key)
            if value is not None:
                local[key] = bytes(value)

        def final(batch: Any) -> None:
            # In the switching write: "meta" here is the NEW generation's.
            for key, value in local.items():
                batch.put("meta", key, value)
            batch.put("meta", APPLIED_INDEX_KEY, _U64.pack(md.index))
            batch.put("meta", APPLIED_TERM_KEY, _U64.pack(md.term))
            # Raft side, same layout as storage/raft_log.py: the log restarts at the snapshot.
            batch.delete_range(LOG_CF, b"", _KEY_END)
            batch.put(STATE_CF, LOG_START_KEY, _U64X2.pack(md.index, md.term))
            batch.put(STATE_CF, LAST_INDEX_KEY, _U64.pack(md.index))
            batch.put(STATE_CF, SNAPSHOT_KEY, encode_snapshot(Snapshot(md, b"")))
            batch.put(STATE_CF, HARD_STATE_KEY, _U64X3.pack(hs.term, hs.vote, hs.commit))

        fresh = staged is None
        if staged is None:
            staged = b.stage_state(self.batch_bytes)
        else:
            self.prepared_installs += 1
        with staged:  # leaving without commit drops the staged families
            if fresh:
                self._fill(staged, path, None)
            fp.ON and fp.hit("snapshot_before_install")
            staged.commit(final)
            fp.ON and fp.hit("snapshot_after_install")
        self.last_batches = staged.batches_written
        self.last_max_batch_bytes = staged.max_batch_bytes
        self.installed += 1
        remove_received(path.parent, md.index)
        log.info(
            "installed snapshot at index %d (term %d): %d records in %d batches, %s",
            md.index, md.term, staged.records, staged.batches_written,
            "built on the loop" if fresh else "staged ahead by a worker thread",
        )  # fmt: skip
        for reload in self.reloaders:
            reload(snapshot)

    @staticmethod
    def _fill(staged: StagedState, path: Path, cancel: threading.Event | None) -> None:
        """Put every replicated record of the file into `staged` (not its applied
        index/term nor member-local keys: the switch writes those)."""
        skip = LOCAL_META_KEYS | {APPLIED_INDEX_KEY, APPLIED_TERM_KEY}
        try:
            for family, key, value in read_records(path, verify=False):
                if cancel is not None and cancel.is_set():
                    raise _Cancelled(str(path))
                if family == "meta" and key in skip:
                    continue
                staged.put(family, key, value)
        except (BackupError, OSError) as exc:
            raise RuntimeError(f"cannot install snapshot {path}: {exc}") from exc
