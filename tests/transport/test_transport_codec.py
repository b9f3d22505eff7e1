"""Codec: raft dataclasses survive a trip through raftpb bytes unchanged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.pb import raftpb_pb2 as pb
from kvstore.raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from kvstore.transport import codec

U64 = st.integers(min_value=0, max_value=2**64 - 1)

entries = st.builds(
    Entry,
    term=U64,
    index=U64,
    type=st.sampled_from(list(EntryType)),
    data=st.binary(max_size=64),
)
snapshots = st.builds(
    Snapshot,
    metadata=st.builds(
        SnapshotMetadata,
        index=U64,
        term=U64,
        conf_state=st.builds(
            ConfState,
            voters=st.lists(U64, max_size=5).map(tuple),
            learners=st.lists(U64, max_size=3).map(tuple),
        ),
    ),
    data=st.binary(max_size=64),
)
messages = st.builds(
    Message,
    type=st.sampled_from(list(MessageType)),
    to=U64,
    sender=U64,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=6).map(tuple),
    commit=U64,
    snapshot=st.none() | snapshots,
    reject=st.booleans(),
    reject_hint=U64,
    context=st.binary(max_size=16),
)


def wire_roundtrip(msgs: list[Message], cluster_id: int = 7, sender: int = 3) -> list[Message]:
    data = codec.encode_batch(msgs, cluster_id, sender).SerializeToString()
    batch = pb.MessageBatch.FromString(data)
    assert batch.cluster_id == cluster_id
    assert codec.batch_sender(batch) == sender
    return codec.decode_batch(batch)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(messages, max_size=4))
def test_batch_roundtrip_is_identity(msgs: list[Message]) -> None:
    assert wire_roundtrip(msgs) == msgs


def test_decoded_enums_are_the_raft_enums() -> None:
    m = Message(
        MessageType.APP,
        to=2,
        sender=1,
        entries=(Entry(1, 1, EntryType.CONF_CHANGE, b"cc"), Entry(1, 2)),
    )
    (out,) = wire_roundtrip([m])
    assert out.type is MessageType.APP
    assert [e.type for e in out.entries] == [EntryType.CONF_CHANGE, EntryType.NORMAL]
    assert all(isinstance(e.type, EntryType) for e in out.entries)


def test_empty_snapshot_stays_distinct_from_none() -> None:
    with_empty = Message(MessageType.SNAP, to=2, sender=1, snapshot=Snapshot())
    without = Message(MessageType.HEARTBEAT, to=2, sender=1)
    assert wire_roundtrip([with_empty, without]) == [with_empty, without]


def test_unknown_message_type_is_rejected() -> None:
    p = pb.Message(type=pb.MSG_APP)
    p.type = 9  # type: ignore[assignment]  # a number no raft type uses (open enum)
    with pytest.raises(KeyError):
        codec.message_from_pb(p)


def test_hard_state_and_entry_helpers_roundtrip() -> None:
    from kvstore.raft.types import HardState

    hs = HardState(term=5, vote=2, commit=9)
    assert (
        codec.hard_state_from_pb(
            pb.HardState.FromString(codec.hard_state_to_pb(hs).SerializeToString())
        )
        == hs
    )
    e = Entry(3, 4, EntryType.CONF_CHANGE, b"x")
    assert codec.entry_from_pb(codec.entry_to_pb(e)) == e
