"""Snapshots and log compaction: a lagging follower is caught up with a snapshot
(SNAP) when the entries it needs were compacted away (§7)."""

from __future__ import annotations

import random

from kvstore.raft import MemoryLogStorage, RaftConfig, RaftCore
from kvstore.raft.progress import ProgressState
from kvstore.raft.types import (
    ConfState,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

from .sim import SimNetwork

MT = MessageType


def _lagging_cluster(seed: int) -> SimNetwork:
    net = SimNetwork([1, 2, 3], seed=seed, compact_every=10, compact_keep=0)
    net.elect(1)
    net.isolate(3)
    for i in range(40):
        net.propose(1, b"v%d" % i)
        net.stabilize()
    assert net.core(1).raft_log.first_index() > net.core(3).last_index + 1
    return net


def test_snapshot_install_for_lagging_follower() -> None:
    net = _lagging_cluster(61)
    sent: list[Message] = []
    net.heal()
    net.filters.append(lambda m: sent.append(m) or True)
    net.tick(5)
    net.stabilize()
    snaps = [m for m in sent if m.type == MT.SNAP and m.to == 3]
    assert len(snaps) == 1
    assert net.nodes[3].applied_index == net.core(1).commit_index
    st3 = net.nodes[3].storage
    assert st3.snapshot().metadata.index >= snaps[0].snapshot.metadata.index
    assert net.core(1).status().progress[3].state == ProgressState.REPLICATE
    assert net.commit_new_entry(b"post-snap") > 0


def test_failed_snapshot_is_retried() -> None:
    net = _lagging_cluster(62)
    net.heal()
    snaps: list[Message] = []
    # Every SNAP to 3 is lost; the sim reports the failure like a transport would.
    net.filters.append(lambda m: not (m.type == MT.SNAP and not snaps.append(m)))
    net.tick(3)
    assert snaps
    pv = net.core(1).status().progress[3]
    assert pv.state == ProgressState.PROBE
    net.heal()
    net.tick(5)
    net.stabilize()
    assert net.nodes[3].applied_index == net.core(1).commit_index


def test_snapshot_temporarily_unavailable_waits() -> None:
    net = _lagging_cluster(63)
    net.nodes[1].storage.snapshot_unavailable = True
    net.heal()
    net.tick(3)
    assert net.core(1).status().progress[3].state == ProgressState.PROBE
    net.nodes[1].storage.snapshot_unavailable = False
    net.tick(3)
    net.stabilize()
    assert net.nodes[3].applied_index == net.core(1).commit_index


def test_restart_after_compaction_recovers_from_snapshot() -> None:
    net = SimNetwork([1, 2, 3], seed=64, compact_every=5, compact_keep=2)
    net.elect(1)
    for i in range(20):
        net.propose(1, b"w%d" % i)
        net.stabilize()
    for i in (1, 2, 3):
        net.crash(i)
        net.restart(i)
    net.tick(40)
    assert net.commit_new_entry(b"after-restart") > 0


def test_follower_ignores_old_snapshot_and_fast_forwards_known_one() -> None:
    st = MemoryLogStorage(ConfState(voters=(1, 2)))
    core = RaftCore(RaftConfig(id=2), st, random.Random(1))
    old = Snapshot(SnapshotMetadata(0, 0, ConfState((1, 2))))
    core.step(Message(MT.SNAP, to=2, sender=1, term=1, snapshot=old))
    rd = core.ready()
    assert rd.snapshot is None and rd.messages_after_persist[0].index == 0
    core.advance(rd)
    snap = Snapshot(SnapshotMetadata(5, 1, ConfState((1, 2))), b"s")
    core.step(Message(MT.SNAP, to=2, sender=1, term=1, snapshot=snap))
    rd = core.ready()
    assert rd.snapshot == snap and rd.must_sync
    assert rd.messages_after_persist[0].index == 5
    st.apply_snapshot(rd.snapshot)
    st.set_hard_state(rd.hard_state)
    core.advance(rd)
    assert core.applied_index == 5 and core.commit_index == 5
    assert core.raft_log.first_index() == 6
