"""RaftLog: the durable prefix (LogStorage) plus the unstable tail not yet persisted.

Owns: index/term lookups across storage and the unstable tail, the append /
truncate rules of §5.3 (log matching), commit_index and applied_index.
Never: writes storage (the driver does, then `stable_to` drops the tail), decides
what to commit (the core does, §5.4.2).
Invariants: applied <= committed <= last_index; unstable entries start at
`_offset` and are contiguous; an unstable snapshot, if any, sits at _offset - 1.
"""

from __future__ import annotations

from .errors import Compacted, Unavailable
from .storage import LogStorage, limit_size
from .types import Entry, EntryType, Snapshot


class RaftLog:
    __slots__ = (
        "storage",
        "committed",
        "applied",
        "applying",
        "_unstable",
        "_offset",
        "_snapshot",
    )

    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self._unstable: list[Entry] = []
        self._offset = last + 1
        self._snapshot: Snapshot | None = None
        self.committed = first - 1
        self.applied = first - 1
        self.applying = first - 1  # highest index handed out to apply, maybe not yet applied

    # --- lookups -----------------------------------------------------------------------
    def first_index(self) -> int:
        if self._snapshot is not None:
            return self._snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self._unstable:
            return self._offset + len(self._unstable) - 1
        if self._snapshot is not None:
            return self._snapshot.metadata.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term at `index`; 0 beyond the last index; raises Compacted below first-1."""
        off = self._offset
        if index >= off:
            i = index - off
            return self._unstable[i].term if i < len(self._unstable) else 0
        snap = self._snapshot
        if snap is not None:
            if index == snap.metadata.index:
                return snap.metadata.term
            if index < snap.metadata.index:
                raise Compacted(f"index {index} compacted")
            return 0
        try:
            return self.storage.term(index)
        except Unavailable:
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except Compacted:
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1 election restriction: is (last_term, last_index) at least as new as ours?"""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """Largest (i, term(i)) with i <= index and term(i) <= term (etcd findConflictByTerm).

        Lets a rejection skip every entry of a conflicting term in one round trip."""
        while index > 0:
            try:
                t = self.term(index)
            except Compacted:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi) up to `max_bytes` (at least one). Raises Compacted."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(f"index {lo} compacted")
        off = self._offset
        if hi <= off:
            return self.storage.entries(lo, hi, max_bytes)
        if lo >= off:
            return limit_size(self._unstable[lo - off : hi - off], max_bytes)
        ents = self.storage.entries(lo, off, max_bytes)
        if len(ents) < off - lo:
            return ents  # size limit reached inside storage
        return limit_size(ents + self._unstable[: hi - off], max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    # --- mutation ----------------------------------------------------------------------
    def append(self, ents: list[Entry]) -> None:
        """Append `ents`, truncating any unstable or stable suffix from ents[0].index."""
        if not ents:
            return
        after = ents[0].index
        off = self._offset
        if after == off + len(self._unstable):
            self._unstable.extend(ents)
        elif after <= off:
            # Replaces everything unstable and (once persisted) part of storage too.
            self._offset = after
            self._unstable = list(ents)
        else:
            del self._unstable[after - off :]
            self._unstable.extend(ents)

    def append_new(self, term: int, typ: EntryType, data: bytes) -> Entry:
        """Leader fast path: append one new entry after the last index."""
        unstable = self._unstable
        index = unstable[-1].index + 1 if unstable else self.last_index() + 1
        e = Entry(term, index, typ, data)
        unstable.append(e)
        return e

    def find_conflict(self, ents: list[Entry] | tuple[Entry, ...]) -> int:
        """Index of the first entry of `ents` not matching our log, or 0 if all match."""
        for e in ents:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            if index > self.last_index():
                raise AssertionError(f"commit {index} beyond last {self.last_index()}")
            self.committed = index

    def maybe_commit(self, index: int, term: int) -> bool:
        """§5.4.2: commit `index` only if it carries the current `term`."""
        if index > self.committed and self.match_term(index, term):
            self.committed = index
            return True
        return False

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index
        if index > self.applying:
            self.applying = index

    def restore(self, snap: Snapshot) -> None:
        """Install a snapshot as the new unstable base; the whole log is replaced."""
        self.committed = snap.metadata.index
        self._snapshot = snap
        self._unstable = []
        self._offset = snap.metadata.index + 1

    # --- ready / advance ---------------------------------------------------------------
    def unstable_entries(self) -> list[Entry]:
        return list(self._unstable)

    @property
    def unstable_snapshot(self) -> Snapshot | None:
        return self._snapshot

    def persisted_index(self) -> int:
        """Last index known durable (used for the leader's own progress)."""
        if self._snapshot is not None:
            return 0  # nothing after an uninstalled snapshot is known durable
        return self._offset - 1

    def stable_to(self, index: int, term: int) -> bool:
        """The driver persisted entries up to (index, term); drop them from the tail."""
        off = self._offset
        if index < off or index >= off + len(self._unstable):
            return False
        if self._unstable[index - off].term != term:
            return False  # replaced since the Ready was handed out
        del self._unstable[: index + 1 - off]
        self._offset = index + 1
        return True

    def stable_snap_to(self, index: int) -> None:
        if self._snapshot is not None and self._snapshot.metadata.index == index:
            self._snapshot = None

    def has_next_committed(self) -> bool:
        return self.committed > max(self.applying, self.first_index() - 1)

    def next_committed(self, max_bytes: int | None = None) -> list[Entry]:
        """Committed entries not yet handed out; marks them as being applied."""
        lo = max(self.applying + 1, self.first_index())
        if self.committed + 1 > lo:
            ents = self.slice(lo, self.committed + 1, max_bytes)
            self.applying = ents[-1].index
            return ents
        return []
