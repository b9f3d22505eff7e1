"""Membership with etcdctl on real processes: add a learner, start it with
--initial-cluster-state existing (it catches up by snapshot, the log being
compacted), promote it (refused while it lags), update and remove members."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from e2e_load import hash_kv, member_list, put_many  # noqa: E402

from kvstore.devcluster import TOKEN, LocalCluster, child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.etcd,
    pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed"),
]


def ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_add_learner_join_promote_update_remove(tmp_path: Path) -> None:
    cluster = LocalCluster(3, base_dir=tmp_path, extra_args=("--snapshot-count", "30"))
    with cluster:
        rev = put_many(cluster.endpoints[0], 150, b"pre/")  # log compacted past index 1
        peer, client = free_port(), free_port()
        peer_url = f"http://127.0.0.1:{peer}"
        out = ok(cluster.etcdctl("member", "add", "kv4", f"--peer-urls={peer_url}", "--learner"))
        assert "added to cluster" in out
        env = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("ETCD_"))
        initial_cluster = env["ETCD_INITIAL_CLUSTER"].strip('"')
        assert env["ETCD_INITIAL_CLUSTER_STATE"].strip('"') == "existing"
        new = next(m for m in member_list(cluster.endpoints[0]) if peer_url in m.peerURLs)
        assert new.isLearner and not new.name

        # Promote before it has started: refused with etcd's error.
        refused = cluster.etcdctl("member", "promote", f"{new.ID:x}")
        assert refused.returncode != 0
        assert "can only promote a learner member which is in sync with leader" in refused.stderr

        args = [
            "--name", "kv4", "--data-dir", str(tmp_path / "kv4.kvstore"),
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", initial_cluster, "--initial-cluster-token", TOKEN,
            "--initial-cluster-state", "existing",
        ]  # fmt: skip
        log_path = tmp_path / "kv4.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "kvstore.cli.server_cmd", *args],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(),
            )  # fmt: skip
        try:
            ep4 = f"127.0.0.1:{client}"
            wait_until(
                lambda: hash_kv(ep4, rev) == hash_kv(cluster.endpoints[0], rev) is not None,
                timeout=60,
                what="learner caught up",
            )
            assert b"installed snapshot at index" in log_path.read_bytes()
            with grpc.insecure_channel(ep4) as ch:
                st = rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=5)
            assert st.isLearner and st.raftAppliedIndex > 0
            wait_until(
                lambda: cluster.etcdctl("member", "promote", f"{new.ID:x}").returncode == 0,
                timeout=30,
                what="promotion",
            )

            def kv4_line() -> str | None:
                listed = ok(cluster.etcdctl("member", "list"))
                line = next(ln for ln in listed.splitlines() if ln.startswith(f"{new.ID:x}"))
                return line if ", started, kv4, " in line else None  # name published

            line = wait_until(kv4_line, timeout=30, what="kv4 started in member list")
            assert line.endswith(f"http://127.0.0.1:{client}, false")  # a voter now
            # The promoted member takes writes in the new configuration.
            rev2 = put_many(ep4, 5, b"post/")
            wait_until(
                lambda: (
                    len({hash_kv(e, rev2) for e in [*cluster.endpoints, ep4]} - {None}) == 1
                    and None not in {hash_kv(e, rev2) for e in [*cluster.endpoints, ep4]}
                ),
                timeout=30,
                what="equal hashes on 4 members",
            )

            # MemberUpdate: new peer URL accepted; one in use by another member refused.
            other_url = f"http://127.0.0.1:{free_port()}"
            ok(cluster.etcdctl("member", "update", f"{new.ID:x}", f"--peer-urls={other_url}"))
            assert other_url in ok(cluster.etcdctl("member", "list"))
            taken = f"http://127.0.0.1:{cluster.members[0].peer_port}"
            dup = cluster.etcdctl("member", "update", f"{new.ID:x}", f"--peer-urls={taken}")
            assert dup.returncode != 0 and "Peer URLs already exists" in dup.stderr
            missing = cluster.etcdctl("member", "remove", "abcdef")
            assert missing.returncode != 0 and "member not found" in missing.stderr

            out = ok(cluster.etcdctl("member", "remove", f"{new.ID:x}"))
            assert "removed from cluster" in out
            assert len(member_list(cluster.endpoints[0])) == 3
            put_many(cluster.endpoints[1], 3, b"after-remove/")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
