"""Member table: who is in the cluster, with names, peer and client URLs.

Owns: the in-memory view of members and its JSON encoding (stored in the
MVCC `meta` family under MEMBERS_META_KEY, in the same apply batch as the
entry that changed it, so it survives restarts exactly like the data).
Removed ids are kept (`removed`) for good, like etcd: a removed member id is
never handed out again (MemberAdd draws fresh ids) and operations on it answer
"member not found".
Never: decides membership (Raft does, through conf-change entries); never
talks to peers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MEMBERS_META_KEY = b"members"


@dataclass
class Member:
    id: int
    name: str = ""
    peer_urls: list[str] = field(default_factory=list)
    client_urls: list[str] = field(default_factory=list)
    is_learner: bool = False

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "peer_urls": self.peer_urls,
            "client_urls": self.client_urls,
            "is_learner": self.is_learner,
        }

    @classmethod
    def from_json(cls, obj: dict) -> Member:
        return cls(
            id=int(obj["id"]),
            name=obj.get("name", ""),
            peer_urls=list(obj.get("peer_urls", [])),
            client_urls=list(obj.get("client_urls", [])),
            is_learner=bool(obj.get("is_learner", False)),
        )


@dataclass(frozen=True)
class JoinInfo:
    """What a member joining a running cluster learned from its peers: the id
    MemberAdd gave it, the cluster id, and the member table at that moment."""

    member_id: int
    cluster_id: int
    members: MemberTable


class MemberTable:
    """Members by id. Mutated only by the apply path (driver task)."""

    def __init__(self, members: list[Member] | None = None) -> None:
        self._members: dict[int, Member] = {m.id: m for m in members or []}
        self.removed: set[int] = set()

    def __contains__(self, member_id: int) -> bool:
        return member_id in self._members

    def __len__(self) -> int:
        return len(self._members)

    def is_removed(self, member_id: int) -> bool:
        return member_id in self.removed

    def find_by_peer_urls(self, peer_urls: list[str] | tuple[str, ...]) -> Member | None:
        """The member whose peer URLs are exactly `peer_urls` (any order)."""
        wanted = sorted(peer_urls)
        for m in self._members.values():
            if sorted(m.peer_urls) == wanted:
                return m
        return None

    def get(self, member_id: int) -> Member | None:
        return self._members.get(member_id)

    def all(self) -> list[Member]:
        return sorted(self._members.values(), key=lambda m: m.id)

    def peer_urls(self) -> dict[int, str]:
        """id -> first peer URL, for the transport."""
        return {m.id: m.peer_urls[0] for m in self._members.values() if m.peer_urls}

    def upsert(self, member: Member) -> None:
        old = self._members.get(member.id)
        if old is not None:
            # Conf changes carry no client URLs; keep the published ones.
            member.client_urls = member.client_urls or old.client_urls
            member.name = member.name or old.name
        self._members[member.id] = member
        self.removed.discard(member.id)

    def remove(self, member_id: int) -> None:
        self._members.pop(member_id, None)
        self.removed.add(member_id)

    def replace(self, other: MemberTable) -> None:
        """Take `other`'s members and removed ids (a snapshot install's table)."""
        self._members = dict(other._members)
        self.removed = set(other.removed)

    def set_attributes(self, member_id: int, name: str, client_urls: list[str]) -> None:
        m = self._members.get(member_id)
        if m is None:
            return  # attributes from a removed member: ignore, as etcd does
        m.name = name or m.name
        m.client_urls = list(client_urls)

    def encode(self) -> bytes:
        return json.dumps(
            {"members": [m.to_json() for m in self.all()], "removed": sorted(self.removed)},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, data: bytes) -> MemberTable:
        obj = json.loads(data)
        table = cls([Member.from_json(m) for m in obj.get("members", [])])
        table.removed = {int(x) for x in obj.get("removed", [])}
        return table
