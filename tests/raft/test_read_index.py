"""ReadIndex (Raft thesis §6.4): batching, the new-leader barrier, follower reads,
and safety across a leader change."""

from __future__ import annotations

from kvstore.raft.types import Message, MessageType, Role

from .sim import SimNetwork

MT = MessageType


def test_read_index_on_leader_returns_commit_index() -> None:
    net = SimNetwork([1, 2, 3], seed=41)
    net.elect(1)
    net.propose(1, b"a")
    net.stabilize()
    assert net.read_index(1, b"r1")
    net.stabilize()
    assert net.nodes[1].read_states == [(b"r1", net.core(1).commit_index)]


def test_reads_waiting_at_one_moment_share_one_heartbeat_round() -> None:
    net = SimNetwork([1, 2, 3], seed=42)
    net.elect(1)
    for i in range(10):
        net.read_index(1, b"r%d" % i)
    net.nodes[2].core.read_index(b"f1")  # a follower read joins the same round
    net.round()  # delivers the follower's READ_INDEX; the leader flushes one round
    rd_beats: list[Message] = []
    net.filters.append(lambda m: (m.type == MT.HEARTBEAT and rd_beats.append(m)) or True)
    net.stabilize()
    round_beats = [m for m in rd_beats if m.context]
    assert len(round_beats) <= 2 * 2  # at most two rounds of 2 heartbeats, not 11
    assert len({m.context for m in round_beats}) <= 2
    assert sorted(c for c, _ in net.nodes[1].read_states) == sorted(b"r%d" % i for i in range(10))
    assert [c for c, _ in net.nodes[2].read_states] == [b"f1"]


def test_batching_counts_heartbeats_exactly() -> None:
    net = SimNetwork([1, 2, 3], seed=43)
    net.elect(1)
    leader = net.core(1)
    for i in range(50):
        leader.read_index(b"q%d" % i)
    rd = leader.ready()
    beats = [m for m in rd.messages if m.type == MT.HEARTBEAT]
    assert len(beats) == 2 and beats[0].context == beats[1].context != b""
    for m in beats:
        net.core(m.to).step(m)
    resp = net.core(2).ready()
    net.core(2).advance(resp)
    for m in resp.messages_after_persist:
        leader.step(m)  # one ack + the leader itself is a quorum of 3
    leader.advance(rd)
    assert len(leader.ready().read_states) == 50


def test_new_leader_serves_no_read_before_its_term_commits() -> None:
    net = SimNetwork([1, 2, 3], seed=44, pre_vote=False, check_quorum=False)
    net.elect(1)
    net.propose(1, b"a")
    net.stabilize()
    # Node 2 wins an election but its empty entry cannot reach anyone yet.
    net.filters.append(lambda m: not (m.sender == 2 and m.type == MT.APP))
    net.core(2).campaign()
    net.stabilize()
    assert net.core(2).role == Role.LEADER
    assert net.read_index(2, b"early")
    net.tick(3)
    assert net.nodes[2].read_states == []  # queued until the term's first commit
    net.filters.clear()
    net.tick(3)
    net.stabilize()
    ((ctx, index),) = net.nodes[2].read_states
    assert ctx == b"early" and index >= 3
    assert net.core(2).raft_log.term(index) == net.core(2).term


def test_read_index_safe_across_leader_change() -> None:
    net = SimNetwork([1, 2, 3], seed=45, check_quorum=False)
    net.elect(1)
    net.propose(1, b"a")
    net.stabilize()
    net.isolate(1)  # old leader still believes it leads
    net.core(2).campaign()
    net.stabilize()
    assert net.leader() == 2
    net.propose(2, b"b")
    net.stabilize()
    new_commit = net.core(2).commit_index
    assert net.read_index(1, b"stale?")
    net.tick(5)
    assert net.nodes[1].read_states == []  # no quorum: the stale leader cannot answer
    net.heal()
    net.tick(5)
    assert net.core(1).role == Role.FOLLOWER
    assert all(idx >= new_commit for _, idx in net.nodes[1].read_states)
    # A read via the new leader sees the new write.
    assert net.read_index(3, b"fresh")
    net.stabilize()
    assert net.nodes[3].read_states[-1] == (b"fresh", net.core(2).commit_index)


def test_single_voter_answers_reads_immediately() -> None:
    net = SimNetwork([1], seed=46)
    net.elect(1)
    net.read_index(1, b"solo")
    net.stabilize()
    assert net.nodes[1].read_states == [(b"solo", 1)]


def test_lost_heartbeats_are_retried_with_the_round_context() -> None:
    net = SimNetwork([1, 2, 3], seed=47)
    net.elect(1)
    net.drop_rate = 1.0
    net.read_index(1, b"retry")
    net.stabilize()
    assert net.nodes[1].read_states == []
    net.drop_rate = 0.0
    net.tick(2)  # the next periodic heartbeat carries the pending round
    assert [c for c, _ in net.nodes[1].read_states] == [b"retry"]
