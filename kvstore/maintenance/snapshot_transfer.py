"""Raft snapshot transfer: stream the leader's state to a lagging follower and
install it there atomically.

Owns three pieces, wired by `maintenance/wiring.py`:

- `SnapshotSender` (leader): the transport hands it every outgoing MSG_SNAP
  instead of putting it on the message stream. It writes a snapshot file
  from ONE consistent backend view (backup.py), rewrites the message's
  metadata to the view's applied index/term and membership (like etcd's
  merged snapshot message: the Raft snapshot record only says "the log is
  compacted", the state sent is the freshest consistent one), streams it with
  `RaftPeer.SendSnapshot` in 1 MiB chunks and reports success/failure to Raft.
- `SnapshotReceiver` (follower): the `SendSnapshot` handler. It spools the
  chunks to `<data-dir>/snap/*.tmp`, verifies the SHA-256 trailer, renames the
  file into place, has the installer stage its state in a worker thread
  (`SnapshotInstaller.prepare`: invisible families, nothing of the live state
  is touched), then hands the MSG_SNAP to Raft with `snapshot.data =
  b"file:<path>"`.
- `SnapshotInstaller` (follower): called by the driver when Raft hands out the
  snapshot in a Ready, BEFORE the Raft write. Unless that file was staged
  ahead, it verifies the file's checksum, then builds the MVCC data, leases
  and replicated meta as the backend's next state generation in bounded
  batches (never the whole state in memory); then it switches, on the loop,
  with ONE small synced WriteBatch that also sets the applied index
  and resets the Raft log/hard state to the snapshot point; then the
  in-memory views are reloaded. A crash before that write leaves the old state
  (the half-built generation is dropped when the backend is opened, the
  spooled file removed on the next start); after it, the new one — never a mix.

Never: blocks the event loop on the file write (worker thread); sends two
snapshots to one peer at once; installs a file whose checksum does not match;
holds a received state in memory (at most one ~4 MiB write batch of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import struct
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

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
    Message,
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

log = logging.getLogger(__name__)

SPOOL_DIRNAME = "snap"
TRANSFER_CHUNK_BYTES = 1 << 20
FILE_PREFIX = b"file:"
CLUSTER_ID_METADATA = "kvstore-cluster-id"
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


def clean_spool(spool: Path) -> None:
    """Remove files left by an interrupted transfer/install (startup)."""
    if not spool.is_dir():
        return
    for entry in spool.iterdir():
        if entry.suffix in (".tmp", ".snap"):
            with contextlib.suppress(OSError):
                entry.unlink()


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


def _remove_spooled(spool: Path, up_to_index: int) -> None:
    """Drop received files at or below an installed index (including ones Raft
    rejected as stale, which nothing else would remove before a restart)."""
    for entry in spool.glob("recv-*.snap"):
        try:
            index = int(entry.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if index <= up_to_index:
            with contextlib.suppress(OSError):
                entry.unlink()


class SnapshotSender:
    """Leader side. `send(msg)` is called on the loop and never blocks or raises."""

    def __init__(
        self,
        backend: Any,
        spool: Path,
        *,
        cluster_id: int,
        self_id: int,
        peer_address: Callable[[int], str | None],
        report: Callable[[int, bool], None],
        channel_options: list[tuple[str, int]] | None = None,
        timeout_s: float = 300.0,
        chunk_bytes: int = TRANSFER_CHUNK_BYTES,
    ) -> None:
        self._backend = backend
        self._spool = spool
        self._cluster_id = cluster_id
        self._self_id = self_id
        self._peer_address = peer_address
        self._report = report
        self._options = channel_options or []
        self._timeout_s = timeout_s
        self._chunk_bytes = chunk_bytes
        self.chunks_sent = 0
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._threads = ThreadWork()
        self._seq = itertools.count(1)
        self.sent = 0
        self.failed = 0
        self.last_bytes = 0

    def send(self, msg: Message) -> None:
        peer = msg.to
        task = self._inflight.get(peer)
        if task is not None and not task.done():
            return  # Raft waits for the report of the transfer in flight
        self._inflight[peer] = asyncio.get_running_loop().create_task(
            self._transfer(msg), name=f"snapshot-to-{peer:x}"
        )

    async def stop(self) -> None:
        tasks = [t for t in self._inflight.values() if not t.done()]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._inflight.clear()
        await self._threads.drain()

    async def _transfer(self, msg: Message) -> None:
        peer = msg.to
        ok = False
        self._spool.mkdir(parents=True, exist_ok=True)
        path = self._spool / f"send-{peer:x}-{next(self._seq)}.snap"
        try:
            fp.ON and fp.hit("snapshot_before_send")
            address = self._peer_address(peer)
            if address is None:
                raise ConnectionError(f"no address for peer {peer:x}")
            info = await self._threads.run(write_backup, self._backend, path)
            meta = SnapshotMetadata(
                info.applied_index, info.applied_term, conf_state_from_members(info.members)
            )
            out = dataclasses.replace(msg, snapshot=Snapshot(meta, b""))
            acked = await self._stream(address, out, path)
            ok = acked == info.size
            if ok:
                self.sent += 1
                self.last_bytes = acked
                log.info(
                    "sent snapshot at index %d (%d bytes) to member %x",
                    meta.index, acked, peer,
                )  # fmt: skip
            else:
                log.warning(
                    "snapshot to %x: peer acknowledged %d of %d bytes", peer, acked, info.size
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure: Raft probes and retries
            log.warning("snapshot to member %x failed: %s", peer, exc)
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            if not ok:
                self.failed += 1
            with contextlib.suppress(Exception):
                self._report(peer, ok)

    async def _stream(self, address: str, msg: Message, path: Path) -> int:
        from kvstore.pb import raftpb_pb2, raftpb_pb2_grpc
        from kvstore.transport import codec

        cluster_id, sender = self._cluster_id, self._self_id

        async def chunks() -> AsyncIterator[Any]:
            yield raftpb_pb2.SnapshotChunk(
                cluster_id=cluster_id, **{"from": sender}, message=codec.message_to_pb(msg)
            )
            with open(path, "rb") as f:
                while True:
                    data = f.read(self._chunk_bytes)
                    if not data:
                        break
                    self.chunks_sent += 1
                    yield raftpb_pb2.SnapshotChunk(
                        cluster_id=cluster_id, **{"from": sender}, data=data
                    )
            yield raftpb_pb2.SnapshotChunk(cluster_id=cluster_id, **{"from": sender}, last=True)

        async with grpc.aio.insecure_channel(address, options=self._options) as channel:
            stub = raftpb_pb2_grpc.RaftPeerStub(channel)
            ack = await stub.SendSnapshot(
                chunks(),
                timeout=self._timeout_s,
                metadata=((CLUSTER_ID_METADATA, f"{cluster_id:x}"),),
            )
        return int(ack.bytes_received)


class SnapshotReceiver:
    """Follower side of `RaftPeer.SendSnapshot`."""

    def __init__(
        self,
        spool: Path,
        *,
        cluster_id: int,
        deliver: Callable[[list[Message]], None],
        prepare: Callable[[Path], Awaitable[None]] | None = None,
    ) -> None:
        self._spool = spool
        self._cluster_id = cluster_id
        self._deliver = deliver
        # SnapshotInstaller.prepare: stage the state off the loop before Raft
        # sees the message (never raises; without it install() does the work).
        self._prepare = prepare
        self._seq = itertools.count(1)
        self.received = 0

    async def handle(self, request_iterator: AsyncIterator[Any], context: Any) -> Any:
        from kvstore.pb import raftpb_pb2
        from kvstore.transport import codec

        self._spool.mkdir(parents=True, exist_ok=True)
        n = next(self._seq)
        tmp = self._spool / f"recv-{os.getpid()}-{n}.tmp"
        fp.ON and fp.hit("snapshot_before_receive")
        msg: Message | None = None
        received = 0
        done = False
        try:
            with open(tmp, "wb") as f:
                async for chunk in request_iterator:
                    if chunk.cluster_id != self._cluster_id:
                        await context.abort(
                            grpc.StatusCode.FAILED_PRECONDITION, "request cluster ID mismatch"
                        )
                    if chunk.HasField("message"):
                        msg = codec.message_from_pb(chunk.message)
                    if chunk.data:
                        f.write(chunk.data)
                        received += len(chunk.data)
                    if chunk.last:
                        done = True
                        break
                f.flush()
                os.fsync(f.fileno())
            if msg is None or msg.snapshot is None or not done:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "incomplete snapshot stream")
            assert msg is not None and msg.snapshot is not None
            try:
                await asyncio.to_thread(verify_file, tmp)
            except BackupError as exc:
                await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
            final = self._spool / f"recv-{msg.snapshot.metadata.index}-{msg.sender:x}-{n}.snap"
            os.replace(tmp, final)
            snap = Snapshot(msg.snapshot.metadata, FILE_PREFIX + str(final).encode())
            self.received += 1
            log.info(
                "received snapshot at index %d (%d bytes) from member %x",
                snap.metadata.index, received, msg.sender,
            )  # fmt: skip
            if self._prepare is not None:
                await self._prepare(final)
            self._deliver([dataclasses.replace(msg, snapshot=snap)])
            return raftpb_pb2.SnapshotAck(bytes_received=received)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()


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
        if not snapshot.data.startswith(FILE_PREFIX):
            raise RuntimeError(
                f"snapshot at index {snapshot.metadata.index} has no state file to install"
            )
        path = Path(snapshot.data[len(FILE_PREFIX) :].decode())
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
        _remove_spooled(path.parent, md.index)
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
