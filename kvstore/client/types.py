"""Typed, immutable result objects returned by kvstore.client.

Owns: small frozen dataclasses (KeyValue, Header, GetResult, ...) that users
see instead of protobuf messages. Conversion from protobuf lives in
`_convert.py`; this module imports no generated code, so it stays readable
as the API reference.

Invariants: keys and values are `bytes`; revisions are ints; every result of
a KV call carries the response `header` (whose fields may be 0 when the server
omits them, as real etcd does for MemberList/Alarm/Defragment — ETCD_API §0.5).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Header:
    cluster_id: int = 0
    member_id: int = 0
    revision: int = 0
    raft_term: int = 0


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key's state at a revision (mvccpb.KeyValue)."""

    key: bytes
    value: bytes = b""
    create_revision: int = 0
    mod_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class GetResult:
    """Range result. `count` is the total number of keys in the range
    (ignoring `limit`); `more` is True when `kvs` was truncated by `limit`."""

    header: Header
    kvs: tuple[KeyValue, ...] = ()
    more: bool = False
    count: int = 0

    @property
    def revision(self) -> int:
        return self.header.revision

    @property
    def kv(self) -> KeyValue | None:
        """The first key-value, or None when the range is empty."""
        return self.kvs[0] if self.kvs else None

    @property
    def value(self) -> bytes | None:
        return self.kvs[0].value if self.kvs else None

    def __iter__(self):
        return iter(self.kvs)

    def __len__(self) -> int:
        return len(self.kvs)


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: int = 0
    prev_kvs: tuple[KeyValue, ...] = ()

    @property
    def revision(self) -> int:
        return self.header.revision


@dataclass(frozen=True, slots=True)
class TxnResult:
    """`succeeded` tells which branch ran; `responses` holds one result per op
    of that branch, in order (GetResult / PutResult / DeleteResult / TxnResult)."""

    header: Header
    succeeded: bool
    responses: tuple[GetResult | PutResult | DeleteResult | TxnResult, ...] = ()

    @property
    def revision(self) -> int:
        return self.header.revision


class EventType(enum.Enum):
    PUT = 0
    DELETE = 1


@dataclass(frozen=True, slots=True)
class Event:
    """A watch event. For DELETE, `kv` carries only key and mod_revision."""

    type: EventType
    kv: KeyValue
    prev_kv: KeyValue | None = None
    # Header revision of the response that carried the event.
    header_revision: int = 0
    # The whole header of that response (None when built by hand).
    header: Header | None = None

    @property
    def key(self) -> bytes:
        return self.kv.key

    @property
    def value(self) -> bytes:
        return self.kv.value

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    header: Header
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseKeepAliveResult:
    """One renewal: `ttl` is the new TTL in seconds (0: the lease is gone)."""

    header: Header
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class LeaseLeasesResult:
    header: Header
    ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class MoveLeaderResult:
    header: Header
    previous_leader: int
    target: int


@dataclass(frozen=True, slots=True)
class LeaseTimeToLive:
    """`ttl` is the remaining TTL in seconds, -1 when the lease is unknown or expired."""

    header: Header
    id: int
    ttl: int
    granted_ttl: int
    keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]
    is_learner: bool = False


@dataclass(frozen=True, slots=True)
class MemberListResult:
    header: Header
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class MemberAddResult:
    header: Header
    member: Member
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Status:
    """Maintenance/Status of one member, plus the endpoint that answered."""

    header: Header
    endpoint: str
    version: str
    db_size: int
    leader: int
    raft_index: int
    raft_term: int
    raft_applied_index: int = 0
    errors: tuple[str, ...] = ()
    db_size_in_use: int = 0
    is_learner: bool = False

    @property
    def is_leader(self) -> bool:
        return self.header.member_id != 0 and self.header.member_id == self.leader


@dataclass(frozen=True, slots=True)
class Alarm:
    member_id: int
    alarm: str  # "NONE" | "NOSPACE" | "CORRUPT"


@dataclass(frozen=True, slots=True)
class HashKVResult:
    header: Header
    endpoint: str
    hash: int
    compact_revision: int


@dataclass(frozen=True, slots=True)
class LockKey:
    """A held lock: `key` is the ownership key, `revision` its create revision,
    to be used as a fencing token (compare `Compare.create(key) == revision`,
    or compare your resource's stored token against it)."""

    name: bytes
    key: bytes
    revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class LeaderKey:
    """A won election: like LockKey, `revision` is the fencing token."""

    name: bytes
    key: bytes
    revision: int
    lease: int
    value: bytes = b""
