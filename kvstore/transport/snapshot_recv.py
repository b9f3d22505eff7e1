"""Raft snapshot receiving (follower): the `RaftPeer.SendSnapshot` handler.

Owns: `SnapshotReceiver`. It spools the chunks to `<data-dir>/snap/*.tmp`,
has the state side verify the whole file (`verify`, the file format's
checksum), renames it into place, lets the installer stage its state off the
loop (`prepare`, SnapshotInstaller.prepare: invisible families, nothing of the
live state is touched), then hands the MSG_SNAP to Raft with
`snapshot.data = b"file:<path>"` (storage/snapshot_spool.py).

Never: holds a received state in memory (chunks go straight to the file);
hands Raft a snapshot whose file failed verification (the leader is told
DATA_LOSS and Raft retries); installs anything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc

from kvstore import failpoints as fp
from kvstore.pb import raftpb_pb2
from kvstore.raft.types import Message, Snapshot
from kvstore.storage.snapshot_spool import file_ref, received_file, receiving_file
from kvstore.transport import codec
from kvstore.transport.peer import CLUSTER_ID_MISMATCH

log = logging.getLogger(__name__)


class SnapshotReceiver:
    """Follower side of `RaftPeer.SendSnapshot`.

    `verify(path)` raises (any exception, its text goes to the leader) when the
    file is not a complete, intact snapshot; `deliver(messages)` hands the
    MSG_SNAP to Raft; `prepare(path)` (optional) stages the state before that
    and never raises (without it the installer does all the work)."""

    def __init__(
        self,
        spool: Path,
        *,
        cluster_id: int,
        deliver: Callable[[list[Message]], None],
        verify: Callable[[Path], object],
        prepare: Callable[[Path], Awaitable[None]] | None = None,
    ) -> None:
        self._spool = spool
        self._cluster_id = cluster_id
        self._deliver = deliver
        self._verify = verify
        self._prepare = prepare
        self._seq = itertools.count(1)
        self.received = 0

    async def handle(
        self,
        request_iterator: AsyncIterator[raftpb_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext,
    ) -> raftpb_pb2.SnapshotAck:
        self._spool.mkdir(parents=True, exist_ok=True)
        n = next(self._seq)
        tmp = receiving_file(self._spool, n)
        fp.ON and fp.hit("snapshot_before_receive")
        msg: Message | None = None
        received = 0
        done = False
        try:
            with open(tmp, "wb") as f:
                async for chunk in request_iterator:
                    if chunk.cluster_id != self._cluster_id:
                        await context.abort(
                            grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH
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
                await asyncio.to_thread(self._verify, tmp)
            except Exception as exc:  # noqa: BLE001 - a bad file, whatever the reason
                await context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
            final = received_file(self._spool, msg.snapshot.metadata.index, msg.sender, n)
            os.replace(tmp, final)
            snap = Snapshot(msg.snapshot.metadata, file_ref(final))
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


__all__ = ["SnapshotReceiver"]
