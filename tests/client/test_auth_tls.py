"""kvstore.client over TLS with authentication, against a real etcd 3.4.23
(kvstore does not serve auth yet; the same tests will run against it once
the server is wired). Token loss is made two ways: the token TTL runs out
(--auth-token-ttl 3), and the user's password changes (which drops its tokens)
before the member restarts (which breaks every stream)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

from kvstore.client import AsyncClient, Client, ClientError, ClientTLS, PermissionType
from kvstore.client.errors import AuthFailedError, PermissionDeniedError
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.security import certs
from kvstore.testing.etcd_cluster import etcd_available
from kvstore.testing.secure_etcd import ROOT_PASSWORD, SecureEtcd, SecureKvstore
from kvstore.testing.waiting import async_wait_until, wait_until

pytestmark = [
    pytest.mark.etcd,
    pytest.mark.skipif(not etcd_available(), reason="etcd binaries not installed"),
]
TOKEN_TTL_S = 3


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca = certs.make_ca()
    ca.write(d / "ca.pem", d / "ca-key.pem")
    certs.issue(ca, "kv1", ["127.0.0.1", "localhost"]).write(d / "kv1.pem", d / "kv1-key.pem")
    for cn in ("root", "alice", "nobody"):
        certs.issue(ca, cn, server=False).write(d / f"{cn}.pem", d / f"{cn}-key.pem")
    return d


@pytest.fixture(scope="module", params=[SecureEtcd, SecureKvstore], ids=["etcd", "kvstore"])
def etcd(pki: Path, tmp_path_factory, request):
    """A real etcd 3.4, then a kvstore member with the same flags."""
    e = request.param(pki, auth_token_ttl_s=TOKEN_TTL_S, base_dir=tmp_path_factory.mktemp("srv"))
    e.start()
    e.enable_auth()
    root = f"root:{ROOT_PASSWORD}"
    for args in (
        ("user", "add", "alice:apw"),
        ("role", "add", "app"),
        ("role", "grant-permission", "app", "readwrite", "/app/", "--prefix"),
        ("user", "grant-role", "alice", "app"),
    ):
        assert e.etcdctl(*args, user=root).returncode == 0, args
    yield e
    e.stop()


def tls_for(etcd: SecureEtcd, cn: str | None = "nobody") -> ClientTLS:
    cert, key = etcd.cert(cn) if cn else ("", "")
    return ClientTLS(ca_file=etcd.ca_file, cert_file=cert, key_file=key)


def test_tls_and_password_auth(etcd: SecureEtcd) -> None:
    with Client([etcd.url], tls=tls_for(etcd), user="alice", password="apw") as c:
        c.put("/app/a", "1")
        assert c.get("/app/a").value == b"1"
        with pytest.raises(PermissionDeniedError):
            c.put("/other", "x")
        assert c._target.transport.auth.authentications == 1


def test_wrong_password_and_no_credentials(etcd: SecureEtcd) -> None:
    with Client([etcd.url], tls=tls_for(etcd), user="alice", password="bad") as c:  # noqa: SIM117
        with pytest.raises(AuthFailedError, match="invalid user ID or password"):
            c.get("/app/a")
    with Client([etcd.url], tls=tls_for(etcd)) as c:  # noqa: SIM117 - CN "nobody": no such user
        with pytest.raises(PermissionDeniedError):
            c.get("/app/a")
    with Client([etcd.url], tls=tls_for(etcd, "alice")) as c:  # the CN is the user
        c.put("/app/cn", "by-cert")
        assert c.get("/app/cn").value == b"by-cert"


def test_https_endpoint_without_ca_uses_system_roots(etcd: SecureEtcd) -> None:
    with Client([etcd.url], dial_timeout=0.5, command_timeout=2) as c:  # noqa: SIM117
        with pytest.raises(Exception, match="connect"):  # our CA is not a system root
            c.get("/app/a")


def _token_expired_since(etcd: SecureEtcd, issued_at: float) -> None:
    """Wait until a token last used at `issued_at` has expired on the server.
    Probes are fresh tokens issued right after `issued_at`, each checked only
    once (a check renews the token it checks)."""
    ch = grpc.secure_channel(
        etcd.endpoint,
        grpc.ssl_channel_credentials(
            Path(etcd.ca_file).read_bytes(),
            Path(etcd.cert("nobody")[1]).read_bytes(),
            Path(etcd.cert("nobody")[0]).read_bytes(),
        ),
    )
    auth, kv = rpc_pb2_grpc.AuthStub(ch), rpc_pb2_grpc.KVStub(ch)
    req = rpc_pb2.AuthenticateRequest(name="alice", password="apw")
    pending = [auth.Authenticate.future(req) for _ in range(12)]  # bcrypt on every core
    probes = [f.result(timeout=20).token for f in pending]
    assert time.monotonic() - issued_at < TOKEN_TTL_S, "probes made too late"

    def expired() -> bool:
        token = probes.pop()
        try:
            kv.Range(rpc_pb2.RangeRequest(key=b"/app/x"), metadata=(("token", token),))
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
        return False

    try:
        wait_until(expired, timeout=TOKEN_TTL_S + 3, interval=0.4, what="token expiry")
    finally:
        ch.close()


def test_expired_token_is_renewed_transparently(etcd: SecureEtcd) -> None:
    with Client([etcd.url], tls=tls_for(etcd), user="alice", password="apw") as c:
        c.put("/app/ttl", "1")
        _token_expired_since(etcd, time.monotonic())
        c.put("/app/ttl", "2")  # a write: refused before apply, so resent once
        assert c.get("/app/ttl").value == b"2"
        assert c._target.transport.auth.authentications == 2


async def _watch_and_keepalive_across_token_loss(etcd: SecureEtcd) -> None:
    tls = tls_for(etcd)
    async with (
        AsyncClient([etcd.url], tls=tls, user="alice", password="apw") as watcher_client,
        AsyncClient([etcd.url], tls=tls, user="root", password=ROOT_PASSWORD) as writer,
    ):
        async with (
            watcher_client.lease(ttl=6) as lease,
            watcher_client.watch("/app/w/", prefix=True) as watcher,
        ):
            seen: list[int] = []

            async def consume() -> None:
                async for event in watcher:
                    seen.append(int(event.value))

            task = asyncio.create_task(consume())
            for i in range(5):
                await writer.put(f"/app/w/{i}", str(i))
            await async_wait_until(lambda: len(seen) == 5, timeout=10, what="first events")
            # Make the member forget alice's tokens, then break every stream: a
            # password change invalidates a user's simple tokens (a restart alone
            # does not: etcd 3.4 replays Authenticate entries from its WAL).
            await writer.user_change_password("alice", "apw")
            etcd.restart()
            for i in range(5, 10):
                await writer.put(f"/app/w/{i}", str(i))
            await async_wait_until(lambda: len(seen) == 10, timeout=20, what="all events")
            assert seen == list(range(10))  # none lost, none repeated
            assert watcher.reconnects >= 1
            renewed = lease.renewals
            await async_wait_until(lambda: lease.renewals > renewed, timeout=10, what="renewal")
            assert not lease.expired.is_set()
            ttl = await watcher_client.lease_time_to_live(lease.id)
            assert ttl.ttl > 0
            task.cancel()
        assert watcher_client.transport.auth.authentications >= 2


def test_watch_and_keepalive_survive_token_loss(etcd: SecureEtcd) -> None:
    asyncio.run(asyncio.wait_for(_watch_and_keepalive_across_token_loss(etcd), 90))


def test_auth_api_through_the_client(etcd: SecureEtcd) -> None:
    with Client([etcd.url], tls=tls_for(etcd), user="root", password=ROOT_PASSWORD) as c:
        c.role_add("reader")
        c.role_grant_permission("reader", PermissionType.READ, "/r/", "/r0")
        c.role_grant_permission("reader", "write", "k")
        perms = c.role_get("reader").perms
        assert [(p.perm_type, p.key, p.range_end) for p in perms] == [
            (PermissionType.READ, b"/r/", b"/r0"),
            (PermissionType.WRITE, b"k", b""),
        ]
        c.user_add("bob", "bpw")
        c.user_grant_role("bob", "reader")
        assert c.user_get("bob").roles == ("reader",)
        assert "bob" in c.user_list().names and "reader" in c.role_list().names
        c.user_change_password("bob", "bpw2")
        c.role_revoke_permission("reader", "k")
        c.user_revoke_role("bob", "reader")
        c.user_delete("bob")
        c.role_delete("reader")
        assert "bob" not in c.user_list().names
    with Client([etcd.url], tls=tls_for(etcd)) as anonymous:  # noqa: SIM117
        # CN "nobody" names no user: etcd's admin check says so (checked at
        # kvstore/auth/checker.py check_admin as well)
        with pytest.raises(ClientError, match="etcdserver: user name not found"):
            anonymous.user_list()
    with Client([etcd.url], tls=tls_for(etcd, None)) as no_cert:  # noqa: SIM117
        with pytest.raises(Exception):  # noqa: B017 - refused at the TLS handshake
            no_cert.get("x", timeout=2)


def test_insecure_skip_verify_trusts_a_self_signed_server(tmp_path: Path) -> None:
    """Against an in-process server with kvstore's --auto-tls certificate. (etcd
    3.4's own --auto-tls key is P-521, which gRPC's BoringSSL does not offer, so
    no gRPC-core client, skip-verify or not, can talk to it.)"""
    from concurrent import futures

    from kvstore.security.tls import ReloadingServerCredentials, auto_tls

    files = auto_tls(tmp_path, ["127.0.0.1"])

    def rng(request: bytes, context) -> bytes:
        return rpc_pb2.RangeResponse(count=42).SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(
            "etcdserverpb.KV", {"Range": grpc.unary_unary_rpc_method_handler(rng)}),)
    )  # fmt: skip
    port = server.add_secure_port("127.0.0.1:0", ReloadingServerCredentials(files).credentials)
    server.start()
    try:
        tls = ClientTLS(insecure_skip_verify=True)
        with Client([f"https://127.0.0.1:{port}"], tls=tls) as c:
            assert c.get("k").count == 42
        with Client([f"https://127.0.0.1:{port}"], dial_timeout=0.5, command_timeout=2) as strict:  # noqa: SIM117
            with pytest.raises(Exception, match="connect"):  # system roots: refused
                strict.get("k")
    finally:
        server.stop(None)
