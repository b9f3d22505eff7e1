"""The read side of the durable Raft log, and an in-memory implementation.

Owns: the `LogStorage` protocol the core reads from (etcd's `Storage`), and
`MemoryLogStorage`, which tests, the simulator and benchmarks write to.
Never: called for writes by the core. The driver writes (append, hard state,
snapshot) before it calls `RaftCore.advance`.
Invariants of MemoryLogStorage: `_ents[0]` is a dummy entry at the snapshot /
compaction point (index = first_index - 1, with its term); entries are
contiguous after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import Protocol

from .errors import Compacted, SnapshotTemporarilyUnavailable, Unavailable
from .types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata


class LogStorage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]:
        """The persisted hard state and the configuration as of the snapshot."""
        ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); at least one if lo < hi, then up to `max_bytes`.

        Raises Compacted if lo <= the snapshot index, Unavailable if hi > last+1."""
        ...

    def term(self, index: int) -> int:
        """Term of `index`; valid for first_index()-1 .. last_index().

        Raises Compacted below that range, Unavailable above it."""
        ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot:
        """The latest snapshot; may raise SnapshotTemporarilyUnavailable."""
        ...


_data = attrgetter("data")


def limit_size(ents: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `ents` within `max_bytes`, but never empty."""
    if max_bytes is None or not ents:
        return ents
    if sum(map(len, map(_data, ents))) + 24 * len(ents) <= max_bytes:
        return ents  # the common case, summed at C speed
    size = 0
    for i, e in enumerate(ents):
        size += len(e.data) + 24
        if size > max_bytes and i > 0:
            return ents[:i]
    return ents


class MemoryLogStorage:
    """LogStorage in memory. Single-threaded, like the core."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot(SnapshotMetadata(0, 0, conf_state or ConfState()))
        self._ents: list[Entry] = [Entry(0, 0)]
        self.snapshot_unavailable = False  # tests: simulate a snapshot being prepared

    # --- read side (LogStorage) ---------------------------------------------------------
    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.metadata.conf_state

    @property
    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(f"index {index} compacted (first {offset + 1})")
        if index - offset >= len(self._ents):
            raise Unavailable(f"index {index} beyond last {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"index {lo} compacted (first {offset + 1})")
        if hi > self.last_index() + 1:
            raise Unavailable(f"index {hi - 1} beyond last {self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        if self.snapshot_unavailable:
            raise SnapshotTemporarilyUnavailable("snapshot not ready")
        return self._snapshot

    # --- write side (driver only) -------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: Sequence[Entry]) -> None:
        """Append, replacing any existing suffix that starts at entries[0].index."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # all already compacted
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        offset = entries[0].index - self._ents[0].index
        if offset > len(self._ents):
            raise Unavailable(f"missing log entry before {entries[0].index}")
        del self._ents[offset:]
        self._ents.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Replace the whole log with `snap` (a follower installing the leader's snapshot)."""
        if snap.metadata.index <= self._snapshot.metadata.index:
            return
        self._snapshot = snap
        self._ents = [Entry(snap.metadata.term, snap.metadata.index)]

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record a state-machine snapshot taken at applied `index` (log kept; see compact)."""
        if index <= self._snapshot.metadata.index:
            return self._snapshot
        if index > self.last_index():
            raise Unavailable(f"snapshot index {index} beyond last {self.last_index()}")
        snap = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        self._snapshot = snap
        return snap

    def compact(self, index: int) -> None:
        """Drop entries up to and including `index`.

        `index` must not pass the latest snapshot (create_snapshot first): a follower
        that needs a compacted entry is sent that snapshot and must find the log
        continuing right after it."""
        offset = self._ents[0].index
        if index <= offset:
            return
        if index > self._snapshot.metadata.index:
            raise ValueError(f"compact {index} beyond snapshot {self._snapshot.metadata.index}")
        if index > self.last_index():
            raise Unavailable(f"compact {index} beyond last {self.last_index()}")
        i = index - offset
        dummy = Entry(self._ents[i].term, index)
        self._ents = [dummy] + self._ents[i + 1 :]
