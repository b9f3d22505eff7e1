"""kvctl lease/member/endpoint/snapshot/defrag/move-leader/alarm verbs."""

from __future__ import annotations

import json
import re

import pytest

from kvstore.devcluster import LocalCluster
from kvstore.testing.waiting import free_port, wait_until


def test_lease_lifecycle_output(kvctl, ns):
    r = kvctl("lease", "grant", "60")
    m = re.fullmatch(r"lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n", r.out)
    assert r.code == 0 and m, r.out
    lid = m.group(1)
    assert int(m.group(2)) >= 60
    assert kvctl("put", ns + "k", "v", "--lease", lid).code == 0
    ttl = kvctl("lease", "timetolive", lid, "--keys").out
    assert re.fullmatch(
        rf"lease {lid} granted with TTL\(\d+s\), remaining\(\d+s\), "
        rf"attached keys\(\[{re.escape(ns)}k\]\)\n",
        ttl,
    ), ttl
    listed = kvctl("lease", "list").out.splitlines()
    assert listed[0].startswith("found ") and lid in listed[1:]
    assert re.fullmatch(
        rf"lease {lid} keepalived with TTL\(\d+\)\n",
        kvctl("lease", "keep-alive", "--once", lid).out,
    )
    assert kvctl("lease", "revoke", lid).out == f"lease {lid} revoked\n"
    assert kvctl("lease", "timetolive", lid).out == f"lease {lid} already expired\n"
    assert kvctl("get", ns + "k").out == ""
    gone = kvctl("lease", "revoke", lid)
    assert gone.code == 4 and gone.err == "Error: etcdserver: requested lease not found\n"
    assert kvctl("lease", "keep-alive", "--once", lid).code == 4


def test_member_commands(kvctl, cluster):
    listed = kvctl("member", "list").out.splitlines()
    assert len(listed) == len(cluster.endpoints)
    assert all(
        re.fullmatch(r"[0-9a-f]+, started, \S+, http://\S+, http://\S+, false", line)
        for line in listed
    ), listed
    table = kvctl("member", "list", "-w", "table").out
    assert "IS LEARNER" in table and table.count("started") == len(cluster.endpoints)
    url = f"http://127.0.0.1:{free_port()}"
    # etcd refuses reconfiguration until every voter was connected for 5 s.
    added = wait_until(
        lambda: (
            (r := kvctl("member", "add", "newbie", "--peer-urls", url, "--learner")).code == 0 and r
        ),
        timeout=30,
        what="member add accepted",
    )
    m = re.match(
        r"Member +([0-9a-f]+) added to cluster +[0-9a-f]+\n\nETCD_NAME=\"newbie\"\n", added.out
    )
    assert m, added.out
    assert f'ETCD_INITIAL_ADVERTISE_PEER_URLS="{url}"' in added.out
    assert "newbie=" + url in added.out
    mid = m.group(1)
    new_url = f"http://127.0.0.1:{free_port()}"
    upd = kvctl("member", "update", mid, "--peer-urls", new_url)
    assert upd.code == 0 and re.fullmatch(
        rf"Member +{mid} updated in cluster +[0-9a-f]+\n", upd.out
    )
    promote = kvctl("member", "promote", mid)
    assert promote.code == 5 and promote.err.startswith("Error: etcdserver: can only promote")
    rm = kvctl("member", "remove", mid)
    assert rm.code == 0 and re.fullmatch(
        rf"Member +{mid} removed from cluster +[0-9a-f]+\n", rm.out
    )
    assert kvctl("member", "remove", mid).code == 4


def test_endpoint_status_health_hashkv(kvctl, cluster):
    lines = kvctl("endpoint", "status").out.splitlines()
    assert [line.split(", ")[0] for line in lines] == cluster.endpoints
    assert sum(line.split(", ")[4] == "true" for line in lines) == 1
    statuses = json.loads(kvctl("endpoint", "status", "--cluster", "-w", "json").out)
    # etcdctl's shape (issue 18): [{"Endpoint": ..., "Status": {...}}]
    assert sorted(s["Endpoint"] for s in statuses) == sorted(cluster.endpoints)
    health = kvctl("endpoint", "health")
    assert health.code == 0
    assert all(
        f"{ep} is healthy: successfully committed proposal: took = " in health.err
        for ep in cluster.endpoints
    )
    hashes = kvctl("endpoint", "hashkv").out.splitlines()
    assert len(hashes) == len(cluster.endpoints)


def test_snapshot_defrag_alarm(kvctl, cluster, tmp_path):
    path = tmp_path / "s.db"
    r = kvctl("--endpoints", cluster.endpoints[0], "snapshot", "save", str(path), "--progress")
    assert r.code == 0 and r.out == f"Snapshot saved at {path}\n" and path.stat().st_size > 0
    d = kvctl("defrag")
    assert d.code == 0 and d.out.splitlines() == [
        f"Finished defragmenting etcd member[{ep}]" for ep in cluster.endpoints
    ]
    assert kvctl("alarm", "list").out == ""
    assert kvctl("alarm", "disarm").code == 0
    bad = kvctl("snapshot", "save", str(tmp_path / "missing-dir" / "s.db"))
    assert bad.code != 0 and "Traceback" not in bad.err and bad.err.startswith("Error:")


def test_snapshot_save_status_and_restore(kvctl, cluster, ns, tmp_path):
    """kvctl shares `kvstore snapshot restore`; serving the restored dir is
    covered end to end in tests/e2e/test_maintenance_ops.py."""
    if not isinstance(cluster, LocalCluster):
        pytest.skip("restore reads kvstore's snapshot format; etcd's is a bbolt file")
    assert kvctl("put", ns + "kept", "yes").code == 0
    path = tmp_path / "backup.db"
    assert kvctl("--endpoints", cluster.endpoints[0], "snapshot", "save", str(path)).code == 0
    status = kvctl("snapshot", "status", str(path))
    assert status.code == 0, status.err
    data_dir = tmp_path / "restored.kvstore"
    r = kvctl("snapshot", "restore", str(path), "--data-dir", str(data_dir))
    assert r.code == 0, r.err
    assert data_dir.is_dir() and any(data_dir.iterdir())
    again = kvctl("snapshot", "restore", str(path), "--data-dir", str(data_dir))
    assert again.code != 0 and "Traceback" not in again.err  # never overwrites a dir


def test_move_leader(kvctl, cluster):
    # etcdctl's JSON shape (issue 18): each status under "Status".
    statuses = [s["Status"] for s in json.loads(kvctl("endpoint", "status", "-w", "json").out)]
    leader = statuses[0]["leader"]
    target = next(s["header"]["member_id"] for s in statuses if s["header"]["member_id"] != leader)
    r = kvctl("move-leader", f"{target:x}")
    assert r.code == 0 and r.out == f"Leadership transferred from {leader:x} to {target:x}\n"
    wait_until(
        lambda: (
            json.loads(kvctl("endpoint", "status", "-w", "json").out)[0]["Status"]["leader"]
            == target
        ),
        timeout=20,
        what="leadership moved",
    )
