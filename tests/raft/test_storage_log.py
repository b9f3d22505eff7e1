"""MemoryLogStorage, RaftLog, Progress and quorum arithmetic against naive references."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.raft import Compacted, MemoryLogStorage, Unavailable
from kvstore.raft.log import RaftLog
from kvstore.raft.progress import Inflights, Progress, ProgressState
from kvstore.raft.quorum import VoteResult, committed_index, vote_result
from kvstore.raft.read_only import ReadOnly, ReadRequest, decode_round
from kvstore.raft.types import ConfState, Entry, Snapshot, SnapshotMetadata


def _ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    return [Entry(term, i, data=b"x" * 10) for i in range(lo, hi)]


def test_memory_storage_append_truncate_compact() -> None:
    s = MemoryLogStorage(ConfState((1,)))
    s.append(_ents(1, 11))
    assert (s.first_index(), s.last_index()) == (1, 10)
    s.append(_ents(5, 7, term=2))  # replaces the suffix from 5
    assert s.last_index() == 6 and s.term(6) == 2 and s.term(4) == 1
    with pytest.raises(Unavailable):
        s.term(7)
    with pytest.raises(Unavailable):
        s.append(_ents(9, 10))  # gap
    with pytest.raises(ValueError):
        s.compact(3)  # beyond the snapshot
    snap = s.create_snapshot(4, ConfState((1,)), b"d")
    assert snap.metadata == SnapshotMetadata(4, 1, ConfState((1,)))
    assert s.create_snapshot(2, ConfState(), b"") is snap  # older: ignored
    with pytest.raises(Unavailable):
        s.create_snapshot(99, ConfState(), b"")
    s.compact(4)
    s.compact(2)  # no-op
    assert s.first_index() == 5 and s.term(4) == 1
    with pytest.raises(Compacted):
        s.term(3)
    with pytest.raises(Compacted):
        s.entries(4, 6)
    with pytest.raises(Unavailable):
        s.entries(5, 9)
    assert [e.index for e in s.entries(5, 7)] == [5, 6]
    assert len(s.entries(5, 7, max_bytes=1)) == 1  # at least one entry
    s.append(_ents(1, 3))  # fully compacted: ignored
    s.append(_ents(3, 8, term=3))  # overlaps the compaction point
    assert s.first_index() == 5 and s.last_index() == 7 and s.term(5) == 3
    s.apply_snapshot(Snapshot(SnapshotMetadata(20, 4, ConfState((1, 2)))))
    assert (s.first_index(), s.last_index()) == (21, 20)
    assert s.initial_state()[1] == ConfState((1, 2))
    s.apply_snapshot(Snapshot(SnapshotMetadata(10, 4)))  # older: ignored
    assert s.first_index() == 21
    with pytest.raises(Compacted):
        s.term(5)


def test_raft_log_unstable_and_stable_views() -> None:
    s = MemoryLogStorage()
    s.append(_ents(1, 6))
    log = RaftLog(s)
    assert log.last_index() == 5 and log.persisted_index() == 5
    log.append(_ents(6, 9, term=2))
    assert log.last_index() == 8 and log.term(7) == 2 and log.term(9) == 0
    assert [e.index for e in log.slice(4, 8)] == [4, 5, 6, 7]
    assert len(log.slice(4, 8, max_bytes=60)) == 1
    log.append(_ents(7, 8, term=3))  # truncate inside the unstable tail
    assert log.last_index() == 7 and log.term(7) == 3
    log.append(_ents(3, 5, term=4))  # truncate into the stable part
    assert log.last_index() == 4 and log.term(3) == 4 and log.term(2) == 1
    assert not log.stable_to(4, 9)  # wrong term: ignored
    assert not log.stable_to(99, 4)
    s.append(log.unstable_entries())
    assert log.stable_to(4, 4) and log.unstable_entries() == []
    assert log.find_conflict_by_term(4, 3) == (2, 1)
    assert log.find_conflict_by_term(4, 0) == (0, 0)
    assert log.is_up_to_date(1, 5) and not log.is_up_to_date(9, 3)
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.commit_to(50)
    assert not log.maybe_commit(4, 1) and log.maybe_commit(4, 4)
    assert [e.index for e in log.next_committed()] == [1, 2, 3, 4]
    log.applied_to(4)
    assert log.next_committed() == [] and not log.has_next_committed()
    snap = Snapshot(SnapshotMetadata(10, 5))
    log.restore(snap)
    assert log.first_index() == 11 and log.last_index() == 10 and log.term(10) == 5
    assert log.persisted_index() == 0 and log.term(11) == 0
    with pytest.raises(Compacted):
        log.term(9)
    with pytest.raises(Compacted):
        log.slice(5, 11)
    assert not log.match_term(9, 5)
    log.stable_snap_to(10)
    assert log.unstable_snapshot is None


def test_inflights_and_progress_transitions() -> None:
    inf = Inflights(3)
    for i in (5, 7, 9):
        inf.add(i)
    assert inf.full()
    inf.free_le(7)
    assert len(inf) == 1 and not inf.full()
    inf.free_first_one()
    inf.free_first_one()
    assert len(inf) == 0
    pr = Progress(10, 2)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.probe_sent = True
    assert pr.is_paused()
    assert not pr.maybe_decr_to(5, 3)  # stale: not the probe we sent
    assert pr.maybe_decr_to(9, 3) and pr.next == 4 and not pr.probe_sent
    assert pr.maybe_update(6) and pr.next == 7
    assert not pr.maybe_update(6)
    pr.become_replicate()
    assert pr.next == 7
    assert not pr.maybe_decr_to(5, 0)  # at or below match: stale
    assert pr.maybe_decr_to(8, 0) and pr.next == 7
    pr.become_snapshot(20)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.next == 21


@given(st.lists(st.integers(0, 50), min_size=1, max_size=7))
def test_committed_index_matches_naive(matches: list[int]) -> None:
    n = len(matches)
    naive = max(i for i in range(0, 51) if sum(m >= i for m in matches) > n // 2)
    assert committed_index(matches) == naive


@given(st.lists(st.sampled_from([None, True, False]), min_size=1, max_size=7))
def test_vote_result_matches_naive(answers: list) -> None:
    voters = list(range(1, len(answers) + 1))
    votes = {v: a for v, a in zip(voters, answers, strict=True) if a is not None}
    need = len(voters) // 2 + 1
    yes = sum(a is True for a in answers)
    no = sum(a is False for a in answers)
    expected = (
        VoteResult.WON
        if yes >= need
        else VoteResult.LOST
        if len(voters) - no < need
        else VoteResult.PENDING
    )
    assert vote_result(voters, votes) == expected
    assert committed_index([]) == 0


def test_read_only_rounds_confirm_in_order() -> None:
    ro = ReadOnly()
    ro.add(ReadRequest(b"a", 1))
    c1 = ro.start_round(5)
    ro.add(ReadRequest(b"b", 1))
    c2 = ro.start_round(6)
    assert ro.last_round_ctx() == c2 and ro.pending_count() == 2
    assert ro.ack(2, b"junk", 1, (1, 2, 3)) == []
    assert ro.ack(3, c1, 1, (1, 2, 3))[0].index == 5  # round 1 confirmed only
    done = ro.ack(2, c2, 1, (1, 2, 3))
    assert [r.index for r in done] == [6] and decode_round(c2) == 2
    assert ro.pending_count() == 0 and ro.ack(2, c2, 1, (1, 2, 3)) == []
