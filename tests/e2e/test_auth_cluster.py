"""Auth on a real 3-member kvstore cluster, driven by real etcdctl 3.4.

- The same etcdctl sequences against a real etcd 3.4.23 and against a
  kvstore FOLLOWER (so every auth write is proposed by a member that does not
  lead): exit status, stdout (JSON headers without ids) and the "Error:" lines
  must be identical. The user / role / auth sequence is the one the kvctl
  comparison (tests/cli/test_kvctl_auth_compat.py) uses; a second one covers
  permissions on get / put / del / txn / watch / lease revoke.
- Auth survives a restart of every member (state in RocksDB, loaded at open).
- A follower that was down while users, roles and permissions changed, and
  whose next log entry was compacted away, gets the auth state with the Raft
  snapshot: after it installed the snapshot, it authenticates and checks
  permissions (serializable reads are served and checked locally) as the
  others do.
"""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available
from kvstore.testing.waiting import wait_until
from tests.cli.test_kvctl_auth_compat import SEQUENCE as USER_ROLE_SEQUENCE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]

ROOT = "root:rootpw"
SETUP: list[tuple[list[str], str | None, str | None]] = [
    (["user", "add", "root:rootpw"], None, None),
    (["user", "grant-role", "root", "root"], None, None),
    (["user", "add", "alice:apw"], None, None),
    (["role", "add", "app"], None, None),
    (["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"], None, None),
    (["role", "grant-permission", "app", "read", "/ro/", "--prefix"], None, None),
    (["user", "grant-role", "alice", "app"], None, None),
    (["put", "/ro/a", "1"], None, None),
    (["put", "/secret", "s"], None, None),
    (["auth", "enable"], None, None),
]
ALICE = "alice:apw"
PERMISSIONS: list[tuple[list[str], str | None, str | None]] = [
    (["get", "/ro/a"], None, None),  # no credentials
    (["get", "/ro/a"], None, "alice:nope"),
    (["get", "/ro/a", "--print-value-only"], None, ALICE),
    (["get", "/ro/", "--prefix", "--keys-only"], None, ALICE),
    (["get", "/ro/a", "--consistency=s", "--print-value-only"], None, ALICE),
    (["get", "/secret"], None, ALICE),
    (["get", "", "--from-key"], None, ALICE),
    (["put", "/ro/a", "2"], None, ALICE),
    (["put", "/app/x", "1"], None, ALICE),
    (["put", "/app/x", "2", "--prev-kv"], None, ALICE),
    (["put", "/secret", "x"], None, ALICE),
    (["del", "/app/x"], None, ALICE),
    (["del", "/ro/a"], None, ALICE),
    (["del", "/app/", "--prefix"], None, ALICE),
    (["txn"], 'value("/ro/a") = "1"\n\nput /app/t yes\n\nput /app/f no\n\n', ALICE),
    (["txn"], 'value("/secret") = "s"\n\nput /app/t yes\n\n\n', ALICE),
    (["txn"], "\nput /app/t yes\nput /ro/a x\n\n\n", ALICE),
    (["txn"], "\nget /ro/a\n\n\n", ALICE),
    (["txn"], "\nget /secret\n\n\n", ALICE),
    (["get", "/secret", "--print-value-only"], None, ROOT),
    (["lock", "/app/lk", "echo", "held"], None, ALICE),
    (["lock", "/nolock", "echo", "held"], None, ALICE),
    (["compaction", "1"], None, ALICE),
    (["member", "list", "-w", "json"], None, ALICE),
    (["user", "list"], None, ALICE),
    (["role", "get", "app"], None, ALICE),
    (["user", "get", "alice"], None, ALICE),
    (["role", "revoke-permission", "app", "/ro/", "--prefix"], None, ROOT),
    (["get", "/ro/a"], None, ALICE),
    (["user", "add", "bob:bpw"], None, ALICE),
    (["auth", "disable"], None, ROOT),
    (["get", "/secret", "--print-value-only"], None, None),
]


def run(cluster: LocalCluster | EtcdCluster, endpoint: str, args: list[str],
        stdin: str | None, user: str | None) -> tuple[int, str, str]:  # fmt: skip
    argv = [*(["--user", user] if user else []), *args]
    r = cluster.etcdctl(*argv, input=stdin, endpoints=[endpoint])
    return r.returncode, r.stdout, r.stderr


def _normal(stdout: str) -> str:
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            for k in ("cluster_id", "member_id", "raft_term", "revision"):
                doc.get("header", {}).pop(k, None)
            if "members" in doc:  # names, ids and URLs differ by construction
                doc["members"] = bool(doc["members"])
            line = json.dumps(doc, sort_keys=True)
        lines.append(line)
    return "\n".join(lines)


def _outcome(r: tuple[int, str, str]) -> tuple[bool, str, list[str]]:
    return (
        r[0] == 0,
        _normal(r[1]),
        [line for line in r[2].splitlines() if line.startswith("Error")],
    )


def compare(pair, sequence) -> list[str]:
    (etcd, etcd_ep), (kv, kv_ep) = pair
    mismatches = []
    for args, stdin, user in sequence:
        want = _outcome(run(etcd, etcd_ep, args, stdin, user))
        got = _outcome(run(kv, kv_ep, args, stdin, user))
        if want != got:
            mismatches.append(f"{args} user={user}\n  etcd:    {want}\n  kvstore: {got}")
    return mismatches


@pytest.fixture
def pair(tmp_path: Path):
    (tmp_path / "etcd").mkdir()
    etcd = EtcdCluster(size=1, base_dir=tmp_path / "etcd").start()
    kv = LocalCluster(3, base_dir=tmp_path / "kv")
    try:
        kv.start()
        leader = kv.wait_leader()
        follower = (leader + 1) % 3
        yield (etcd, etcd.endpoints[0]), (kv, kv.endpoints[follower])
    finally:
        etcd.stop()
        kv.stop()


def test_user_role_auth_sequence_like_etcd(pair) -> None:
    mismatches = compare(pair, USER_ROLE_SEQUENCE)
    assert not mismatches, "\n".join(mismatches)


def test_permission_sequence_like_etcd(pair) -> None:
    mismatches = compare(pair, SETUP + PERMISSIONS)
    assert not mismatches, "\n".join(mismatches)


def test_watch_and_lease_revoke_permissions_like_etcd(pair) -> None:
    (etcd, etcd_ep), (kv, kv_ep) = pair
    assert not compare(pair, SETUP)
    seen = []
    for cluster, ep in ((etcd, etcd_ep), (kv, kv_ep)):
        # A refused watch: created + canceled; etcdctl prints the reason.
        code, out, err = run(cluster, ep, ["watch", "/secret"], None, ALICE)
        watch = (code, out, [line for line in err.splitlines() if line.startswith("Error")])
        # A lease with a key alice may not write: revoking it is refused.
        out = run(cluster, ep, ["lease", "grant", "600"], None, ROOT)[1]
        lease = out.split()[1]
        assert run(cluster, ep, ["put", "/secret2", "v", "--lease", lease], None, ROOT)[0] == 0
        revoke = _outcome(run(cluster, ep, ["lease", "revoke", lease], None, ALICE))
        granted = _outcome(run(cluster, ep, ["lease", "revoke", lease], None, ROOT))
        seen.append((watch, _raw_watch(ep, _token(ep, "alice", "apw")), revoke, granted[0]))
    assert seen[0] == seen[1]
    watch, raw, revoke, granted = seen[0]
    assert watch[0] != 0 and watch[2] == ["Error: watch is canceled by the server"]
    assert raw == (True, True, -1, "rpc error: code = PermissionDenied desc = "
                   "etcdserver: permission denied")  # fmt: skip
    assert revoke[0] is False and "permission denied" in revoke[2][-1]
    assert granted is True


def _raw_watch(endpoint: str, token: str) -> tuple[bool, bool, int, str]:
    """The first response to a refused watch create, over raw gRPC."""
    req = rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"/secret"))
    with grpc.insecure_channel(endpoint) as ch:
        call = rpc_pb2_grpc.WatchStub(ch).Watch(iter([req]), metadata=(("token", token),),
                                                timeout=10)  # fmt: skip
        resp = next(call)
        call.cancel()
    return resp.created, resp.canceled, resp.watch_id, resp.cancel_reason


def _token(endpoint: str, user: str, password: str) -> str:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.AuthStub(ch).Authenticate(
            rpc_pb2.AuthenticateRequest(name=user, password=password), timeout=10
        )
    return resp.token


def _put_many_as(endpoint: str, token: str, n: int, prefix: bytes) -> None:
    md = (("token", token),)
    with grpc.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)
        for i in range(n):
            kv.Put(rpc_pb2.PutRequest(key=prefix + b"%04d" % i, value=b"v"), metadata=md,
                   timeout=10)  # fmt: skip


def _etcdctl_ok(cluster: LocalCluster, ep: str, *args: str, user: str | None = ROOT) -> str:
    r = run(cluster, ep, list(args), None, user)
    assert r[0] == 0, (args, r)
    return r[1]


def test_auth_survives_restart_and_snapshot_transfer(tmp_path: Path) -> None:
    snapshot_count = 40
    cluster = LocalCluster(
        3, base_dir=tmp_path, extra_args=("--snapshot-count", str(snapshot_count))
    )
    with cluster:
        leader = cluster.wait_leader()
        ep = cluster.endpoints[leader]
        for args, _, _ in SETUP:
            _etcdctl_ok(cluster, ep, *args, user=None)

        # --- restart of every member (kill -9): the state is on disk.
        for i in range(3):
            cluster.kill(i)
        for i in range(3):
            cluster.restart(i)
        cluster.wait_leader(timeout=60)
        for ep_i in cluster.endpoints:
            assert wait_until(
                lambda e=ep_i: (
                    run(cluster, e, ["get", "/ro/a", "--print-value-only"], None, ALICE)[1] == "1\n"
                ),  # fmt: skip
                timeout=30,
                what="alice reads after restart",
            )
            denied = run(cluster, ep_i, ["get", "/secret"], None, ALICE)
            assert denied[0] != 0 and "etcdserver: permission denied" in denied[2]
            anonymous = run(cluster, ep_i, ["user", "list"], None, None)  # auth still enabled
            assert anonymous[0] != 0 and "etcdserver: user name is empty" in anonymous[2]

        # --- a follower misses auth changes and the log behind them.
        leader = cluster.wait_leader()
        lagging = (leader + 1) % 3
        live = next(i for i in range(3) if i not in (lagging,))
        cluster.kill(lagging)
        live_ep = cluster.endpoints[live]
        _etcdctl_ok(cluster, live_ep, "user", "add", "carol:cpw")
        _etcdctl_ok(cluster, live_ep, "role", "add", "late")
        _etcdctl_ok(cluster, live_ep, "role", "grant-permission", "late", "read", "/secret")
        _etcdctl_ok(cluster, live_ep, "user", "grant-role", "carol", "late")
        _put_many_as(live_ep, _token(live_ep, "root", "rootpw"), 5 * snapshot_count, b"/fill/")
        leader_log = cluster.members[cluster.wait_leader()].log_path
        wait_until(lambda: b"raft log compacted" in leader_log.read_bytes(), timeout=30)

        cluster.restart(lagging, wait=True, timeout=60)
        lag_ep = cluster.endpoints[lagging]
        log = cluster.members[lagging].log_path
        wait_until(lambda: b"installed snapshot at index" in log.read_bytes(), timeout=60,
                   what="snapshot installed on the lagging member")  # fmt: skip
        # Served and checked by the lagging member alone (serializable read,
        # Authenticate is local): carol exists there with her new role.
        got = run(cluster, lag_ep, ["get", "/secret", "--consistency=s", "--print-value-only"],
                  None, "carol:cpw")  # fmt: skip
        assert got[:2] == (0, "s\n"), got
        denied = run(cluster, lag_ep, ["get", "/ro/a", "--consistency=s"], None, "carol:cpw")
        assert denied[0] != 0 and "etcdserver: permission denied" in denied[2], denied
        assert b"Traceback" not in log.read_bytes()
        # And it still restarts into the same state.
        cluster.restart(lagging, wait=True, timeout=60)
        got = run(cluster, lag_ep, ["get", "/secret", "--consistency=s", "--print-value-only"],
                  None, "carol:cpw")  # fmt: skip
        assert got[:2] == (0, "s\n"), got
