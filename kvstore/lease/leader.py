"""LeaderLeases: the leader's expiry clock for leases (node-local, never replicated).

Owns: each lease's deadline on the current leader, renewals (keepalive),
the choice of which leases have expired (to be revoked through Raft) and of
which remaining TTLs to checkpoint through Raft, at a bounded rate.
Never: changes replicated state itself (it only returns what to propose),
runs on a follower (the service calls `promote`/`demote` on role changes),
or touches storage, the network or asyncio.

Why remaining TTL survives a leader change (etcd's default does not): the
leader periodically checkpoints every lease's remaining TTL; a renewal of a
lease that has a checkpoint first clears it (remaining 0 = the full TTL).
On promotion a new leader starts each lease at its checkpointed remaining
TTL (or the full TTL without one). Because a checkpoint is taken before the
promotion and cleared on renewal, the new deadline is never earlier than
the old leader's; and because the first checkpoint round follows promotion
soon (`first_checkpoint_delay_s`), repeated elections cannot keep a lease
alive forever: each leader that lasts that long moves its remaining TTL down.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from kvstore.lease.clock import Clock
from kvstore.lease.lessor import Lessor

DEFAULT_CHECKPOINT_INTERVAL_S = 2.0
DEFAULT_MAX_CHECKPOINTS = 5000  # per round (one Raft entry)
DEFAULT_MAX_REVOKES = 1000  # per expiry pass (etcd leaseRevokeRate)
REVOKE_RETRY_S = 3.0  # re-propose a revoke that has not been applied by then


@dataclass
class LeaderStats:
    promotions: int = 0
    expired: int = 0
    checkpoints: int = 0
    renewals: int = 0


class LeaderLeases:
    """Deadlines of the leases, valid only while `active` (this node leads)."""

    def __init__(
        self,
        lessor: Lessor,
        clock: Clock,
        *,
        checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S,
        first_checkpoint_delay_s: float = 0.5,
        max_checkpoints: int = DEFAULT_MAX_CHECKPOINTS,
        max_revokes: int = DEFAULT_MAX_REVOKES,
    ) -> None:
        self._lessor = lessor
        self._clock = clock
        self.checkpoint_interval_s = checkpoint_interval_s
        self.first_checkpoint_delay_s = first_checkpoint_delay_s
        self._max_checkpoints = max_checkpoints
        self._max_revokes = max_revokes
        self.active = False
        self._deadlines: dict[int, float] = {}
        self._revoking: dict[int, float] = {}
        # (time, id) for every deadline and revoke retry ever set; an entry is
        # live only while it equals the lease's current deadline / retry time
        # (stale ones are skipped when popped), so an expiry pass costs
        # O(expired x log n) instead of a scan of every lease.
        self._heap: list[tuple[float, int]] = []
        self._next_checkpoint = math.inf
        self.stats = LeaderStats()

    # ------------------------------------------------------------ role
    def promote(self) -> None:
        """This node became leader: start every lease from its checkpoint."""
        self.active = True
        self.stats.promotions += 1
        self._deadlines.clear()
        self._revoking.clear()
        self._heap.clear()
        self._next_checkpoint = self._clock.now() + self.first_checkpoint_delay_s
        self._lessor.take_granted()  # promotion scans every lease below
        self._refresh(full=True)

    def demote(self) -> None:
        self.active = False
        self._deadlines.clear()
        self._revoking.clear()
        self._heap.clear()
        self._next_checkpoint = math.inf

    def _set_deadline(self, lease_id: int, deadline: float) -> None:
        self._deadlines[lease_id] = deadline
        heapq.heappush(self._heap, (deadline, lease_id))

    def _refresh(self, full: bool = False) -> None:
        """Give new leases a deadline (those granted since the last pass, or
        every lease after a promotion / when the lessor lost track); forget
        revoked ones when the map has grown past the lessor."""
        now = self._clock.now()
        deadlines = self._deadlines
        granted = self._lessor.take_granted()
        if full or granted is None:
            new = [lease for lease in self._lessor if lease.id not in deadlines]
        else:
            new = [
                lease
                for lease in map(self._lessor.get, granted)
                if lease is not None and lease.id not in deadlines
            ]
        for lease in new:
            self._set_deadline(lease.id, now + (lease.remaining_ttl or lease.ttl))
        if len(deadlines) > 2 * len(self._lessor) + 1024:
            self._forget_revoked()
        if len(self._heap) > 3 * len(deadlines) + 1024:
            self._rebuild_heap()

    def _forget_revoked(self) -> None:
        for lease_id in [i for i in self._deadlines if not self._lessor.exists(i)]:
            del self._deadlines[lease_id]
            self._revoking.pop(lease_id, None)

    def _rebuild_heap(self) -> None:
        """Drop stale entries (renewals leave their old deadline behind)."""
        heap = [(d, i) for i, d in self._deadlines.items()]
        heap += [(t, i) for i, t in self._revoking.items()]
        heapq.heapify(heap)
        self._heap = heap

    # ----------------------------------------------------------- queries
    def renew(self, lease_id: int) -> tuple[int, bool]:
        """Keepalive: (granted TTL, needs_clear). TTL 0 if the lease is unknown
        or already expired (its revoke is on the way). `needs_clear`: the
        lease carries a checkpoint that must be cleared through Raft before
        the renewal is safe across a leader change."""
        lease = self._lessor.get(lease_id)
        if lease is None or not self.active:
            return 0, False
        now = self._clock.now()
        deadline = self._deadlines.get(lease_id)
        if deadline is not None and deadline <= now:
            return 0, False
        self._set_deadline(lease_id, now + lease.ttl)
        self.stats.renewals += 1
        return lease.ttl, lease.remaining_ttl != 0

    def remaining(self, lease_id: int) -> int | None:
        """Whole seconds left (etcd truncates), None if unknown to the leader."""
        lease = self._lessor.get(lease_id)
        if lease is None or not self.active:
            return None
        deadline = self._deadlines.get(lease_id)
        if deadline is None:
            deadline = self._clock.now() + (lease.remaining_ttl or lease.ttl)
            self._set_deadline(lease_id, deadline)
        return max(0, int(deadline - self._clock.now()))

    def deadline(self, lease_id: int) -> float | None:
        return self._deadlines.get(lease_id)

    # ------------------------------------------------------- decisions
    def expired(self) -> list[int]:
        """Leases whose deadline passed and whose revoke is not in flight
        (at most `max_revokes`, earliest deadline first)."""
        if not self.active:
            return []
        self._refresh()
        now = self._clock.now()
        heap, deadlines, revoking = self._heap, self._deadlines, self._revoking
        out: list[int] = []
        while heap and heap[0][0] <= now and len(out) < self._max_revokes:
            when, lease_id = heapq.heappop(heap)
            if not self._lessor.exists(lease_id):
                deadlines.pop(lease_id, None)
                revoking.pop(lease_id, None)
                continue
            retry_at = revoking.get(lease_id)
            if retry_at is None:
                if deadlines.get(lease_id) != when:
                    continue  # renewed since: a later entry is live
            elif retry_at != when:
                continue  # its revoke is in flight; the retry entry is live
            out.append(lease_id)
            revoking[lease_id] = now + REVOKE_RETRY_S
            heapq.heappush(heap, (now + REVOKE_RETRY_S, lease_id))
        self.stats.expired += len(out)
        return out

    def checkpoints_due(self) -> list[tuple[int, int]]:
        """(lease id, remaining seconds) to propose now, or [] between rounds.

        One round per `checkpoint_interval_s`; a lease is included when its
        remaining TTL dropped at least a second below what is recorded, the
        most out-of-date first, at most `max_checkpoints` per round."""
        if not self.active:
            return []
        now = self._clock.now()
        if now < self._next_checkpoint:
            return []
        self._next_checkpoint = now + self.checkpoint_interval_s
        self._refresh()
        stale: list[tuple[int, int, int]] = []
        for lease in self._lessor:
            deadline = self._deadlines.get(lease.id)
            if deadline is None or lease.id in self._revoking:
                continue
            remaining = max(1, math.ceil(deadline - now))
            recorded = lease.remaining_ttl or lease.ttl
            if recorded - remaining >= 1:
                stale.append((remaining - recorded, lease.id, remaining))
        stale.sort()
        out = [(lease_id, remaining) for _, lease_id, remaining in stale[: self._max_checkpoints]]
        self.stats.checkpoints += len(out)
        return out

    def revoke_failed(self, lease_id: int) -> None:
        """A revoke proposal failed: allow the next pass to retry at once."""
        if lease_id in self._revoking and self.active:
            now = self._clock.now()
            self._revoking[lease_id] = now
            heapq.heappush(self._heap, (now, lease_id))
