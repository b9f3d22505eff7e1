"""kvctl's user / role / auth commands and security flags against etcdctl 3.4.23.

Two real etcd members with TLS and client certificates: etcdctl drives one,
kvctl (in-process) the other, through the same sequence; stdout and the
"Error: ..." line must be identical (JSON headers compared without the
cluster / member ids, which differ between the two members). The kvctl side
runs against a second etcd, then against a kvstore member with the same
flags and certificates.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from kvstore.cli.kvctl import run
from kvstore.security import certs
from kvstore.testing.etcd_cluster import etcd_available
from kvstore.testing.secure_etcd import SecureEtcd, SecureKvstore

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]

ROOT = "root:rootpw"
# (args, stdin, --user) run in order on both sides.
SEQUENCE: list[tuple[list[str], str | None, str | None]] = [
    (["auth", "enable"], None, None),
    (["user", "add", "root:rootpw"], None, None),
    (["user", "add", "root:x"], None, None),
    (["user", "add", ":x"], None, None),
    (["user", "add"], None, None),
    (["user", "add", "alice", "--new-user-password", "apw"], None, None),
    (["user", "add", "bob", "--no-password"], None, None),
    (["user", "add", "carol", "--interactive=false"], "cpw more\n", None),
    (["user", "add", "dave:"], None, None),
    (["role", "add", "app"], None, None),
    (["role", "add", "app"], None, None),
    (["role", "add", ""], None, None),
    (["role", "grant-permission", "app", "readwrite", "/app/", "--prefix"], None, None),
    (["role", "grant-permission", "app", "read", "/a", "/z"], None, None),
    (["role", "grant-permission", "app", "write", "k1"], None, None),
    (["role", "grant-permission", "app", "READ", "from", "--from-key"], None, None),
    (["role", "grant-permission", "app", "read", "", "--from-key"], None, None),
    (["role", "grant-permission", "app", "write", "/a", "/b"], None, None),
    (["role", "grant-permission", "app", "bogus", "k"], None, None),
    (["role", "grant-permission", "app", "read"], None, None),
    (["role", "grant-permission", "app", "read", "k", "--prefix", "--from-key"], None, None),
    (["role", "grant-permission", "app", "read", "k", "z", "--prefix"], None, None),
    (["role", "grant-permission", "nope", "read", "k"], None, None),
    (["role", "get", "app"], None, None),
    (["role", "get", "app", "-w", "json"], None, None),
    (["role", "get", "nope"], None, None),
    (["role", "list"], None, None),
    (["user", "grant-role", "alice", "app"], None, None),
    (["user", "grant-role", "alice", "app"], None, None),
    (["user", "grant-role", "alice", "nope"], None, None),
    (["user", "grant-role", "nobody", "app"], None, None),
    (["user", "get", "alice"], None, None),
    (["user", "get", "bob"], None, None),
    (["user", "get", "alice", "--detail"], None, None),
    (["user", "get", "alice", "-w", "json"], None, None),
    (["user", "get", "nope"], None, None),
    (["user", "list"], None, None),
    (["user", "list", "-w", "json"], None, None),
    (["user", "list", "-w", "table"], None, None),
    (["auth", "enable"], None, None),  # creates the root role, grants it, enables
    (["role", "list"], None, ROOT),
    (["user", "list"], None, None),  # no credentials (CN "client" is no user)
    (["put", "/app/x", "1"], None, "alice:apw"),
    (["get", "/app/x"], None, "alice:apw"),
    (["put", "zz", "1"], None, "alice:apw"),
    (["get", "/a", "/z"], None, "alice:apw"),
    (["get", "k1"], None, "alice:apw"),
    (["del", "k1"], None, "alice:apw"),
    (["user", "list"], None, "alice:apw"),
    (["user", "get", "alice"], None, "alice:apw"),
    (["role", "get", "app"], None, "alice:apw"),
    (["get", "/app/x"], None, "alice:wrong"),
    (["get", "/app/x"], None, "bob:"),
    (["user", "passwd", "alice", "--interactive=false"], "apw2\n", ROOT),
    (["get", "/app/x", "--print-value-only"], None, "alice:apw2"),
    (["role", "revoke-permission", "app", "/app/", "--prefix"], None, ROOT),
    (["role", "revoke-permission", "app", "k1"], None, ROOT),
    (["role", "revoke-permission", "app", "from", "--from-key"], None, ROOT),
    (["role", "revoke-permission", "app", "", "--from-key"], None, ROOT),
    (["role", "revoke-permission", "app", "/a", "/b"], None, ROOT),
    (["role", "revoke-permission", "app", "nope"], None, ROOT),
    (["role", "get", "app"], None, ROOT),
    (["user", "revoke-role", "alice", "app"], None, ROOT),
    (["user", "revoke-role", "alice", "app"], None, ROOT),
    (["user", "revoke-role", "root", "root"], None, ROOT),
    (["user", "delete", "root"], None, ROOT),
    (["role", "delete", "root"], None, ROOT),
    (["role", "delete", "app"], None, ROOT),
    (["user", "delete", "alice"], None, ROOT),
    (["user", "delete", "alice"], None, ROOT),
    (["user", "add", "erin:epw", "-w", "json"], None, ROOT),
    (["auth", "disable"], None, ROOT),
    (["auth", "disable"], None, ROOT),  # "not enabled" at Authenticate is not fatal
    (["user", "list"], None, None),
]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca()
    ca.write(d / "ca.pem", d / "ca-key.pem")
    certs.issue(ca, "kv1", ["127.0.0.1", "localhost"]).write(d / "kv1.pem", d / "kv1-key.pem")
    for cn in ("client", "alice"):
        certs.issue(ca, cn, server=False).write(d / f"{cn}.pem", d / f"{cn}-key.pem")
    return d


@pytest.fixture(scope="module", params=[SecureEtcd, SecureKvstore], ids=["etcd", "kvstore"])
def pair(pki: Path, tmp_path_factory, request):
    """etcdctl drives a real etcd; kvctl drives a second etcd, then kvstore."""
    a = SecureEtcd(pki, base_dir=tmp_path_factory.mktemp("etcdctl-side"), client_cert="client")
    b = request.param(pki, base_dir=tmp_path_factory.mktemp("kvctl-side"), client_cert="client")
    a.start()
    b.start()
    yield a, b
    a.stop()
    b.stop()


def _tls_args(e: SecureEtcd, cert: str = "client") -> list[str]:
    c, k = e.cert(cert)
    return ["--endpoints", e.url, "--cacert", e.ca_file, "--cert", c, "--key", k]


def kvctl(
    e: SecureEtcd,
    args: list[str],
    stdin: str | None,
    user: str | None,
    env: dict[str, str] | None = None,
    cert: str = "client",
) -> tuple[int, str, str]:
    argv = [*_tls_args(e, cert), *(["--user", user] if user else []), *args]
    runner = CliRunner()
    with runner.isolation(input=stdin, env=env) as (out, err, _):
        code = run(argv)
    return code, out.getvalue().decode(), err.getvalue().decode()


def etcdctl(e: SecureEtcd, args: list[str], stdin: str | None, user: str | None,
            cert: str = "client") -> tuple[int, str, str]:  # fmt: skip
    r = e.etcdctl(*args, user=user, cert=cert, input=stdin)
    return r.returncode, r.stdout, r.stderr


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("Error")]


def _normal(stdout: str) -> str:
    lines = []
    for line in stdout.splitlines():
        if line.startswith("{"):
            doc = json.loads(line)
            doc.get("header", {}).pop("cluster_id", None)
            doc.get("header", {}).pop("member_id", None)
            line = json.dumps(doc, sort_keys=True)
        lines.append(line)
    return "\n".join(lines)


def test_same_sequence_same_output(pair) -> None:
    a, b = pair
    mismatches = []
    for args, stdin, user in SEQUENCE:
        ra = etcdctl(a, args, stdin, user)
        rb = kvctl(b, args, stdin, user)
        want = (ra[0] == 0, _normal(ra[1]), _errors(ra[2]))
        got = (rb[0] == 0, _normal(rb[1]), _errors(rb[2]))
        if want != got:
            mismatches.append(f"{args} user={user}\n  etcdctl: {want}\n  kvctl:   {got}")
    assert not mismatches, "\n".join(mismatches)


def test_env_variables_and_cn_as_user(pair) -> None:
    _, b = pair
    b.etcdctl("user", "add", "root:rootpw")
    b.etcdctl("user", "grant-role", "root", "root")
    b.etcdctl("user", "add", "alice:apw")
    b.etcdctl("role", "add", "app")
    b.etcdctl("role", "grant-permission", "app", "readwrite", "/app/", "--prefix")
    b.etcdctl("user", "grant-role", "alice", "app")
    assert b.etcdctl("auth", "enable").returncode == 0
    try:
        c, k = b.cert("client")
        env = {
            "KVCTL_ENDPOINTS": b.url, "ETCDCTL_CACERT": b.ca_file, "KVCTL_CERT": c,
            "KVCTL_KEY": k, "ETCDCTL_USER": "alice", "KVCTL_PASSWORD": "apw",
        }  # fmt: skip
        runner = CliRunner()
        with runner.isolation(env=env) as (out, err, _):
            code = run(["put", "/app/env", "v"])
        assert (code, out.getvalue()) == (0, b"OK\n"), err.getvalue()
        # no --user: the client certificate's CN (alice) is the user
        code, out, err = kvctl(
            b, ["get", "/app/env", "--print-value-only"], None, None, cert="alice"
        )
        assert (code, out) == (0, "v\n"), err
        code, out, err = kvctl(b, ["get", "zz"], None, None, cert="alice")
        assert code != 0 and "permission denied" in err
        # global flags after the verb, as etcdctl accepts them
        runner = CliRunner()
        with runner.isolation() as (out2, err2, _):
            code = run(["get", "/app/env", *_tls_args(b, "client"), "--user", "alice:apw"])
        assert code == 0 and out2.getvalue() == b"/app/env\nv\n", err2.getvalue()
    finally:
        b.etcdctl("auth", "disable", user="root:rootpw")


def test_tls_errors_are_one_line(pair, tmp_path: Path) -> None:
    _, b = pair
    code, out, err = kvctl(b, ["get", "k"], None, None, env=None, cert="client")
    assert code == 0
    argv = ["--endpoints", b.url, "--cacert", str(tmp_path / "missing.pem"), "get", "k"]
    runner = CliRunner()
    with runner.isolation() as (_out, err2, _):
        code = run(argv)
    text = err2.getvalue().decode()
    assert code != 0 and text.startswith("Error: ") and text.count("\n") == 1, text
    assert os.path.basename(str(tmp_path / "missing.pem")) in text
