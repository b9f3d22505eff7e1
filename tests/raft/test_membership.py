"""Membership changes one server at a time (Raft thesis §4.1-§4.2) and learners."""

from __future__ import annotations

import random

import pytest

from kvstore.raft import (
    ConfChangeInProgress,
    MemoryLogStorage,
    ProposalDropped,
    RaftConfig,
    RaftCore,
    apply_conf_change,
)
from kvstore.raft.types import (
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Role,
)

from .sim import SimNetwork

CT = ConfChangeType
MT = MessageType


def _change(net: SimNetwork, ld: int, cc: ConfChange) -> None:
    net.core(ld).propose_conf_change(cc)
    net.stabilize()


def test_apply_conf_change_rules() -> None:
    cs = ConfState(voters=(1, 2, 3))
    cs = apply_conf_change(cs, ConfChange(CT.ADD_LEARNER_NODE, 4))
    assert cs == ConfState((1, 2, 3), (4,))
    cs = apply_conf_change(cs, ConfChange(CT.ADD_NODE, 4))
    assert cs == ConfState((1, 2, 3, 4), ())
    cs = apply_conf_change(cs, ConfChange(CT.REMOVE_NODE, 2))
    assert cs == ConfState((1, 3, 4), ())
    assert apply_conf_change(cs, ConfChange(CT.UPDATE_NODE, 3, b"x")) is cs


def test_add_learner_then_promote() -> None:
    net = SimNetwork([1, 2, 3, 4], seed=51, voters=[1, 2, 3])
    net.elect(1)
    for i in range(5):
        net.propose(1, b"v%d" % i)
    net.stabilize()
    _change(net, 1, ConfChange(CT.ADD_LEARNER_NODE, 4))
    assert net.core(1).conf_state == ConfState((1, 2, 3), (4,))
    net.tick(3)
    assert net.nodes[4].applied_index == net.core(1).commit_index  # learner caught up
    # A learner never campaigns.
    net.isolate(4)
    net.tick(50)
    assert net.core(4).role == Role.FOLLOWER and net.core(4).term == net.core(1).term
    net.heal()
    net.tick(3)
    pv = net.core(1).status().progress[4]
    assert pv.is_learner and pv.match == net.core(1).last_index
    _change(net, 1, ConfChange(CT.ADD_NODE, 4))
    assert net.core(4).conf_state == ConfState((1, 2, 3, 4), ())
    assert net.nodes[4].applied_conf == ConfState((1, 2, 3, 4), ())
    # Now 4 is a voter: with 1 and 2 down, 3 and 4 are not a quorum of 4.
    net.crash(1)
    net.crash(2)
    net.tick(60)
    assert net.leader() is None
    net.restart(2)
    net.tick(60)
    assert net.leader() in (2, 3, 4)


def test_learner_votes_are_not_counted() -> None:
    net = SimNetwork([1, 2, 3], seed=52, voters=[1], learners=[2, 3])
    net.elect(1)
    net.crash(1)
    net.tick(60)
    assert net.leader() is None  # learners cannot elect anyone


def test_config_takes_effect_on_append_not_commit() -> None:
    net = SimNetwork([1, 2, 3, 4], seed=53, voters=[1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.core(1).propose_conf_change(ConfChange(CT.ADD_NODE, 4))
    net.stabilize()
    core = net.core(1)
    assert core.commit_index < core.last_index
    assert core.conf_state.voters == (1, 2, 3, 4)  # in effect although uncommitted
    assert 4 in core.status().progress
    with pytest.raises(ConfChangeInProgress):  # one uncommitted change at a time
        core.propose_conf_change(ConfChange(CT.REMOVE_NODE, 3))


def test_truncated_conf_change_is_reverted() -> None:
    net = SimNetwork([1, 2, 3, 4], seed=54, voters=[1, 2, 3])
    net.elect(1)
    net.cut(1, 3)
    net.cut(1, 4)
    net.filters.append(
        lambda m: (
            not (
                m.sender == 1
                and m.type == MT.APP
                and m.to == 2
                and any(e.type == EntryType.CONF_CHANGE for e in m.entries)
            )
        )
    )
    net.core(1).propose_conf_change(ConfChange(CT.REMOVE_NODE, 2))
    net.stabilize()
    assert net.core(1).conf_state.voters == (1, 3)
    # Node 1 is deposed before the change commits; node 2 wins and overwrites index 2.
    net.heal()
    net.isolate(1)
    net.tick(40)
    assert net.leader() in (2, 3)
    net.propose(net.leader(), b"overwrite")
    net.stabilize()
    net.heal()
    net.tick(10)
    net.stabilize()
    assert net.core(1).conf_state.voters == (1, 2, 3)  # reverted when truncated
    assert net.core(1).role == Role.FOLLOWER


def test_remove_follower() -> None:
    net = SimNetwork([1, 2, 3], seed=55)
    net.elect(1)
    _change(net, 1, ConfChange(CT.REMOVE_NODE, 3))
    assert net.core(1).conf_state.voters == (1, 2)
    assert 3 not in net.core(1).status().progress
    net.crash(3)
    assert net.commit_new_entry(b"two-of-two") > 0


def test_removed_leader_steps_down_after_commit() -> None:
    net = SimNetwork([1, 2, 3], seed=56)
    net.elect(1)
    net.core(1).propose_conf_change(ConfChange(CT.REMOVE_NODE, 1))
    assert net.core(1).role == Role.LEADER  # still leads until the removal commits
    net.stabilize()
    assert net.core(1).role == Role.FOLLOWER
    assert net.core(2).conf_state.voters == (2, 3)
    net.tick(40)
    assert net.leader() in (2, 3)
    assert net.commit_new_entry(b"after-removal") > 0
    net.tick(40)
    assert net.core(1).role == Role.FOLLOWER  # a removed node never campaigns


def test_new_leader_refuses_conf_change_until_its_term_commits() -> None:
    net = SimNetwork([1, 2, 3], seed=57, pre_vote=False, check_quorum=False)
    net.elect(1)
    net.filters.append(lambda m: not (m.sender == 2 and m.type == MT.APP))
    net.core(2).campaign()
    net.stabilize()
    assert net.core(2).role == Role.LEADER
    with pytest.raises(ConfChangeInProgress):
        net.core(2).propose_conf_change(ConfChange(CT.REMOVE_NODE, 3))
    net.filters.clear()
    net.tick(2)
    net.core(2).propose_conf_change(ConfChange(CT.REMOVE_NODE, 3))  # now allowed


def test_change_leaving_no_voters_is_refused() -> None:
    net = SimNetwork([1], seed=58)
    net.elect(1)
    with pytest.raises(ProposalDropped):
        net.core(1).propose_conf_change(ConfChange(CT.REMOVE_NODE, 1))


def test_forwarded_conf_change_while_pending_becomes_empty_entry() -> None:
    net = SimNetwork([1, 2, 3, 4], seed=59, voters=[1, 2, 3])
    net.elect(1)
    net.isolate(1)
    net.core(1).propose_conf_change(ConfChange(CT.ADD_LEARNER_NODE, 4))
    before = net.core(1).last_index
    cc = ConfChange(CT.REMOVE_NODE, 3).encode()
    net.core(1).step(
        Message(MT.PROP, to=1, sender=2, entries=(Entry(0, 0, EntryType.CONF_CHANGE, cc),))
    )
    ent = net.core(1).raft_log.slice(before + 1, before + 2)[0]
    assert ent.type == EntryType.NORMAL and ent.data == b""


def test_restart_rebuilds_config_from_storage_and_log() -> None:
    st = MemoryLogStorage(ConfState(voters=(1,)))
    core = RaftCore(RaftConfig(id=1), st, random.Random(1))
    core.campaign()

    def drive() -> None:
        while core.has_ready():
            rd = core.ready()
            st.append(rd.entries)
            if rd.hard_state:
                st.set_hard_state(rd.hard_state)
            core.advance(rd)

    drive()
    core.propose_conf_change(ConfChange(CT.ADD_LEARNER_NODE, 3))
    drive()
    assert core.commit_index == core.last_index  # committed: a learner needs no ack
    core.propose_conf_change(ConfChange(CT.ADD_NODE, 2))  # appended; 2 must ack to commit
    drive()
    assert core.conf_state.voters == (1, 2)
    assert core.commit_index < core.last_index
    again = RaftCore(RaftConfig(id=1), st, random.Random(2))
    assert again.conf_state == ConfState((1, 2), (3,))
    assert again.status().conf_state == again.conf_state
