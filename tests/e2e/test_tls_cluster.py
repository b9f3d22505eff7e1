"""TLS on real kvstore processes.

- Peer mTLS: three members whose peer URLs are https:// elect a leader and
  replicate, survive kill -9 of the leader; a process holding a certificate
  from another CA cannot join (its TLS handshake is refused) and the cluster
  keeps its three members.
- Client TLS with --client-cert-auth and auth enabled: real etcdctl with a
  client certificate, the certificate's CN acting as the user, a token
  winning over the CN, a CN naming no user refused (as etcd 3.4).
"""

from __future__ import annotations

import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.security import certs
from kvstore.testing.etcd_cluster import etcdctl_available
from kvstore.testing.waiting import free_port, wait_until

pytestmark = pytest.mark.e2e


def _pki(d: Path, name: str, members: list[str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    ca = certs.make_ca(f"{name} CA")
    ca.write(d / "ca.pem", d / "ca-key.pem")
    for m in members:
        certs.issue(ca, m, ["127.0.0.1", "localhost"]).write(d / f"{m}.pem", d / f"{m}-key.pem")
    return d


class PeerTlsCluster(LocalCluster):
    """LocalCluster whose peer URLs are https:// with member certificates."""

    def __init__(self, pki: Path, **kw) -> None:
        super().__init__(**kw)
        self.pki = pki

    def _initial_cluster(self) -> str:
        return super()._initial_cluster().replace("http://", "https://")

    def args(self, i: int) -> list[str]:
        m = self.members[i]
        peer = f"http://{self.host}:{m.peer_port}"
        out = [a.replace(peer, "https://" + peer[len("http://") :]) for a in super().args(i)]
        return [
            *out,
            "--peer-cert-file", str(self.pki / f"{m.name}.pem"),
            "--peer-key-file", str(self.pki / f"{m.name}-key.pem"),
            "--peer-trusted-ca-file", str(self.pki / "ca.pem"),
            "--peer-client-cert-auth",
        ]  # fmt: skip


def _put(endpoint: str, key: bytes, value: bytes) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        return (
            rpc_pb2_grpc.KVStub(ch)
            .Put(rpc_pb2.PutRequest(key=key, value=value), timeout=10)
            .header.revision
        )


def _get_local(endpoint: str, key: bytes) -> bytes | None:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(
            rpc_pb2.RangeRequest(key=key, serializable=True), timeout=5
        )
    return resp.kvs[0].value if resp.kvs else None


def test_peer_mtls_cluster_elects_replicates_and_refuses_another_ca(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki", "cluster", ["kv1", "kv2", "kv3"])
    rogue_pki = _pki(tmp_path / "rogue-pki", "rogue", ["kv4"])
    cluster = PeerTlsCluster(pki, size=3, base_dir=tmp_path / "c")
    with cluster:
        leader = cluster.wait_leader()
        _put(cluster.endpoints[leader], b"k", b"v1")
        for ep in cluster.endpoints:
            wait_until(lambda e=ep: _get_local(e, b"k") == b"v1", timeout=20, what="replicated")
        for m in cluster.members:
            assert b"Traceback" not in m.log_path.read_bytes()

        # A peer port speaks TLS only to holders of a certificate of this CA.
        rogue = certs.issue(certs.make_ca("other"), "kv4", ["127.0.0.1"])
        peer = f"127.0.0.1:{cluster.members[leader].peer_port}"
        creds = grpc.ssl_channel_credentials(
            (pki / "ca.pem").read_bytes(), rogue.key_pem, rogue.cert_pem
        )
        with grpc.secure_channel(peer, creds) as ch, pytest.raises(grpc.FutureTimeoutError):
            grpc.channel_ready_future(ch).result(timeout=3)

        # A fourth process with a certificate of another CA cannot join.
        client_port, peer_port = free_port(), free_port()
        initial = cluster._initial_cluster() + f",kv4=https://127.0.0.1:{peer_port}"
        proc = subprocess.run(
            [
                sys.executable, "-m", "kvstore.cli.server_cmd", "--name", "kv4",
                "--data-dir", str(tmp_path / "kv4.kvstore"),
                "--listen-client-urls", f"http://127.0.0.1:{client_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                "--listen-peer-urls", f"https://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"https://127.0.0.1:{peer_port}",
                "--initial-cluster", initial, "--initial-cluster-state", "existing",
                "--peer-cert-file", str(rogue_pki / "kv4.pem"),
                "--peer-key-file", str(rogue_pki / "kv4-key.pem"),
                "--peer-trusted-ca-file", str(rogue_pki / "ca.pem"),
            ],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
        assert proc.returncode != 0
        assert "CERTIFICATE_VERIFY_FAILED" in proc.stderr  # the TLS layer says why
        assert proc.stderr.strip().splitlines()[-1].startswith("kvstore: error: "), proc.stderr
        assert "Traceback" not in proc.stderr
        with grpc.insecure_channel(cluster.endpoints[leader]) as ch:
            members = rpc_pb2_grpc.ClusterStub(ch).MemberList(
                rpc_pb2.MemberListRequest(), timeout=10
            )
        assert sorted(m.name for m in members.members) == ["kv1", "kv2", "kv3"]

        # kill -9 of the leader: the two others elect one and keep replicating.
        cluster.kill(leader)
        new_leader = cluster.wait_leader(exclude=(leader,), timeout=30)
        assert new_leader != leader
        _put(cluster.endpoints[new_leader], b"k", b"v2")
        for i, ep in enumerate(cluster.endpoints):
            if i != leader:
                wait_until(lambda e=ep: _get_local(e, b"k") == b"v2", timeout=20)
        cluster.restart(leader, wait=True, timeout=60)
        wait_until(
            lambda: _get_local(cluster.endpoints[leader], b"k") == b"v2",
            timeout=30, what="restarted member catches up over mTLS",
        )  # fmt: skip


@pytest.mark.skipif(not etcdctl_available(), reason="etcdctl not installed")
def test_client_tls_cn_as_user(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    ca = certs.make_ca()
    ca.write(pki / "ca.pem", pki / "ca-key.pem")
    certs.issue(ca, "kv1", ["127.0.0.1", "localhost"]).write(pki / "kv1.pem", pki / "kv1-key.pem")
    for cn in ("root", "alice", "nobody"):
        certs.issue(ca, cn, server=False).write(pki / f"{cn}.pem", pki / f"{cn}-key.pem")
    port, peer, metrics = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "kvstore.cli.server_cmd", "--name", "kv1",
            "--data-dir", str(tmp_path / "kv1.kvstore"),
            "--listen-client-urls", f"https://127.0.0.1:{port}",
            "--advertise-client-urls", f"https://127.0.0.1:{port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"kv1=http://127.0.0.1:{peer}",
            "--cert-file", str(pki / "kv1.pem"), "--key-file", str(pki / "kv1-key.pem"),
            "--trusted-ca-file", str(pki / "ca.pem"), "--client-cert-auth",
            "--listen-metrics-urls", f"https://127.0.0.1:{metrics}",
        ],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "kv1.log", "wb"),  # noqa: SIM115
    )  # fmt: skip

    def ctl(cn: str, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "etcdctl", "--endpoints", f"https://127.0.0.1:{port}",
                "--cacert", str(pki / "ca.pem"),
                "--cert", str(pki / f"{cn}.pem"), "--key", str(pki / f"{cn}-key.pem"),
                *(["--user", user] if user else []), *args,
            ],
            capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"},
        )  # fmt: skip

    try:
        wait_until(lambda: ctl("root", "put", "/app/x", "1").returncode == 0, timeout=60,
                   what="TLS member serving")  # fmt: skip
        for args in (
            ["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"],
            ["user", "add", "alice", "--no-password"], ["role", "add", "app"],
            ["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"],
            ["user", "grant-role", "alice", "app"], ["put", "/secret", "s"],
            ["auth", "enable"],
        ):  # fmt: skip
            r = ctl("root", *args)
            assert r.returncode == 0, (args, r.stderr)
        # No --user: the certificate's CN is the user.
        r = ctl("alice", "get", "/app/x", "--print-value-only")
        assert (r.returncode, r.stdout) == (0, "1\n"), r.stderr
        r = ctl("alice", "get", "/secret")
        assert r.returncode != 0 and "etcdserver: permission denied" in r.stderr
        r = ctl("root", "get", "/secret", "--print-value-only")  # CN root: the root role
        assert (r.returncode, r.stdout) == (0, "s\n"), r.stderr
        r = ctl("alice", "user", "list")
        assert r.returncode != 0 and "etcdserver: permission denied" in r.stderr
        # A token wins over the CN.
        r = ctl("alice", "get", "/secret", "--print-value-only", user="root:rootpw")
        assert (r.returncode, r.stdout) == (0, "s\n"), r.stderr
        # A CN naming no user.
        r = ctl("nobody", "get", "/app/x")
        assert r.returncode != 0 and "etcdserver: permission denied" in r.stderr
        r = ctl("nobody", "user", "list")
        assert r.returncode != 0 and "etcdserver: user name not found" in r.stderr
        # The metrics / health listener follows its URL's scheme (the client
        # certificate and rule, as etcd).
        ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        ctx.load_cert_chain(str(pki / "alice.pem"), str(pki / "alice-key.pem"))
        with urllib.request.urlopen(f"https://127.0.0.1:{metrics}/health", context=ctx,
                                    timeout=10) as resp:  # fmt: skip
            assert resp.status == 200 and b'"health":"true"' in resp.read()
        # Plaintext to the TLS port is refused; the member keeps serving.
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError):
            rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"k"), timeout=3)
        assert ctl("root", "get", "/secret").returncode == 0
    finally:
        proc.kill()
        proc.wait()


class ClientTlsCluster(LocalCluster):
    """LocalCluster whose client URLs are https:// with --client-cert-auth."""

    def __init__(self, pki: Path, **kw) -> None:
        super().__init__(**kw)
        self.pki = pki

    def args(self, i: int) -> list[str]:
        m = self.members[i]
        client = f"http://{self.host}:{m.client_port}"
        out = [a.replace(client, "https://" + client[len("http://") :]) for a in super().args(i)]
        return [
            *out,
            "--cert-file", str(self.pki / f"{m.name}.pem"),
            "--key-file", str(self.pki / f"{m.name}-key.pem"),
            "--trusted-ca-file", str(self.pki / "ca.pem"),
            "--client-cert-auth",
        ]  # fmt: skip

    def status(self, i: int, timeout: float = 2.0):  # noqa: ANN201
        creds = grpc.ssl_channel_credentials(
            (self.pki / "ca.pem").read_bytes(),
            (self.pki / "client-key.pem").read_bytes(),
            (self.pki / "client.pem").read_bytes(),
        )
        with grpc.secure_channel(self.endpoints[i], creds) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)

    def ctl(self, i: int, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "etcdctl", "--endpoints", f"https://{self.endpoints[i]}",
                "--cacert", str(self.pki / "ca.pem"),
                "--cert", str(self.pki / "client.pem"), "--key", str(self.pki / "client-key.pem"),
                *args,
            ],
            capture_output=True, text=True, timeout=30, env={"ETCDCTL_API": "3"},
        )  # fmt: skip


@pytest.mark.skipif(not etcdctl_available(), reason="etcdctl not installed")
def test_https_client_cluster_forwards_to_the_leader_over_tls(tmp_path: Path) -> None:
    pki = _pki(tmp_path / "pki", "cluster", ["kv1", "kv2", "kv3", "client"])
    cluster = ClientTlsCluster(pki, size=3, base_dir=tmp_path / "c")
    with cluster:
        leader = cluster.wait_leader()
        follower = (leader + 1) % 3
        r = cluster.ctl(leader, "lease", "grant", "60")
        assert r.returncode == 0, r.stderr
        lease = r.stdout.split()[1]
        # Keep-alive and time-to-live run on the leader: the follower forwards
        # them to the leader's https client URL with its member certificate.
        r = cluster.ctl(follower, "lease", "keep-alive", "--once", lease)
        assert r.returncode == 0 and f"lease {lease} keepalived with TTL(60)" in r.stdout, r
        r = cluster.ctl(follower, "lease", "timetolive", lease)
        assert r.returncode == 0 and f"lease {lease} granted with TTL(60s)" in r.stdout, r
        assert cluster.ctl(follower, "put", "k", "v", "--lease", lease).returncode == 0
