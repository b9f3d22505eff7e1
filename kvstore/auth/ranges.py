"""Key-range permission sets: etcd 3.4's `unifiedRangePermissions`, exactly.

Owns: turning a user's granted permissions into merged READ and WRITE interval
sets, and the two questions etcd asks of them (auth/range_perm_cache.go):
- a single key (no range_end): does some interval contain it? (`Intersects`)
- a range [key, range_end): is it wholly covered by the union of the intervals?
  (`Contains` of etcd's interval tree, reproduced step by step below, including
  what it answers for an inverted range).
Never: knows users, roles, tokens or requests.

Interval encoding (etcd's adt.BytesAffineComparable): an EMPTY bound means
+infinity. So permission [k, b"\\x00") ("--from-key") is [k, +inf); a
permission without range_end is the point [k, k + b"\\x00"); a request
range_end of b"\\x00" means "to the end"; an empty begin (+inf) covers nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from kvstore.pb import auth_pb2

# (begin, end); end None = +infinity. begin is never empty here.
Interval = tuple[bytes, bytes | None]


def _lt(a: bytes | None, b: bytes | None) -> bool:
    """a < b where None is +infinity."""
    if a is None:
        return False
    if b is None:
        return True
    return a < b


def permission_interval(key: bytes, range_end: bytes) -> Interval | None:
    """The interval a granted permission covers (None: it covers nothing)."""
    if not key:
        return None  # begin = +inf in etcd's comparable: never intersects anything
    if not range_end:
        return (key, key + b"\x00")
    if range_end == b"\x00":
        return (key, None)
    return (key, range_end)


@dataclass(frozen=True, slots=True)
class IntervalSet:
    """Intervals sorted by begin (then end), as etcd's tree visits them."""

    intervals: tuple[Interval, ...]

    @classmethod
    def of(cls, intervals: Iterable[Interval]) -> IntervalSet:
        return cls(tuple(sorted(intervals, key=lambda iv: (iv[0], iv[1] is None, iv[1] or b""))))

    def contains_key(self, key: bytes) -> bool:
        """etcd checkKeyPoint: some interval contains `key`."""
        if not key:
            return False
        return any(b <= key and _lt(key, e) for b, e in self.intervals)

    def covers(self, key: bytes, range_end: bytes) -> bool:
        """etcd checkKeyInterval: [key, range_end) (b"\\x00" = to the end) is covered
        by the union, computed as adt's IntervalTree.Contains does."""
        if not key:
            return False
        q_begin: bytes = key
        q_end: bytes | None = None if range_end == b"\x00" else range_end
        min_begin: bytes | None = None
        max_end: bytes | None = None
        started = False
        for begin, end in self.intervals:
            # Visit: intervals overlapping the query (begin < q_end and q_begin < end).
            if not (_lt(begin, q_end) and _lt(q_begin, end)):
                continue
            if not started:
                started, min_begin, max_end = True, begin, end
                continue
            if _lt(max_end, begin):
                return False  # a gap
            if _lt(max_end, end):
                max_end = end
        if not started:
            return False
        assert min_begin is not None
        return not _lt(max_end, q_end) and min_begin <= q_begin


@dataclass(frozen=True, slots=True)
class RangePermissions:
    """A user's merged permissions (all roles)."""

    read: IntervalSet
    write: IntervalSet

    @classmethod
    def merge(cls, roles: Iterable[auth_pb2.Role]) -> RangePermissions:
        read: list[Interval] = []
        write: list[Interval] = []
        for role in roles:
            for perm in role.keyPermission:
                iv = permission_interval(perm.key, perm.range_end)
                if iv is None:
                    continue
                if perm.permType in (auth_pb2.Permission.READ, auth_pb2.Permission.READWRITE):
                    read.append(iv)
                if perm.permType in (auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE):
                    write.append(iv)
        return cls(IntervalSet.of(read), IntervalSet.of(write))

    def allows(self, write: bool, key: bytes, range_end: bytes = b"") -> bool:
        perms = self.write if write else self.read
        if not range_end:
            return perms.contains_key(key)
        return perms.covers(key, range_end)
