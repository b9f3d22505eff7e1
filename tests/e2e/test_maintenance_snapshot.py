"""Raft snapshots on real server processes: with a small --snapshot-count the
leader compacts its log while a follower is down (or after its data dir is
wiped); the follower then catches up by receiving the state machine streamed
over RaftPeer.SendSnapshot and ends with the same HashKV as the others."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from e2e_load import hash_kv, put_many  # noqa: E402

from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import wait_until

pytestmark = pytest.mark.e2e

SNAPSHOT_COUNT = 40


def all_equal(cluster: LocalCluster, rev: int) -> set[int] | None:
    hashes = {hash_kv(ep, rev) for ep in cluster.endpoints}
    return hashes if len(hashes) == 1 and None not in hashes else None


@pytest.mark.parametrize("wipe", [False, True], ids=["down-while-compacted", "wiped-data-dir"])
def test_lagging_follower_catches_up_by_snapshot(tmp_path: Path, wipe: bool) -> None:
    cluster = LocalCluster(
        3, base_dir=tmp_path, extra_args=("--snapshot-count", str(SNAPSHOT_COUNT))
    )
    with cluster:
        leader = cluster.wait_leader()
        lagging = (leader + 1) % 3
        put_many(cluster.endpoints[leader], 10, b"before/")
        cluster.kill(lagging)
        if wipe:
            shutil.rmtree(cluster.members[lagging].data_dir)
        # Far more entries than the log keeps: the lagging member's next entry is gone.
        live = next(i for i in range(3) if i != lagging)
        rev = put_many(cluster.endpoints[live], 5 * SNAPSHOT_COUNT, b"during/")
        leader_log = cluster.members[cluster.wait_leader()].log_path
        wait_until(lambda: b"raft log compacted" in leader_log.read_bytes(), timeout=30)

        cluster.restart(lagging, wait=True, timeout=60)
        got = wait_until(lambda: all_equal(cluster, rev), timeout=60, what="equal HashKV")
        assert len(got) == 1
        log = cluster.members[lagging].log_path.read_bytes()
        assert b"installed snapshot at index" in log
        assert b"Traceback" not in log
        # It keeps replicating normally afterwards.
        rev2 = put_many(cluster.endpoints[live], 5, b"after/")
        wait_until(lambda: all_equal(cluster, rev2), timeout=30, what="equal HashKV after")
        with grpc.insecure_channel(cluster.endpoints[lagging]) as ch:
            resp = rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"during/", range_end=b"during0", count_only=True),
                timeout=10,
            )
        assert resp.count == 5 * SNAPSHOT_COUNT
        # The installed state is durable: a restart recovers it from its own disk.
        cluster.restart(lagging, wait=True, timeout=60)
        assert all_equal(cluster, rev2)
        assert hash_kv(cluster.endpoints[lagging], rev2) is not None
