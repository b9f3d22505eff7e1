"""Maintenance on a real 3-member kvstore cluster driven by etcdctl:
endpoint status/hashkv, snapshot save, defrag, move-leader (and its errors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import LocalCluster
from kvstore.maintenance.backup import inspect_file
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.etcd,
    pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed"),
]


def ok(proc) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def put_many(endpoint: str, n: int, prefix: bytes = b"k/", size: int = 100) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        rev = 0
        for i in range(n):
            r = kv.Put(rpc_pb2.PutRequest(key=prefix + b"%05d" % i, value=b"v" * size), timeout=10)
            rev = r.header.revision
        return rev


def maintenance(endpoint: str) -> tuple[grpc.Channel, rpc_pb2_grpc.MaintenanceStub]:
    ch = grpc.insecure_channel(endpoint)
    return ch, rpc_pb2_grpc.MaintenanceStub(ch)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    c = LocalCluster(3, base_dir=tmp_path_factory.mktemp("maint"))
    c.start(timeout=90)
    yield c
    c.stop()


def test_status_fields_on_every_member(cluster: LocalCluster) -> None:
    put_many(cluster.endpoints[0], 20)
    out = json.loads(ok(cluster.etcdctl("endpoint", "status", "-w", "json")))
    assert len(out) == 3
    leaders = {s["Status"]["leader"] for s in out}
    assert len(leaders) == 1
    for s in out:
        st = s["Status"]
        assert st["version"].startswith("3.")
        assert st["dbSize"] > 0 and st["dbSizeInUse"] > 0
        assert st["raftIndex"] > 0 and st["raftTerm"] > 0 and st["raftAppliedIndex"] > 0
        assert not st.get("isLearner", False)


def test_hashkv_equal_on_all_members(cluster: LocalCluster) -> None:
    rev = put_many(cluster.endpoints[1], 50, prefix=b"h/")

    def hashes() -> set[int] | None:
        proc = cluster.etcdctl("endpoint", "hashkv", "--rev", str(rev), "-w", "json")
        if proc.returncode != 0:
            return None  # a member not yet at rev answers "future revision"
        return {h["HashKV"]["hash"] for h in json.loads(proc.stdout)}

    got = wait_until(hashes, timeout=30, what="hashkv on all members")
    assert len(got) == 1
    # Hash changes with the data: one more write -> a different hash at the new rev.
    rev2 = put_many(cluster.endpoints[0], 1, prefix=b"h2/")
    later = wait_until(
        lambda: (
            cluster.etcdctl("endpoint", "hashkv", "--rev", str(rev2), "-w", "json").returncode == 0
        ),
        timeout=30,
    )
    assert later
    out = json.loads(ok(cluster.etcdctl("endpoint", "hashkv", "--rev", str(rev2), "-w", "json")))
    assert {h["HashKV"]["hash"] for h in out} != got


def test_etcdctl_snapshot_save_produces_verified_file(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    put_many(cluster.endpoints[0], 300, prefix=b"s/", size=300)  # > 32 KiB: several chunks
    path = tmp_path / "backup.db"
    out = ok(cluster.etcdctl("snapshot", "save", str(path), endpoints=[cluster.endpoints[2]]))
    assert "Snapshot saved" in out
    info = inspect_file(path)
    assert info.families["kv"] >= 300
    assert info.size > 32 * 1024


def test_snapshot_stream_shape(cluster: LocalCluster) -> None:
    ch, stub = maintenance(cluster.endpoints[0])
    with ch:
        msgs = list(stub.Snapshot(rpc_pb2.SnapshotRequest(), timeout=30))
    assert len(msgs) >= 2
    assert all(len(m.blob) <= 32 * 1024 for m in msgs)
    assert len(msgs[-1].blob) == 32 and msgs[-1].remaining_bytes == 0
    body = sum(len(m.blob) for m in msgs[:-1])
    assert msgs[0].remaining_bytes == body - len(msgs[0].blob)


def test_defrag_keeps_member_serving(cluster: LocalCluster) -> None:
    out = ok(cluster.etcdctl("defrag"))
    assert out.count("Finished defragmenting etcd member") == 3
    got = ok(cluster.etcdctl("get", "k/00003", "--print-value-only"))
    assert got.strip() == "v" * 100


def test_move_leader_and_errors(cluster: LocalCluster) -> None:
    leader = cluster.wait_leader()
    statuses = [cluster.status(i) for i in range(3)]
    target = next(i for i in range(3) if i != leader)
    target_id = statuses[target].header.member_id
    out = ok(cluster.etcdctl("move-leader", f"{target_id:x}"))
    assert "Leadership transferred" in out
    wait_until(lambda: cluster.leader_index() == target, timeout=30, what="new leader")
    follower = next(i for i in range(3) if i != target)
    ch, stub = maintenance(cluster.endpoints[follower])
    with ch, pytest.raises(grpc.RpcError) as exc:
        stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=target_id), timeout=10)
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert exc.value.details() == "etcdserver: not leader"
    ch, stub = maintenance(cluster.endpoints[target])
    with ch, pytest.raises(grpc.RpcError) as exc:
        stub.MoveLeader(rpc_pb2.MoveLeaderRequest(targetID=12345), timeout=10)
    assert exc.value.details() == "etcdserver: bad leader transferee"


def test_alarm_is_replicated_through_raft(cluster: LocalCluster) -> None:
    A = rpc_pb2.AlarmRequest
    member0 = cluster.status(0).header.member_id
    ch, stub = maintenance(cluster.endpoints[0])
    with ch:
        got = stub.Alarm(A(action=A.ACTIVATE, memberID=member0, alarm=rpc_pb2.NOSPACE), timeout=10)
    assert [(a.memberID, a.alarm) for a in got.alarms] == [(member0, rpc_pb2.NOSPACE)]
    try:
        # Every member applied it: listed everywhere, writes refused everywhere.
        for i in range(3):
            listed = ok(cluster.etcdctl("alarm", "list", endpoints=[cluster.endpoints[i]]))
            assert listed.strip() == f"memberID:{member0} alarm:NOSPACE"
            put = cluster.etcdctl("put", "x", "1", endpoints=[cluster.endpoints[i]])
            assert put.returncode != 0 and "database space exceeded" in put.stderr
        assert ok(cluster.etcdctl("get", "k/00001", "--print-value-only")).strip() == "v" * 100
    finally:
        out = ok(cluster.etcdctl("alarm", "disarm", endpoints=[cluster.endpoints[2]]))
        assert f"memberID:{member0} alarm:NOSPACE" in out
    assert ok(cluster.etcdctl("alarm", "list")).strip() == ""
    assert ok(cluster.etcdctl("put", "x", "1")).strip() == "OK"
