"""Raft snapshot sending (leader): stream a state file to a lagging follower.

Owns: `SnapshotSender`. The transport hands it every outgoing MSG_SNAP
instead of putting it on the message stream. It has the state side
(`kvstore.seams.SnapshotSource`: maintenance/snapshot_install.py) write a snapshot file from
ONE consistent view, rewrites the message's metadata to that file's applied
index/term and membership (like etcd's merged snapshot message: the Raft
snapshot record only says "the log is compacted", the state sent is the
freshest consistent one), streams it with `RaftPeer.SendSnapshot` in chunks
over a channel from the peer channel pool, and reports success/failure to
Raft.

Never: blocks the event loop on writing the file (the source uses a worker
thread); sends two snapshots to one peer at once; raises into the transport
(`send` never fails: Raft probes and retries after a failed report).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

from kvstore import failpoints as fp
from kvstore.pb import raftpb_pb2, raftpb_pb2_grpc
from kvstore.raft.types import Message, Snapshot
from kvstore.seams import SnapshotSource
from kvstore.storage.snapshot_spool import sending_file
from kvstore.transport import codec
from kvstore.transport.peer import CHANNEL_OPTIONS, CLUSTER_ID_METADATA
from kvstore.transport.peer_client import ChannelOption, PeerChannels

log = logging.getLogger(__name__)

TRANSFER_CHUNK_BYTES = 1 << 20
TRANSFER_TIMEOUT_S = 300.0


class SnapshotSender:
    """Leader side. `send(msg)` is called on the loop and never blocks or raises."""

    def __init__(
        self,
        channels: PeerChannels,
        source: SnapshotSource,
        spool: Path,
        *,
        cluster_id: int,
        self_id: int,
        peer_address: Callable[[int], str | None],
        report: Callable[[int, bool], None],
        channel_options: Sequence[ChannelOption] = CHANNEL_OPTIONS,
        timeout_s: float = TRANSFER_TIMEOUT_S,
        chunk_bytes: int = TRANSFER_CHUNK_BYTES,
    ) -> None:
        self._channels = channels
        self._source = source
        self._spool = spool
        self._cluster_id = cluster_id
        self._self_id = self_id
        self._peer_address = peer_address
        self._report = report
        self._options = tuple(channel_options)
        self._timeout_s = timeout_s
        self._chunk_bytes = chunk_bytes
        self._inflight: dict[int, asyncio.Task[None]] = {}
        self._seq = itertools.count(1)
        self.chunks_sent = 0
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
        await self._source.drain()

    async def _transfer(self, msg: Message) -> None:
        peer = msg.to
        ok = False
        self._spool.mkdir(parents=True, exist_ok=True)
        path = sending_file(self._spool, peer, next(self._seq))
        try:
            fp.ON and fp.hit("snapshot_before_send")
            address = self._peer_address(peer)
            if address is None:
                raise ConnectionError(f"no address for peer {peer:x}")
            meta, size = await self._source.write(path)
            out = dataclasses.replace(msg, snapshot=Snapshot(meta, b""))
            acked = await self._stream(address, out, path)
            ok = acked == size
            if ok:
                self.sent += 1
                self.last_bytes = acked
                log.info(
                    "sent snapshot at index %d (%d bytes) to member %x",
                    meta.index, acked, peer,
                )  # fmt: skip
            else:
                log.warning("snapshot to %x: peer acknowledged %d of %d bytes", peer, acked, size)
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
        cluster_id, sender = self._cluster_id, self._self_id

        async def chunks() -> AsyncIterator[raftpb_pb2.SnapshotChunk]:
            first = _chunk(cluster_id, sender)
            first.message.CopyFrom(codec.message_to_pb(msg))
            yield first
            with open(path, "rb") as f:
                while True:
                    data = f.read(self._chunk_bytes)
                    if not data:
                        break
                    self.chunks_sent += 1
                    chunk = _chunk(cluster_id, sender)
                    chunk.data = data
                    yield chunk
            last = _chunk(cluster_id, sender)
            last.last = True
            yield last

        # A channel of its own (the stream's message-size and keepalive options),
        # closed when the transfer ends.
        async with self._channels.open(address, self._options) as channel:
            stub = raftpb_pb2_grpc.RaftPeerStub(channel)
            ack = await stub.SendSnapshot(
                chunks(),
                timeout=self._timeout_s,
                metadata=((CLUSTER_ID_METADATA, f"{cluster_id:x}"),),
            )
        return int(ack.bytes_received)


def _chunk(cluster_id: int, sender: int) -> raftpb_pb2.SnapshotChunk:
    """A chunk carrying the stream's header fields (`from` is a Python keyword)."""
    chunk = raftpb_pb2.SnapshotChunk(cluster_id=cluster_id)
    setattr(chunk, "from", sender)  # noqa: B010
    return chunk


__all__ = [
    "TRANSFER_CHUNK_BYTES",
    "SnapshotSender",
    "SnapshotSource",
]
