"""Replication rules: §5.3 log matching, §5.4 leader completeness and state machine
safety, §5.4.2 commit of current-term entries only (Figure 8), conflict back-off by
term, flow control, heartbeat commit, the persist-before-ack contract."""

from __future__ import annotations

import random

from kvstore.raft import MemoryLogStorage, RaftConfig, RaftCore
from kvstore.raft.progress import ProgressState
from kvstore.raft.types import ConfState, Entry, Message, MessageType, Role

from .sim import CRASH_AFTER_PERSIST, CRASH_AFTER_SEND, SimNetwork

MT = MessageType


def _logs(net: SimNetwork) -> dict[int, list[tuple[int, int, bytes]]]:
    out = {}
    for i, n in net.nodes.items():
        st = n.storage
        out[i] = [
            (e.index, e.term, e.data) for e in st.entries(st.first_index(), st.last_index() + 1)
        ]
    return out


def test_log_matching_after_partitions_and_heal() -> None:
    net = SimNetwork(range(1, 6), seed=21)
    net.elect(1)
    for round_ in range(4):
        net.partition([1 + round_ % 5, 2 + round_ % 4], [3, 4, 5])
        for i in range(1, 6):
            net.propose(i, b"r%d-%d" % (round_, i))
        net.tick(25)
        net.heal()
        net.tick(25)
    assert net.commit_new_entry(b"end") > 0
    net.stabilize()
    logs = _logs(net)
    assert all(log == logs[1] for log in logs.values())  # §5.3: identical logs


def test_leader_completeness_new_leader_has_committed_entries() -> None:
    net = SimNetwork([1, 2, 3], seed=22)
    net.elect(1)
    for i in range(5):
        net.propose(1, b"c%d" % i)
    net.stabilize()
    committed = net.core(1).commit_index
    net.crash(1)
    net.tick(40)
    ld = net.leader()
    assert ld in (2, 3)
    log = net.core(ld).raft_log
    assert [e.data for e in log.slice(2, committed + 1)] == [b"c%d" % i for i in range(5)]


def test_state_machine_safety_with_crashes_mid_ready() -> None:
    # Crash the leader after it sent appends but before its own fsync, and a follower
    # after persisting but before acknowledging: no applied entry may differ anywhere.
    net = SimNetwork([1, 2, 3], seed=23)
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].crash_at = CRASH_AFTER_SEND
    net.nodes[2].crash_at = CRASH_AFTER_PERSIST
    net.tick(3)
    net.restart(1)
    net.restart(2)
    net.tick(30)
    assert net.commit_new_entry(b"b") > 0
    datas = [n.applied_data for n in net.nodes.values()]
    assert all(b"b" in d for d in datas)


def test_current_term_commit_rule_figure_8() -> None:
    """§5.4.2: an entry from an earlier term is never committed by counting replicas."""
    net = SimNetwork(range(1, 6), seed=24, pre_vote=False, check_quorum=False, max_size_per_msg=1)
    net.elect(1)  # term 1, index 1 committed everywhere
    # (a) S1 replicates index 2 (term 1) only to S2.
    net.partition([1, 2], [3, 4, 5])
    net.propose(1, b"old")
    net.stabilize()
    assert net.core(2).last_index == 2 and net.core(1).commit_index == 1
    # (b) S5 wins term 2 with S3, S4 and appends index 2 (term 2) only locally.
    net.heal()
    net.isolate(1)
    net.cut(2, 5)
    net.filters.append(lambda m: not (m.sender == 5 and m.type == MT.APP))
    net.core(5).campaign()
    net.stabilize()
    assert net.core(5).role == Role.LEADER and net.core(5).term == 2
    net.crash(5)
    net.restart(5)
    # (c) S1 wins term 3 and replicates index 2 (term 1) to S3, but not its term-3 entry.
    net.heal()
    net.isolate(5)
    net.filters.append(
        lambda m: not (m.type == MT.APP and m.sender == 1 and any(e.term > 2 for e in m.entries))
    )
    net.crash(1)  # S1 is still leader of term 1 (no check-quorum); restart it as follower
    net.restart(1)
    for _ in range(3):  # S3, S4 voted in term 2 already: S1 needs term 3
        net.core(1).campaign()
        net.stabilize()
        if net.core(1).role == Role.LEADER:
            break
    assert net.core(1).role == Role.LEADER and net.core(1).term == 3
    s1 = net.core(1)
    # S2 and S3 acknowledge index 2 (S2 really holds it); with S1 that is a majority.
    s1.step(Message(MT.APP_RESP, to=1, sender=2, term=s1.term, index=2))
    s1.step(Message(MT.APP_RESP, to=1, sender=3, term=s1.term, index=2))
    progress = s1.status().progress
    assert progress[2].match == 2 and progress[3].match == 2 and progress[1].match >= 2
    assert net.core(2).raft_log.term(2) == 1
    assert s1.commit_index == 1  # index 2 is from term 1: not committed by counting
    # (d) S1 crashes; S5 (last term 2) wins term 4 and overwrites index 2.
    net.crash(1)
    net.heal()
    for _ in range(5):
        if net.leader() == 5:
            break
        net.core(5).campaign()
        net.stabilize()
    assert net.leader() == 5
    net.propose(5, b"new")
    net.stabilize()
    assert net.applied_entry[2][0] == 2  # index 2 ended up as S5's term-2 entry
    assert net.core(2).raft_log.term(2) == 2  # S2's copy of the term-1 entry was replaced
    assert all(b"old" not in n.applied_data for n in net.nodes.values())


def test_conflict_backoff_skips_whole_terms() -> None:
    net = SimNetwork([1, 2, 3], seed=25, max_size_per_msg=1 << 20)
    net.elect(1)
    net.isolate(1)
    for i in range(60):  # 60 uncommitted entries of S1's term on S1 only
        net.propose(1, b"lost%d" % i)
    net.stabilize()
    net.tick(40)  # S2 or S3 takes over and commits its own entries
    ld = net.leader()
    assert ld in (2, 3)
    for i in range(60):
        net.propose(ld, b"won%d" % i)
    net.stabilize()
    # A leader elected now starts probing S1 at its own (long) last index.
    other = 5 - ld
    net.core(ld).transfer_leadership(other)
    net.stabilize()
    ld = net.leader()
    assert ld == other and net.core(ld).last_index > 60
    rejects: list[Message] = []
    net.heal()
    net.filters.append(lambda m: (m.type == MT.APP_RESP and m.reject and rejects.append(m)) or True)
    net.tick(10)
    net.stabilize()
    assert net.core(1).raft_log.last_index() == net.core(ld).raft_log.last_index()
    from_1 = [m for m in rejects if m.sender == 1]
    # One entry at a time would take ~60 round trips; skipping by term takes a couple.
    assert 1 <= len(from_1) <= 3, from_1
    assert not any(b"lost" in d for n in net.nodes.values() for d in n.applied_data)


def test_flow_control_caps_inflight_appends() -> None:
    net = SimNetwork([1, 2, 3], seed=26, max_inflight_msgs=2, max_size_per_msg=1)
    net.elect(1)
    net.drop(3, 1, 1.0)  # S3's acknowledgements never arrive
    apps_to_3: list[Message] = []
    net.filters.append(lambda m: (m.type == MT.APP and m.to == 3 and apps_to_3.append(m)) or True)
    for i in range(10):
        net.propose(1, b"x%d" % i)
    net.stabilize()
    with_entries = [m for m in apps_to_3 if m.entries]
    assert len(with_entries) == 2  # the window is full; the rest wait
    assert all(len(m.entries) == 1 for m in with_entries)  # max_size_per_msg
    pv = net.core(1).status().progress[3]
    assert pv.state == ProgressState.REPLICATE and pv.paused and pv.inflight == 2
    net.heal()
    net.tick(5)
    net.stabilize()
    assert net.core(3).commit_index == net.core(1).commit_index


def test_report_unreachable_moves_follower_to_probe() -> None:
    net = SimNetwork([1, 2, 3], seed=27)
    net.elect(1)
    assert net.core(1).status().progress[2].state == ProgressState.REPLICATE
    net.core(1).report_unreachable(2)
    assert net.core(1).status().progress[2].state == ProgressState.PROBE


def test_heartbeat_commit_is_bounded_by_match() -> None:
    net = SimNetwork([1, 2, 3], seed=28)
    net.elect(1)
    net.cut(1, 3)
    net.propose(1, b"a")
    net.stabilize()
    beats: list[Message] = []
    net.heal()
    net.filters.append(lambda m: (m.type == MT.HEARTBEAT and beats.append(m)) or True)
    net.drop(1, 3, 0.0)
    net.core(1).tick()  # one heartbeat round; the commit sent to 3 must not exceed its match
    hb3 = [m for m in net.core(1).ready().messages if m.type == MT.HEARTBEAT and m.to == 3]
    assert hb3 and hb3[0].commit <= net.core(1).status().progress[3].match


def test_follower_acks_only_after_persist() -> None:
    net = SimNetwork([1, 2, 3], seed=29)
    net.elect(1)
    net.propose(1, b"a")
    rd = net.core(1).ready()
    app = next(m for m in rd.messages if m.type == MT.APP and m.to == 2)
    f = net.core(2)
    f.step(app)
    frd = f.ready()
    assert frd.entries and frd.must_sync
    assert not frd.messages
    assert [m.type for m in frd.messages_after_persist] == [MT.APP_RESP]


def test_leader_commits_with_followers_before_its_own_fsync() -> None:
    # The leader sends appends before persisting; a follower quorum may commit them,
    # but the leader alone never counts an entry it has not persisted.
    st = MemoryLogStorage(ConfState(voters=(1, 2, 3)))
    core = RaftCore(RaftConfig(id=1, pre_vote=False), st, random.Random(1))
    core.campaign()
    rd = core.ready()
    st.set_hard_state(rd.hard_state)
    core.advance(rd)
    core.step(Message(MT.VOTE_RESP, to=1, sender=2, term=1))
    assert core.role == Role.LEADER
    rd = core.ready()  # the empty entry (index 1), not yet persisted
    core.step(Message(MT.APP_RESP, to=1, sender=2, term=1, index=1))
    assert core.commit_index == 0  # only S2 has it durably
    core.step(Message(MT.APP_RESP, to=1, sender=3, term=1, index=1))
    assert core.commit_index == 1  # S2 + S3 are a majority
    st.append(rd.entries)
    core.advance(rd)


def test_stale_append_below_commit_is_acknowledged_with_commit() -> None:
    net = SimNetwork([1, 2, 3], seed=30)
    net.elect(1)
    net.propose(1, b"a")
    net.stabilize()
    f = net.core(2)
    f.step(
        Message(MT.APP, to=2, sender=1, term=f.term, index=0, log_term=0, entries=(Entry(1, 1),))
    )
    resp = f.ready().messages_after_persist
    assert resp[0].index == f.commit_index and not resp[0].reject


def test_randomized_message_faults_keep_logs_consistent() -> None:
    for seed in range(5):
        net = SimNetwork([1, 2, 3], seed=100 + seed)
        net.drop_rate = 0.2
        net.max_delay = 4
        net.dup_rate = 0.1
        for t in range(150):
            ld = net.leader()
            if ld is not None and t % 3 == 0:
                net.propose(ld, b"s%d-%d" % (seed, t))
            net.tick()
        net.heal()
        assert net.commit_new_entry(b"done-%d" % seed) > 0


def test_ack_of_entries_truncated_before_persist_is_never_sent() -> None:
    # A follower acks entries of term 1, then (before its driver persisted anything) a
    # term-2 leader overwrites them. The term-1 ack would promise entries that never
    # reach disk, so it must be dropped.
    st = MemoryLogStorage(ConfState(voters=(1, 2, 3)))
    f = RaftCore(RaftConfig(id=3), st, random.Random(1))
    old = tuple(Entry(1, i, data=b"old") for i in (1, 2, 3))
    f.step(Message(MT.APP, to=3, sender=1, term=1, index=0, log_term=0, entries=old))
    new = (Entry(2, 1, data=b"new"),)
    f.step(Message(MT.APP, to=3, sender=2, term=2, index=0, log_term=0, entries=new))
    rd = f.ready()
    acks = [(m.term, m.index) for m in rd.messages_after_persist if m.type == MT.APP_RESP]
    assert acks == [(2, 1)]
    assert [e.data for e in rd.entries] == [b"new"]


def test_committed_entries_are_handed_out_once() -> None:
    net = SimNetwork([1], seed=31)
    net.elect(1)
    core = net.core(1)
    core.propose(b"a")
    rd = core.ready()
    net.nodes[1].storage.append(rd.entries)
    core.advance(rd)
    first = core.ready()
    assert [e.data for e in first.committed_entries] == [b"a"]
    again = core.ready()  # driver bug: no advance in between; still never re-applied
    assert again.committed_entries == []
    core.advance(again)
    core.advance(first)
    assert core.applied_index == 2


def _leader_with_quorum_persisted() -> tuple[RaftCore, MemoryLogStorage]:
    """S1 leader of {1,2,3}, its first-term entry committed everywhere."""
    st = MemoryLogStorage(ConfState(voters=(1, 2, 3)))
    core = RaftCore(RaftConfig(id=1, pre_vote=False), st, random.Random(2))
    core.campaign()
    rd = core.ready()
    st.set_hard_state(rd.hard_state)
    core.advance(rd)
    core.step(Message(MT.VOTE_RESP, to=1, sender=2, term=1))
    rd = core.ready()
    st.append(rd.entries)
    core.advance(rd)
    for peer in (2, 3):
        core.step(Message(MT.APP_RESP, to=1, sender=peer, term=1, index=1))
    rd = core.ready()
    core.advance(rd)
    assert core.commit_index == 1
    return core, st


def test_commit_rides_on_the_next_append_instead_of_an_empty_one() -> None:
    core, st = _leader_with_quorum_persisted()
    core.propose(b"a")
    rd = core.ready()
    st.append(rd.entries)
    core.advance(rd)  # the leader has index 2 durably
    core.step(Message(MT.APP_RESP, to=1, sender=2, term=1, index=2))  # commits 2
    core.propose(b"b")  # new entries in the same Ready
    apps = [m for m in core.ready().messages if m.type == MT.APP]
    # One append per follower, carrying entry 3 AND the new commit: no extra empty one.
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(m.entries and m.commit == 2 for m in apps)


def test_commit_only_append_is_sent_when_no_entries_are_pending() -> None:
    core, st = _leader_with_quorum_persisted()
    core.propose(b"a")
    rd = core.ready()
    st.append(rd.entries)
    core.advance(rd)
    core.step(Message(MT.APP_RESP, to=1, sender=2, term=1, index=2))  # commits 2
    apps = [m for m in core.ready().messages if m.type == MT.APP]
    # Followers still learn the commit at once (latency), with an empty append each.
    assert sorted(m.to for m in apps) == [2, 3]
    assert all(not m.entries and m.commit == 2 for m in apps)
