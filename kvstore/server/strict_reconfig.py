"""Strict reconfiguration checks: etcd's `--strict-reconfig-check` (on by default).

Owns: deciding, on the leader, whether a membership change may be proposed
now without endangering quorum — etcd 3.4's mayAddMember / mayRemoveMember /
mayPromoteMember with their errors:
- "re-configuration failed due to not enough started members" when too few
  voters have started (published their name) for the quorum after the change;
- "unhealthy cluster" when a voter is not connected (adding), or when removing
  a connected voter would leave fewer connected voters than a quorum.
"Connected" is read from the leader's Raft progress (the peer answered within
the current or the previous election timeout and has acknowledged entries) instead of etcd's
transport "active for 5 s": a member added but never started has match 0, so
it never counts, as in etcd.
Never: proposes or changes anything; pure functions of the member table and
a Raft status.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvstore import errors
from kvstore.raft.core import Status
from kvstore.server.membership import Member


def is_connected(status: Status, self_id: int, member_id: int) -> bool:
    """Whether the leader (`self_id`, whose `status` this is) hears from `member_id`."""
    if member_id == self_id:
        return True
    pr = status.progress.get(member_id)
    return pr is not None and bool(pr.heard_recently) and pr.match > 0


def _voters(members: Iterable[Member]) -> list[Member]:
    return [m for m in members if not m.is_learner]


def _started(member: Member) -> bool:
    return bool(member.name)  # etcd: IsStarted() == the member published its name


def check_add(members: Iterable[Member], status: Status, self_id: int, is_learner: bool) -> None:
    """Raise unless a member (learner or voter) may be added now."""
    voters = _voters(members)
    if not is_learner:
        n_members = len(voters) + 1
        n_started = sum(_started(m) for m in voters)
        # etcd's exception: growing a 1-member cluster (restoring from backup).
        if not (n_started == 1 and n_members == 2) and n_started < n_members // 2 + 1:
            raise errors.MEMBER_NOT_ENOUGH_STARTED()
    if not all(is_connected(status, self_id, m.id) for m in voters):
        raise errors.UNHEALTHY_CLUSTER()


def check_remove(members: Iterable[Member], status: Status, self_id: int, target_id: int) -> None:
    """Raise unless member `target_id` may be removed now."""
    members = list(members)
    target = next((m for m in members if m.id == target_id), None)
    if target is not None and target.is_learner:
        return  # a learner is not part of any quorum
    voters = _voters(members)
    rest = [m for m in voters if m.id != target_id]
    if sum(_started(m) for m in rest) < len(rest) // 2 + 1:
        raise errors.MEMBER_NOT_ENOUGH_STARTED()
    if target_id != self_id and not is_connected(status, self_id, target_id):
        return  # a member that is down is not part of the active quorum
    active = sum(is_connected(status, self_id, m.id) for m in voters)
    if active - 1 < 1 + (len(voters) - 1) // 2:
        raise errors.UNHEALTHY_CLUSTER()


def check_promote(members: Iterable[Member]) -> None:
    """Raise unless a learner may be promoted (it counts as started)."""
    voters = _voters(members)
    n_members = len(voters) + 1
    n_started = 1 + sum(_started(m) for m in voters)
    if n_started < n_members // 2 + 1:
        raise errors.MEMBER_NOT_ENOUGH_STARTED()
