"""Per-follower replication progress as the leader sees it (etcd's tracker.Progress).

Owns: match_index / next_index, the probe / replicate / snapshot state machine,
and the in-flight window used for flow control.
Never: sends messages or reads the log; core.py decides, this only records.
Invariants: match_index < next_index; in REPLICATE the in-flight indexes are
increasing; in SNAPSHOT nothing is sent until the snapshot is reported.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last index of each unacknowledged append message, oldest first, at most `capacity`."""

    __slots__ = ("capacity", "_q")

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._q: deque[int] = deque()

    def add(self, index: int) -> None:
        self._q.append(index)

    def free_le(self, index: int) -> None:
        q = self._q
        while q and q[0] <= index:
            q.popleft()

    def free_first_one(self) -> None:
        if self._q:
            self._q.popleft()

    def full(self) -> bool:
        return len(self._q) >= self.capacity

    def reset(self) -> None:
        self._q.clear()

    def __len__(self) -> int:
        return len(self._q)


class Progress:
    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "pending_snapshot",
        "recent_active",
        "active_last_period",
        "is_learner",
        "inflights",
        "sent_commit",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.recent_active = False
        # recent_active as it was before the last check-quorum reset: a healthy
        # peer reads as inactive for a heartbeat after each reset otherwise.
        self.active_last_period = False
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)
        # Highest commit index queued to this peer in an APP (leader only): a
        # commit-only append is skipped when an append already carried it.
        self.sent_commit = 0

    def _reset_state(self, state: ProgressState) -> None:
        self.probe_sent = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, n: int) -> bool:
        """Record an acknowledgement up to `n`; True if match_index moved."""
        updated = False
        if self.match < n:
            self.match = n
            updated = True
            self.probe_sent = False
        if self.next < n + 1:
            self.next = n + 1
        return updated

    def optimistic_update(self, n: int) -> None:
        self.next = n + 1

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """Handle a rejected append at `rejected`; False if the rejection is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True


@dataclass(frozen=True, slots=True)
class ProgressView:
    """A read-only copy of one Progress, returned by RaftCore.status()."""

    match: int
    next: int
    state: ProgressState
    recent_active: bool
    is_learner: bool
    paused: bool
    inflight: int
    # Heard from within the current or the previous election timeout (for
    # callers asking "is this peer up", e.g. the strict reconfiguration check).
    heard_recently: bool = False
