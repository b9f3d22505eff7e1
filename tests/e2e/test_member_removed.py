"""A member removed from a running cluster stops, as etcd's does.

Real `kvstore` processes (kvstore.devcluster.LocalCluster) on 127.0.0.1:
- a removed follower never receives its own removal entry (the leader stops
  replicating to it); the peers' transports refuse its streams as removed
  (etcd's rafthttp: HTTP 410), so it learns it from them, and its process
  exits 0 on its own with etcd's line "the member has been permanently removed
  from the cluster"; restarted on its data dir, it is refused and exits again;
- a removed leader applies its own removal and exits the same way; the
  remaining two elect a leader and serve writes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import wait_until

pytestmark = pytest.mark.e2e

MEMBER_REMOVED = b"the member has been permanently removed from the cluster"
EXIT_DEADLINE_S = 60.0


def member_id(cluster: LocalCluster, i: int) -> int:
    return wait_until(lambda: cluster.status(i).header.member_id, timeout=30, what=f"member {i} id")


def member_ids_listed(endpoint: str) -> set[int]:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.ClusterStub(ch).MemberList(rpc_pb2.MemberListRequest(), timeout=10)
    return {m.ID for m in resp.members}


def wait_exit(cluster: LocalCluster, i: int) -> int:
    """Wait for member i's process to exit on its own; return its exit code."""
    proc = cluster.members[i].proc
    assert proc is not None
    wait_until(
        lambda: proc.poll() is not None,
        timeout=EXIT_DEADLINE_S,
        interval=0.1,
        what=f"{cluster.members[i].name} to exit after its removal",
    )
    return proc.returncode


def put_ok(endpoint: str, key: bytes, value: bytes) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=key, value=value), timeout=5)
        return True
    except grpc.RpcError:
        return False


def get_value(endpoint: str, key: bytes) -> bytes | None:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=key), timeout=5)
    return resp.kvs[0].value if resp.kvs else None


@pytest.mark.timeout(240)
def test_removed_follower_exits_on_its_own_and_again_after_a_restart(tmp_path: Path) -> None:
    if shutil.which("etcdctl") is None:
        pytest.skip("etcdctl not installed")
    with LocalCluster(3, base_dir=tmp_path) as cluster:
        leader = cluster.wait_leader(timeout=30)
        f = (leader + 1) % 3
        fid = member_id(cluster, f)
        others = [cluster.endpoints[i] for i in range(3) if i != f]
        done = cluster.etcdctl("member", "remove", f"{fid:x}", endpoints=others)
        assert done.returncode == 0, done.stderr
        assert f"Member {fid:x} removed from cluster" in done.stdout

        assert wait_exit(cluster, f) == 0
        log = cluster.members[f].log_path.read_bytes()
        assert MEMBER_REMOVED in log
        assert b"Traceback" not in log
        for ep in others:
            assert fid not in member_ids_listed(ep)

        # Restarted on its old data dir: the peers refuse it again, it exits again.
        cluster.members[f].log_path.write_bytes(b"")
        cluster.restart(f)
        assert wait_exit(cluster, f) == 0
        assert MEMBER_REMOVED in cluster.members[f].log_path.read_bytes()

        # The remaining two still serve writes.
        wait_until(lambda: put_ok(others[0], b"k", b"v"), timeout=30, what="a write")
        wait_until(lambda: get_value(others[1], b"k") == b"v", timeout=30, what="replicated")


@pytest.mark.timeout(240)
def test_removed_leader_exits_and_the_other_two_carry_on(tmp_path: Path) -> None:
    with LocalCluster(3, base_dir=tmp_path) as cluster:
        leader = cluster.wait_leader(timeout=30)
        lid = member_id(cluster, leader)
        with grpc.insecure_channel(cluster.endpoints[leader]) as ch:
            resp = rpc_pb2_grpc.ClusterStub(ch).MemberRemove(
                rpc_pb2.MemberRemoveRequest(ID=lid), timeout=30
            )
        assert lid not in {m.ID for m in resp.members}

        assert wait_exit(cluster, leader) == 0
        log = cluster.members[leader].log_path.read_bytes()
        assert MEMBER_REMOVED in log
        assert b"Traceback" not in log

        rest = [i for i in range(3) if i != leader]
        new_leader = cluster.wait_leader(timeout=60, exclude=(leader,))
        assert new_leader in rest
        eps = [cluster.endpoints[i] for i in rest]
        wait_until(lambda: put_ok(eps[0], b"after", b"1"), timeout=30, what="a write")
        wait_until(lambda: get_value(eps[1], b"after") == b"1", timeout=30, what="replicated")
        for ep in eps:
            assert member_ids_listed(ep) == {member_id(cluster, i) for i in rest}
        for i in rest:
            assert cluster.alive(i)
