"""Value types of the Raft core: entries, messages, hard/soft state, snapshots, Ready.

Owns: the plain data exchanged between the pure core and the node driver.
Never: I/O, clocks, randomness. Every type here is immutable except `Ready`,
which is a one-shot batch handed to the driver and given back via `advance`.

Vocabulary follows the Raft paper and etcd-io/raft (raftpb): term, vote,
commit, index, log_term, reject_hint.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field

NONE = 0  # "no node": no leader known, no vote cast.


class Role(enum.IntEnum):
    FOLLOWER = 0
    CANDIDATE = 1
    LEADER = 2
    PRE_CANDIDATE = 3


class EntryType(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class MessageType(enum.IntEnum):
    # Local messages: never sent over the network.
    HUP = 0  # start an election (pre-vote first when enabled)
    BEAT = 1  # leader: broadcast heartbeats
    PROP = 2  # a proposal; followers forward it to the leader
    CHECK_QUORUM = 3
    UNREACHABLE = 4
    SNAP_STATUS = 5
    # Network messages.
    APP = 10
    APP_RESP = 11
    VOTE = 12
    VOTE_RESP = 13
    PRE_VOTE = 14
    PRE_VOTE_RESP = 15
    SNAP = 16
    HEARTBEAT = 17
    HEARTBEAT_RESP = 18
    TRANSFER_LEADER = 19
    TIMEOUT_NOW = 20
    READ_INDEX = 21
    READ_INDEX_RESP = 22


class ConfChangeType(enum.IntEnum):
    ADD_NODE = 0
    REMOVE_NODE = 1
    UPDATE_NODE = 2
    ADD_LEARNER_NODE = 3


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate encoded size in bytes, used for flow control."""
        return len(self.data) + 24


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A single-server membership change (Raft thesis §4.1).

    `context` is opaque to the core; the node stores member metadata
    (name, peer URLs) there.
    """

    type: ConfChangeType
    node_id: int
    context: bytes = b""

    def encode(self) -> bytes:
        return json.dumps(
            {"t": int(self.type), "n": self.node_id, "c": self.context.hex()},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> ConfChange:
        obj = json.loads(data)
        return cls(ConfChangeType(obj["t"]), int(obj["n"]), bytes.fromhex(obj["c"]))


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SoftState:
    leader_id: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine snapshot. `data` is opaque to the core.

    The node layer may put a small descriptor in `data` and stream the real
    state separately (see transport/)."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    @property
    def is_empty(self) -> bool:
        return self.metadata.index == 0


EMPTY_SNAPSHOT = Snapshot()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    to: int = NONE
    sender: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    snapshot: Snapshot | None = None
    reject: bool = False
    reject_hint: int = 0
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class ReadState:
    """The answer to `read_index(ctx)`: serve the read once applied >= index."""

    index: int
    request_ctx: bytes


@dataclass(slots=True)
class Ready:
    """One batch of work for the driver. Handle it in this order:

    1. send `messages` (may go before anything is durable: the leader's
       appends and heartbeats, so followers fsync in parallel with the leader);
    2. persist `snapshot`, `entries` and `hard_state` atomically (one synced
       write when `must_sync`);
    3. send `messages_after_persist` (votes, append/heartbeat responses —
       promises about durable state);
    4. apply `snapshot` then `committed_entries` to the state machine;
    5. serve `read_states` once applied index >= each read index;
    6. call `advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    messages_after_persist: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False
