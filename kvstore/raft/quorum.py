"""Majority arithmetic for single-server configurations.

Owns: the two quorum questions Raft asks: which index is replicated on a
majority (§5.3/§5.4.2), and whether an election is won, lost or pending (§5.2).
Never: state; these are pure functions over the voter set.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping


class VoteResult(enum.IntEnum):
    PENDING = 0
    LOST = 1
    WON = 2


def majority(n_voters: int) -> int:
    return n_voters // 2 + 1


def committed_index(matches: Iterable[int]) -> int:
    """The largest index that a majority has, given each voter's match index (0 if none)."""
    values = sorted(matches, reverse=True)
    if not values:
        return 0
    return values[majority(len(values)) - 1]


def vote_result(voters: Iterable[int], votes: Mapping[int, bool]) -> VoteResult:
    """Tally `votes` (granted/rejected by node id); nodes absent have not answered."""
    voters = tuple(voters)
    granted = rejected = 0
    for v in voters:
        answer = votes.get(v)
        if answer is True:
            granted += 1
        elif answer is False:
            rejected += 1
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if len(voters) - rejected >= need:
        return VoteResult.PENDING
    return VoteResult.LOST
