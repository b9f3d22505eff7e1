"""GrpcTransport: Raft messages between members over long-lived gRPC streams.

Owns: one outbound `_PeerSender` per remote member (bounded queue, one task, one
channel, one client stream `RaftPeer.Stream`), the inbound `RaftPeerServicer`,
cluster-id checks on both directions, reconnect back-off and drop counting, and
etcd's removed-member handshake: streams from a member id in the removed set
(`set_removed`) are refused with FAILED_PRECONDITION + MEMBER_REMOVED (etcd's
rafthttp answers HTTP 410 with the same text), and a sender refused that way
reports it once through `on_removed()` (the node then stops, like etcd).

Never: blocks or raises in `send` (Raft tolerates loss and retransmits, a stalled
driver does not); interprets messages; talks to anything but the peers it was
given; creates grpc.aio objects outside the running event loop; makes a
channel itself (the injected `PeerChannels` does, with the peer credentials).

Invariants:
- Per peer, messages leave in the order `send` saw them (one queue, one stream,
  one writer); across peers there is no ordering.
- Outbound queues hold at most `max_queue` messages; beyond that, messages are
  dropped and counted (etcd's rafthttp does the same), and the peer is reported
  unreachable so the leader falls back to probing it.
- The sender never waits for an acknowledgement: each write carries everything
  queued at that moment (pipelining + natural batching under load).
- Inbound batches are handed to `on_messages` synchronously from the stream
  handler (no task per message), in arrival order per stream.
- Only ids in the removed set are refused: a sender we do not know yet (a
  member being added, whose MemberAdd we have not applied) is accepted. The
  check runs when a stream opens (metadata) and on every batch (its `from`),
  so a stream opened before the removal is cut at its next batch.

Stream lifecycle of one peer:

    connect ──ok──> streaming ──write error / peer gone──> report unreachable
       ^  \\fail                                                 |
       |   \\──> report unreachable                              |
       +──── sleep back-off (50 ms doubling to 250 ms, reset once a stream is up) <──+
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

from kvstore import failpoints as fp
from kvstore.pb import raftpb_pb2
from kvstore.pb import raftpb_pb2_grpc as pb_grpc
from kvstore.raft.types import Message
from kvstore.transport import codec
from kvstore.transport.peer_client import PeerChannels

log = logging.getLogger(__name__)

CLUSTER_ID_MISMATCH = "request cluster ID mismatch"
# etcd's rafthttp errMemberRemoved / etcdserver's stop reason, word for word.
MEMBER_REMOVED = "the member has been permanently removed from the cluster"
MEMBER_REMOVED_CODE = grpc.StatusCode.FAILED_PRECONDITION
CLUSTER_ID_METADATA = "kvstore-cluster-id"  # hex, sent when a stream opens
SENDER_METADATA = "kvstore-sender-id"

MAX_MESSAGE_BYTES = 64 << 20
# Split a drained queue into several writes past this many payload bytes, well
# below the gRPC message limit.
MAX_BATCH_BYTES = 8 << 20
DEFAULT_MAX_QUEUE = 4096
MIN_BACKOFF_S = 0.05
# Low on purpose: a restarted member learns its leader only from the leader's
# next message, so the leader's retry period is that member's "no leader" time.
# A failed connect to a dead loopback/LAN peer costs next to nothing.
MAX_BACKOFF_S = 0.25

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # Detect a silently dead peer (no RST) on an idle stream.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # gRPC's own subchannel back-off must not outlast ours, or a restarted peer
    # stays "failing fast" for up to two minutes.
    ("grpc.initial_reconnect_backoff_ms", int(MIN_BACKOFF_S * 1000)),
    ("grpc.min_reconnect_backoff_ms", int(MIN_BACKOFF_S * 1000)),
    ("grpc.max_reconnect_backoff_ms", int(MAX_BACKOFF_S * 1000)),
]

# Options for the peer gRPC server that hosts `servicer()`: accept the client
# keepalive pings above (the default policy answers them with GOAWAY).
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
]


# The SendSnapshot handler (snapshot_recv.SnapshotReceiver.handle).
SnapshotHandler = Callable[
    [AsyncIterator[raftpb_pb2.SnapshotChunk], grpc.aio.ServicerContext],
    Awaitable[raftpb_pb2.SnapshotAck],
]


def peer_address(url: str) -> str:
    """ "http://127.0.0.1:2380" or "127.0.0.1:2380" -> "127.0.0.1:2380" (gRPC target)."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if not parts.hostname or parts.port is None:
        raise ValueError(f"peer URL {url!r} needs a host and a port")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


@dataclass(slots=True)
class PeerStats:
    """Counters of one outbound peer (read by tests, metrics and the node)."""

    sent_messages: int = 0
    sent_batches: int = 0
    dropped: int = 0
    connects: int = 0
    failures: int = 0
    last_error: str = ""


class _PeerSender:
    """Outbound side of one peer: queue + task + channel. Owned by GrpcTransport."""

    def __init__(self, transport: GrpcTransport, peer_id: int, address: str) -> None:
        self.peer_id = peer_id
        self.address = address
        self.stats = PeerStats()
        self.connected = False
        self._t = transport
        self._queue: collections.deque[Message] = collections.deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._channel: grpc.aio.Channel | None = None
        self._unreachable_reported = False

    # --- called from GrpcTransport (event loop) --------------------------------------------
    def enqueue(self, m: Message) -> None:
        q = self._queue
        if len(q) >= self._t.max_queue:
            self.stats.dropped += 1
            self._report_unreachable()
            return
        q.append(m)
        if len(q) == 1:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"raft-peer-{self.peer_id:x}"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._close_channel()
        self.connected = False
        self.stats.dropped += len(self._queue)
        self._queue.clear()

    # --- sender task ---------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = MIN_BACKOFF_S
        while True:
            try:
                await self._stream_once()
            except asyncio.CancelledError:
                raise
            except MemberRemovedError as exc:
                self._note_failure(str(exc))
                self._t._peer_says_removed(self.peer_id)
            except grpc.aio.AioRpcError as exc:
                self._note_failure(f"{exc.code().name}: {exc.details()}")
                if _is_removed_status(exc.code(), exc.details()):
                    self._t._peer_says_removed(self.peer_id)
            except ConnectionError as exc:
                self._note_failure(str(exc))
            except Exception as exc:  # noqa: BLE001 - any stream failure means: reconnect
                self._note_failure(f"{type(exc).__name__}: {exc}")
            if self.connected:
                backoff = MIN_BACKOFF_S  # the stream had been up: retry quickly
            self.connected = False
            self._report_unreachable()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _note_failure(self, why: str) -> None:
        self.stats.failures += 1
        if why != self.stats.last_error:
            serious = CLUSTER_ID_MISMATCH in why or MEMBER_REMOVED in why
            level = logging.ERROR if serious else logging.INFO
            log.log(level, "raft peer %x at %s: stream failed: %s", self.peer_id, self.address, why)
        self.stats.last_error = why

    async def _stream_once(self) -> None:
        if self._channel is None:
            # Its own channel (keepalive and back-off options of its own),
            # made by the pool: the one place that picks peer credentials.
            self._channel = self._t.channels.open(self.address, CHANNEL_OPTIONS)
        t = self._t
        call = pb_grpc.RaftPeerStub(self._channel).Stream(
            metadata=(
                (CLUSTER_ID_METADATA, f"{t.cluster_id:x}"),
                (SENDER_METADATA, f"{t.self_id:x}"),
            )
        )
        wakeup = self._wakeup
        call.add_done_callback(lambda _call: wakeup.set())
        try:
            # The receiver sends its initial metadata after the cluster-id check,
            # so this returns only for a stream the peer accepted.
            await call.initial_metadata()
            if call.done():
                await _raise_status(call)
            self.connected = True
            self.stats.connects += 1
            self._unreachable_reported = False
            await self._pump(call)
        finally:
            if not call.done():
                call.cancel()

    async def _pump(self, call: grpc.aio.StreamStreamCall) -> None:
        q = self._queue
        wakeup = self._wakeup
        t = self._t
        stats = self.stats
        while True:
            if not q:
                wakeup.clear()
                if call.done():
                    break
                await wakeup.wait()
                continue
            if call.done():
                break
            msgs = _drain(q)
            msgs = [] if fp.ON and fp.hit("peer_drop") else msgs
            await call.write(codec.encode_batch(msgs, t.cluster_id, t.self_id))
            stats.sent_batches += 1
            stats.sent_messages += len(msgs)
            self._unreachable_reported = False
        await _raise_status(call)

    def _report_unreachable(self) -> None:
        # Once per episode: cleared by the next successful connect or write.
        if self._unreachable_reported:
            return
        self._unreachable_reported = True
        cb = self._t.on_unreachable
        if cb is not None:
            try:
                cb(self.peer_id)
            except Exception:  # noqa: BLE001 - a callback bug must not kill the sender
                log.exception("on_unreachable(%x) failed", self.peer_id)

    async def _close_channel(self) -> None:
        ch, self._channel = self._channel, None
        if ch is not None:
            with contextlib.suppress(Exception):
                await ch.close(grace=None)


class MemberRemovedError(ConnectionError):
    """A peer refused our stream because we were removed from the cluster."""


def _is_removed_status(code: grpc.StatusCode | None, details: str | None) -> bool:
    return code == MEMBER_REMOVED_CODE and details == MEMBER_REMOVED


async def _raise_status(call: grpc.aio.StreamStreamCall) -> None:
    """Raise the status a finished stream ended with (even OK: streams never end)."""
    code = await call.code()
    details = await call.details()
    if _is_removed_status(code, details):
        raise MemberRemovedError(f"{code.name}: {details}")
    raise ConnectionError(f"{code.name}: {details}")


def _drain(q: collections.deque[Message]) -> list[Message]:
    """Pop queued messages up to MAX_BATCH_BYTES of entry payload (at least one)."""
    out: list[Message] = []
    size = 0
    popleft = q.popleft
    while q:
        m = q[0]
        if m.entries:
            msize = sum(len(e.data) for e in m.entries)
            if out and size + msize > MAX_BATCH_BYTES:
                break
            size += msize
        if m.snapshot is not None:
            size += len(m.snapshot.data)
        out.append(popleft())
    return out


class RaftPeerServicer(pb_grpc.RaftPeerServicer):
    """Inbound side: decode batches and hand them to `on_messages` in the loop."""

    def __init__(self, transport: GrpcTransport) -> None:
        self._t = transport

    async def Stream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[raftpb_pb2.MessageBatch],
        context: grpc.aio.ServicerContext,
    ) -> None:
        t = self._t
        md = dict(context.invocation_metadata() or ())
        cid = md.get(CLUSTER_ID_METADATA)
        if cid is not None and cid != f"{t.cluster_id:x}":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH)
        sender = _parse_hex(md.get(SENDER_METADATA))
        if sender is not None and t.is_removed(sender):
            await self._refuse_removed(context, sender)
        await context.send_initial_metadata(())
        cluster_id = t.cluster_id
        while True:
            batch = await context.read()
            if batch is grpc.aio.EOF:
                return
            if batch.cluster_id != cluster_id:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, CLUSTER_ID_MISMATCH)
            # The removed set may have grown since the stream opened.
            if t._removed and t.is_removed(codec.batch_sender(batch)):
                await self._refuse_removed(context, codec.batch_sender(batch))
            t.received_batches += 1
            if t.stopped:
                continue
            try:
                msgs = codec.decode_batch(batch)
            except (KeyError, ValueError) as exc:
                sender = codec.batch_sender(batch)
                log.warning("dropping undecodable batch from %x: %r", sender, exc)
                continue
            msgs = [] if fp.ON and fp.hit("peer_receive_drop") else msgs
            t.received_messages += len(msgs)
            try:
                t.on_messages(msgs)
            except Exception:  # noqa: BLE001 - the stream outlives a consumer bug
                log.exception("on_messages failed")

    async def _refuse_removed(self, context: grpc.aio.ServicerContext, sender: int) -> None:
        t = self._t
        t.rejected_removed += 1
        if sender not in t._removed_logged:
            t._removed_logged.add(sender)
            log.warning("rejected stream from remote peer %x because it was removed", sender)
        await context.abort(MEMBER_REMOVED_CODE, MEMBER_REMOVED)

    async def SendSnapshot(  # noqa: N802
        self,
        request_iterator: AsyncIterator[raftpb_pb2.SnapshotChunk],
        context: grpc.aio.ServicerContext,
    ) -> raftpb_pb2.SnapshotAck:
        receiver = self._t.snapshot_receiver
        if receiver is not None:
            return await receiver(request_iterator, context)
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "snapshot streaming not implemented")
        raise AssertionError("unreachable")  # abort() raises


def _parse_hex(value: str | bytes | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 16)
    except (TypeError, ValueError):
        return None


class GrpcTransport:
    """Raft peer transport over gRPC; every method runs in the node's event loop.

    `on_messages(list[Message])` is called for each inbound batch;
    `on_unreachable(peer_id)` (optional, settable attribute) when a peer's
    stream fails or its queue overflows (once per episode);
    `on_removed()` (optional, settable attribute) once, the first time a peer
    refuses our stream because this member was removed from the cluster."""

    def __init__(
        self,
        self_id: int,
        cluster_id: int,
        on_messages: Callable[[list[Message]], None],
        *,
        channels: PeerChannels,
        on_unreachable: Callable[[int], None] | None = None,
        on_removed: Callable[[], None] | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        snapshot_sender: Callable[[Message], None] | None = None,
        snapshot_receiver: SnapshotHandler | None = None,
    ) -> None:
        self.self_id = self_id
        self.cluster_id = cluster_id
        self.channels = channels
        self.on_messages = on_messages
        self.on_unreachable = on_unreachable
        self.on_removed = on_removed
        self.max_queue = max_queue
        self.received_batches = 0
        self.received_messages = 0
        self.dropped_unknown_peer = 0
        # Streams refused because their sender was removed (inbound), and
        # whether a peer has told us that we were removed (outbound).
        self.rejected_removed = 0
        self.told_removed = False
        self._removed: frozenset[int] = frozenset()
        self._removed_logged: set[int] = set()
        self.stopped = False
        self._started = False
        self._peers: dict[int, _PeerSender] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        # Snapshot streaming (snapshot_send.py / snapshot_recv.py): MSG_SNAP
        # goes to `snapshot_sender(msg)` instead of the message stream, and the
        # SendSnapshot RPC is served by `snapshot_receiver(request_iterator, ctx)`.
        self.snapshot_sender = snapshot_sender
        self.snapshot_receiver = snapshot_receiver

    # --- membership ------------------------------------------------------------------------
    def set_peers(self, peers: Mapping[int, str]) -> None:
        """Make the peer set exactly `peers` (id -> URL); our own id is ignored.

        New peers get a sender (started if the transport runs), removed peers
        lose theirs (queued messages dropped), changed URLs reconnect."""
        wanted = {pid: peer_address(url) for pid, url in peers.items() if pid != self.self_id}
        for pid in list(self._peers):
            sender = self._peers[pid]
            if wanted.get(pid) != sender.address:
                del self._peers[pid]
                self._retire(sender)
        for pid, addr in wanted.items():
            if pid not in self._peers:
                sender = _PeerSender(self, pid, addr)
                self._peers[pid] = sender
                if self._started and not self.stopped:
                    sender.start()

    def _retire(self, sender: _PeerSender) -> None:
        if not self._started:
            return
        task = asyncio.get_running_loop().create_task(sender.stop())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    def peers(self) -> dict[int, str]:
        return {pid: s.address for pid, s in self._peers.items()}

    def set_removed(self, ids: Iterable[int]) -> None:
        """Member ids removed from the cluster (for good: ids are never reused).
        Their streams are refused with MEMBER_REMOVED; ids merely unknown are not."""
        self._removed = frozenset(ids)

    def is_removed(self, member_id: int) -> bool:
        return member_id in self._removed

    def _peer_says_removed(self, peer_id: int) -> None:
        """A peer refused us as removed: tell the owner once (etcd stops then)."""
        if self.told_removed:
            return
        self.told_removed = True
        log.warning("peer %x says this member (%x) %s", peer_id, self.self_id,
                    "has been permanently removed from the cluster")  # fmt: skip
        cb = self.on_removed
        if cb is not None:
            try:
                cb()
            except Exception:  # noqa: BLE001 - a callback bug must not kill the sender
                log.exception("on_removed() failed")

    # --- outbound --------------------------------------------------------------------------
    def send(self, messages: list[Message]) -> None:
        """Queue `messages` for their `to` peers. Never blocks, never raises."""
        peers = self._peers
        for m in messages:
            if m.snapshot is not None and self.snapshot_sender is not None:
                try:
                    self.snapshot_sender(m)
                except Exception:  # noqa: BLE001 - `send` must never raise into the driver
                    log.exception("snapshot send to %x failed", m.to)
                continue
            sender = peers.get(m.to)
            if sender is None:
                self.dropped_unknown_peer += 1
                continue
            try:
                sender.enqueue(m)
            except Exception:  # noqa: BLE001 - `send` must never raise into the driver
                log.exception("enqueue to %x failed", m.to)

    def reachable(self, peer_id: int) -> bool:
        sender = self._peers.get(peer_id)
        return sender is not None and sender.connected

    def stats(self, peer_id: int) -> PeerStats:
        sender = self._peers.get(peer_id)
        if sender is None:
            raise KeyError(peer_id)
        return sender.stats

    # --- inbound ---------------------------------------------------------------------------
    def servicer(self) -> RaftPeerServicer:
        return RaftPeerServicer(self)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_RaftPeerServicer_to_server(self.servicer(), server)

    # --- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start one sender task per peer; must run inside the node's event loop."""
        if self._started:
            return
        self._started = True
        for sender in self._peers.values():
            sender.start()

    async def stop(self) -> None:
        """Stop senders (queued messages are dropped) and ignore later inbound batches."""
        self.stopped = True
        senders = list(self._peers.values())
        await asyncio.gather(*(s.stop() for s in senders), return_exceptions=True)
        if self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)


__all__ = [
    "CHANNEL_OPTIONS",
    "CLUSTER_ID_MISMATCH",
    "MEMBER_REMOVED",
    "GrpcTransport",
    "MemberRemovedError",
    "PeerStats",
    "RaftPeerServicer",
    "SERVER_OPTIONS",
    "peer_address",
]
