"""Raft dataclasses <-> raftpb protobuf messages, on the replication hot path.

Owns: the one mapping between `kvstore.raft.types` and `kvstore.pb.raftpb_pb2`.
Never: I/O, validation of Raft semantics, or knowledge of peers and streams.
Invariants: enum numbers are identical on both sides (the proto mirrors types.py),
so conversion is a table lookup; `Message.snapshot is None` <=> the pb field is
unset; decode(encode(m)) == m for every network message.

Speed notes (measured, see benchmarks/transport_bench.py --codec): messages
are built in place inside the batch (passing built messages to a constructor
deep-copies them); entries are appended with `RepeatedCompositeField.add(**f)`
(~1.3x faster than a list of `pb.Entry`); fields that are usually zero are only
set when non-zero; on decode, dict lookups replace `IntEnum(x)` calls. Decode
cost is dominated by constructing the frozen `Entry` dataclasses (~0.5 us each).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kvstore.pb import raftpb_pb2 as pb
from kvstore.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}
_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_NORMAL = EntryType.NORMAL

_PbMessage = pb.Message
_PbBatch = pb.MessageBatch


# --- encode --------------------------------------------------------------------------------
def snapshot_to_pb(snap: Snapshot, out: pb.Snapshot | None = None) -> pb.Snapshot:
    """Fill `out` (or a new pb.Snapshot) from `snap`."""
    p = pb.Snapshot() if out is None else out
    md = snap.metadata
    p.metadata.index = md.index
    p.metadata.term = md.term
    p.metadata.conf_state.voters.extend(md.conf_state.voters)
    p.metadata.conf_state.learners.extend(md.conf_state.learners)
    # Touch the submessage so an empty metadata still marks the field as set.
    p.metadata.SetInParent()
    p.data = snap.data
    return p


def message_to_pb(m: Message, out: pb.Message | None = None) -> pb.Message:
    """Fill `out` (or a new pb.Message) from `m`."""
    p = _PbMessage() if out is None else out
    _fill(p, m)
    return p


def _fill(p: pb.Message, m: Message) -> None:
    # The raft IntEnums carry the wire numbers of raftpb's enums; the stubs
    # type those fields as the pb enum's own int NewType (no conversion: hot path).
    p.type = m.type  # type: ignore[assignment]
    p.to = m.to
    p.sender = m.sender
    p.term = m.term
    # Rarely set fields are skipped when zero: halves a heartbeat's cost.
    if m.log_term:
        p.log_term = m.log_term
    if m.index:
        p.index = m.index
    if m.commit:
        p.commit = m.commit
    if m.reject:
        p.reject = True
    if m.reject_hint:
        p.reject_hint = m.reject_hint
    if m.context:
        p.context = m.context
    if m.entries:
        add = p.entries.add
        for e in m.entries:
            add(term=e.term, index=e.index, type=e.type, data=e.data)
    if m.snapshot is not None:
        snapshot_to_pb(m.snapshot, p.snapshot)


def encode_batch(messages: Iterable[Message], cluster_id: int, sender: int) -> pb.MessageBatch:
    """One MessageBatch (not yet serialised: gRPC serialises it on write).

    Messages are built in place inside the batch: passing finished messages to
    the constructor would deep-copy every entry."""
    batch = _PbBatch(cluster_id=cluster_id)
    setattr(batch, "from", sender)  # noqa: B010 - `from` is a Python keyword
    add = batch.messages.add
    for m in messages:
        _fill(add(), m)
    return batch


def hard_state_to_pb(hs: HardState) -> pb.HardState:
    return pb.HardState(term=hs.term, vote=hs.vote, commit=hs.commit)


def entry_to_pb(e: Entry) -> pb.Entry:
    return pb.Entry(term=e.term, index=e.index, type=e.type, data=e.data)  # type: ignore[arg-type]


# --- decode --------------------------------------------------------------------------------
def snapshot_from_pb(p: pb.Snapshot) -> Snapshot:
    md = p.metadata
    cs = md.conf_state
    return Snapshot(
        SnapshotMetadata(md.index, md.term, ConfState(tuple(cs.voters), tuple(cs.learners))),
        p.data,
    )


def message_from_pb(p: pb.Message) -> Message:
    """Raises KeyError on an unknown message or entry type (a peer speaking a newer protocol)."""
    et = _ENTRY_TYPES
    normal = _NORMAL
    pents = p.entries
    ents = (
        tuple([Entry(e.term, e.index, et[e.type] if e.type else normal, e.data) for e in pents])
        if pents
        else ()
    )
    return Message(
        _MESSAGE_TYPES[p.type],
        p.to,
        p.sender,
        p.term,
        p.log_term,
        p.index,
        ents,
        p.commit,
        snapshot_from_pb(p.snapshot) if p.HasField("snapshot") else None,
        p.reject,
        p.reject_hint,
        p.context,
    )


def messages_from_pb(ps: Sequence[pb.Message]) -> list[Message]:
    return [message_from_pb(p) for p in ps]


def decode_batch(batch: pb.MessageBatch) -> list[Message]:
    return [message_from_pb(p) for p in batch.messages]


def batch_sender(batch: pb.MessageBatch) -> int:
    return getattr(batch, "from")  # noqa: B009 - `from` is a Python keyword


def hard_state_from_pb(p: pb.HardState) -> HardState:
    return HardState(p.term, p.vote, p.commit)


def entry_from_pb(p: pb.Entry) -> Entry:
    return Entry(p.term, p.index, _ENTRY_TYPES[p.type], p.data)
