"""Space quota (NOSPACE alarm through Raft, etcdctl alarm list/disarm) and
`etcdctl snapshot save` -> `kvstore snapshot restore` -> a new cluster with
the same data, on real server processes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import LocalCluster, child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.etcd,
    pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed"),
]

NOSPACE_MSG = "etcdserver: mvcc: database space exceeded"


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def db_size(cluster: LocalCluster) -> int:
    return cluster.status(0).dbSize


def health(cluster: LocalCluster) -> tuple[int, dict]:
    url = f"http://127.0.0.1:{cluster.members[0].metrics_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_bad_auto_compaction_retention_is_a_flag_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvstore.cli.server_cmd", "--data-dir", str(tmp_path / "d"),
         "--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--auto-compaction-retention" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "d").exists()


def test_nospace_alarm_blocks_writes_until_disarmed(tmp_path: Path) -> None:
    # Measure an idle member's size first, then allow ~1.5 MiB on top of it.
    probe = LocalCluster(1, base_dir=tmp_path / "probe")
    with probe:
        base = db_size(probe)
    quota = base + 1_500_000
    cluster = LocalCluster(
        1, base_dir=tmp_path / "c", extra_args=("--quota-backend-bytes", str(quota)), metrics=True
    )
    with cluster:
        ep = cluster.endpoints[0]
        with grpc.insecure_channel(ep) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            refused = None
            for i in range(40):  # 40 x 200 KB = 8 MB >> quota: must hit it
                try:
                    kv.Put(
                        rpc_pb2.PutRequest(key=b"big/%02d" % i, value=b"x" * 200_000), timeout=10
                    )
                except grpc.RpcError as exc:
                    refused = exc
                    break
            assert refused is not None, "quota never enforced"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert refused.details() == NOSPACE_MSG
            written = i

        alarms = ok(cluster.etcdctl("alarm", "list"))
        member_id = cluster.status(0).header.member_id
        assert alarms.strip() == f"memberID:{member_id} alarm:NOSPACE"
        status = json.loads(ok(cluster.etcdctl("endpoint", "status", "-w", "json")))
        assert status[0]["Status"]["errors"] == [f"memberID:{member_id} alarm:NOSPACE "]
        assert health(cluster) == (503, {"health": "false"})  # etcd 3.4: any alarm
        # Writes refused (even small ones), reads and deletes still served.
        put = cluster.etcdctl("put", "small", "1")
        assert put.returncode != 0 and "database space exceeded" in put.stderr
        txn = cluster.etcdctl("txn", input="\n\nput t 1\n\n")
        assert "database space exceeded" in txn.stderr
        assert ok(cluster.etcdctl("get", "big/00", "--keys-only")).strip() == "big/00"
        deleted = ok(cluster.etcdctl("del", "big/", "--prefix"))
        assert deleted.strip() == str(written)
        # Free the space (compact + defrag), then disarm: writes work again.
        rev = cluster.status(0).header.revision
        ok(cluster.etcdctl("compaction", str(rev)))
        ok(cluster.etcdctl("defrag"))
        assert db_size(cluster) < quota
        ok(cluster.etcdctl("alarm", "disarm"))
        assert ok(cluster.etcdctl("alarm", "list")).strip() == ""
        assert ok(cluster.etcdctl("put", "small", "1")).strip() == "OK"
        assert health(cluster) == (200, {"health": "true"})


def _member_args(name: str, data_dir: Path, client: int, peer: int, token: str) -> list[str]:
    return [
        "--name", name,
        "--data-dir", str(data_dir),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--advertise-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer}",
        "--initial-cluster-token", token,
    ]  # fmt: skip


def test_snapshot_save_restore_into_new_cluster(tmp_path: Path) -> None:
    source = LocalCluster(3, base_dir=tmp_path / "src")
    backup = tmp_path / "backup.db"
    with source:
        with grpc.insecure_channel(source.endpoints[0]) as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for i in range(200):
                kv.Put(rpc_pb2.PutRequest(key=b"app/%03d" % i, value=b"value-%d" % i), timeout=10)
            kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"app/007"), timeout=10)
        expected = ok(source.etcdctl("get", "app/", "--prefix"))
        source_rev = source.status(0).header.revision
        ok(source.etcdctl("snapshot", "save", str(backup), endpoints=[source.endpoints[1]]))

    client, peer = free_port(), free_port()
    data_dir = tmp_path / "restored.kvstore"
    args = _member_args("r1", data_dir, client, peer, "restored-cluster")
    restore = subprocess.run(
        [sys.executable, "-m", "kvstore.cli.server_cmd", "snapshot", "restore", str(backup),
         "--name", "r1", "--data-dir", str(data_dir),
         "--initial-cluster", f"r1=http://127.0.0.1:{peer}",
         "--initial-cluster-token", "restored-cluster",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}"],
        capture_output=True, text=True, timeout=60, env=child_env(),
    )  # fmt: skip
    assert restore.returncode == 0, restore.stderr
    assert "restored snapshot" in restore.stdout
    log = open(tmp_path / "r1.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore.cli.server_cmd", *args],
        stdout=log, stderr=subprocess.STDOUT, env=child_env(),
    )  # fmt: skip
    try:
        ep = f"127.0.0.1:{client}"

        def ready() -> bool:
            with grpc.insecure_channel(ep) as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=2)
                return bool(st.leader)

        wait_until(ready, timeout=60, what="restored member ready")
        got = subprocess.run(
            ["etcdctl", "--endpoints", ep, "get", "app/", "--prefix"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert got.stdout == expected
        assert "app/007\n" not in got.stdout
        with grpc.insecure_channel(ep) as ch:
            st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest())
        assert st.header.revision >= source_rev  # revisions continue, not restart
        assert [m.name for m in members.members] == ["r1"]  # a NEW one-member cluster
        put = subprocess.run(
            ["etcdctl", "--endpoints", ep, "put", "after", "restore"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert put.returncode == 0, put.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_periodic_auto_compaction(tmp_path: Path) -> None:
    cluster = LocalCluster(
        1,
        base_dir=tmp_path,
        extra_args=("--auto-compaction-mode", "periodic", "--auto-compaction-retention", "2s"),
    )
    with cluster, grpc.insecure_channel(cluster.endpoints[0]) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        maint = rpc_pb2_grpc.MaintenanceStub(ch)
        rev = 0
        for i in range(10):
            rev = kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % i), timeout=10).header.revision

        def compacted_to() -> int:
            return maint.HashKV(rpc_pb2.HashKVRequest(), timeout=5).compact_revision

        # History older than the 2 s retention is compacted by the leader alone.
        wait_until(lambda: compacted_to() >= rev, timeout=30, what="auto-compaction")
        with pytest.raises(grpc.RpcError) as exc:
            kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=rev - 1), timeout=10)
        assert exc.value.details() == "etcdserver: mvcc: required revision has been compacted"
        got = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=10)
        assert got.kvs[0].value == b"9"
