"""Cluster and maintenance calls: members, status, hashkv, alarms, defrag,
snapshot, move-leader."""

from __future__ import annotations

import pytest

from kvstore.client import errors
from kvstore.testing.waiting import free_port, wait_until


def test_member_list_and_status_of_every_endpoint(client, cluster):
    members = client.member_list().members
    assert len(members) == len(cluster.endpoints)
    ids = {m.id for m in members}

    def agreed_statuses():
        # A member restarted by an earlier test may not have heard from the
        # leader yet: wait until every member names the same one.
        statuses = [client.status(ep) for ep in cluster.endpoints]
        leaders = {s.leader for s in statuses}
        one_leader = len(leaders) == 1 and sum(s.is_leader for s in statuses) == 1
        return statuses if one_leader else None

    statuses = wait_until(agreed_statuses, timeout=20, what="members agreeing on one leader")
    assert {s.header.member_id for s in statuses} == ids
    assert all(s.endpoint == ep for s, ep in zip(statuses, cluster.endpoints, strict=True))
    assert {s.leader for s in statuses} <= ids
    assert all(s.version.startswith("3.") and s.db_size > 0 and s.raft_index > 0 for s in statuses)


def test_health_and_hash_kv_agree_across_members(client, cluster, ns):
    rev = client.put(ns + "k", "v").revision
    for ep in cluster.endpoints:
        assert client.health(ep) >= 0
    hashes = {client.hash_kv(ep, rev).hash for ep in cluster.endpoints}
    assert len(hashes) == 1


def test_alarms_defragment_and_snapshot(client, cluster, tmp_path):
    assert client.alarms() == []
    assert client.disarm_alarms() == []
    assert client.defragment(cluster.endpoints[0]) == cluster.endpoints[0]
    seen = []
    path = tmp_path / "snap.db"
    n = client.snapshot_save(path, progress=lambda got, left: seen.append((got, left)))
    assert n > 0 and path.stat().st_size == n
    assert seen and seen[-1] == (n, 0)
    assert not (tmp_path / "snap.db.part").exists()


def test_add_update_and_remove_a_learner(client):
    url = f"http://127.0.0.1:{free_port()}"
    # etcd refuses reconfiguration until every voter was connected for 5 s.
    added = wait_until(
        lambda: client.member_add([url], learner=True), timeout=30, what="member add accepted"
    )
    try:
        assert added.member.is_learner and added.member.peer_urls == (url,)
        assert added.member.id in {m.id for m in added.members}
        new_url = f"http://127.0.0.1:{free_port()}"
        updated = client.member_update(added.member.id, [new_url])
        assert any(m.peer_urls == (new_url,) for m in updated.members)
        with pytest.raises(errors.LearnerNotReadyError):
            client.member_promote(added.member.id)  # never started: not in sync
    finally:
        remaining = client.member_remove(added.member.id)
    assert added.member.id not in {m.id for m in remaining.members}
    with pytest.raises(errors.MemberNotFoundError):
        client.member_remove(added.member.id)


@pytest.mark.integration
def test_move_leader_transfers_leadership(client, cluster):
    before = client.status()
    target = next(m.id for m in client.member_list().members if m.id != before.leader)
    assert client.move_leader(target) == before.leader
    wait_until(lambda: client.status().leader == target, timeout=20, what="new leader")
