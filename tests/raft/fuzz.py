"""Randomized fault schedules over SimNetwork, one per seed.

Each schedule draws a cluster shape and a fault mix from the seed, runs a
faulty phase (proposals, reads, crashes at any point of the Ready hand-off,
restarts, partitions incl. one-way cuts, drop / delay / reorder / duplicate,
membership changes, compaction with snapshot catch-up, leader transfers), then
heals everything and requires liveness: a leader, and a new entry applied by
every live member, within a bounded number of ticks. SimNetwork checks the
safety properties after every round.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from kvstore.raft import ProposalDropped
from kvstore.raft.types import ConfChange, ConfChangeType, Role

from .sim import SimNetwork

FAULT_TICKS = 200
HEAL_TICKS = 150


@dataclass
class ScheduleResult:
    seed: int
    ticks_to_recover: int
    applied: int
    leaders: int


def run_schedule(seed: int, fault_ticks: int = FAULT_TICKS) -> ScheduleResult:
    import random

    r = random.Random(seed ^ 0x5EED)
    n = r.choice((3, 3, 5))
    spare = r.random() < 0.3  # one extra node outside the config, for membership changes
    ids = list(range(1, n + 1 + spare))
    net = SimNetwork(
        ids,
        seed,
        voters=range(1, n + 1),
        pre_vote=r.random() < 0.8,
        check_quorum=r.random() < 0.8,
        max_inflight_msgs=r.choice((1, 4, 256)),
        max_size_per_msg=r.choice((64, 1 << 20)),
        compact_every=r.choice((0, 0, 8, 20)),
        compact_keep=r.choice((0, 3)),
    )
    fault_rate = r.choice((0.02, 0.05, 0.1))
    counter = 0
    for _ in range(fault_ticks):
        x = r.random()
        live = [i for i in ids if net.nodes[i].alive]
        if x < 0.35 and live:
            for _ in range(r.randint(1, 4)):
                counter += 1
                net.propose(r.choice(live), b"p%d" % counter)
        elif x < 0.42 and live:
            counter += 1
            net.read_index(r.choice(live), b"r%d" % counter)
        if r.random() < fault_rate:
            _inject_fault(net, r, ids, live)
        if r.random() < fault_rate / 2:
            _membership_change(net, r, ids)
        if r.random() < fault_rate / 4:
            ld = net.leader()
            if ld is not None:
                net.core(ld).transfer_leadership(r.choice(ids))
        net.tick()
    # Heal: every node up, no faults; the cluster must make progress again.
    net.heal()
    for i in ids:
        net.nodes[i].crash_at = None
        net.restart(i)
    ticks = net.commit_new_entry(b"final-%d" % seed, max_ticks=HEAL_TICKS)
    # Everyone who is still a member converges on the same applied state.
    net.tick(10)
    return ScheduleResult(seed, ticks, net.max_applied, len(net.leader_of_term))


def _inject_fault(net: SimNetwork, r, ids: list[int], live: list[int]) -> None:
    kind = r.randrange(9)
    if kind == 0 and live:
        victim = r.choice(live)
        if r.random() < 0.5:
            net.crash(victim)
        else:  # crash in the middle of handling its next Ready
            net.nodes[victim].crash_at = r.randrange(5)
    elif kind == 1:
        dead = [i for i in ids if not net.nodes[i].alive]
        if dead:
            net.restart(r.choice(dead))
    elif kind == 2:
        net.isolate(r.choice(ids))
    elif kind == 3:
        shuffled = ids[:]
        r.shuffle(shuffled)
        k = r.randint(1, len(ids) - 1)
        net.partition(shuffled[:k], shuffled[k:])
    elif kind == 4:
        a, b = r.sample(ids, 2)
        net.cut(a, b, both=False)
    elif kind == 5:
        net.drop_rate = r.choice((0.05, 0.2, 0.5))
    elif kind == 6:
        net.max_delay = r.choice((1, 3, 8))  # delays reorder messages
        net.dup_rate = r.choice((0.0, 0.1))
    elif kind == 7:
        a, b = r.sample(ids, 2)
        net.drop(a, b, r.choice((0.3, 1.0)))
    else:
        net.heal()


def _membership_change(net: SimNetwork, r, ids: list[int]) -> None:
    ld = net.leader()
    if ld is None:
        return
    core = net.core(ld)
    cs = core.conf_state
    node = r.choice(ids)
    if node not in cs.voters and node not in cs.learners:
        cc = ConfChange(ConfChangeType.ADD_LEARNER_NODE, node)
    elif node in cs.learners:
        cc = ConfChange(ConfChangeType.ADD_NODE, node)
    elif len(cs.voters) > 3:
        cc = ConfChange(ConfChangeType.REMOVE_NODE, node)
    else:
        return
    with contextlib.suppress(ProposalDropped):  # e.g. another change still uncommitted
        core.propose_conf_change(cc)
    assert core.role in (Role.LEADER, Role.FOLLOWER)
