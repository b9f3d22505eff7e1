"""The Auth servicer and credential resolution over real gRPC (grpc.aio on
127.0.0.1), with a fake node whose proposals apply straight to an AuthStore on
RocksDB (check, then apply, as the apply stage must). Driven by
kvstore.client and by the real etcdctl 3.4."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvstore.api.auth import (
    _CURRENT,
    AuthInterceptor,
    AuthResolver,
    AuthServicer,
    current_auth_info,
)
from kvstore.api.auth_errors import to_etcd_error
from kvstore.api.errors import grpc_errors
from kvstore.auth import AuthInfo, PasswordHasher, PermissionChecker, SimpleTokenProvider
from kvstore.auth import errors as auth_errors
from kvstore.client import AsyncClient
from kvstore.client.errors import (
    AuthFailedError,
    ClientError,
    PermissionDeniedError,
    UserEmptyError,
)
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from tests.auth.conftest import Member


class FakeNode:
    """Proposals apply at once: PermissionChecker.check_internal, then the store."""

    def __init__(self, member: Member, checker: PermissionChecker) -> None:
        self.member = member
        self.checker = checker
        self.proposed: list[tuple[str, Any, AuthInfo]] = []

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=7, member_id=9, revision=revision or 1, raft_term=2
        )

    async def read_barrier(self) -> None:
        return None

    async def propose_auth(self, kind: str, request: Any, ai: AuthInfo) -> Any:
        self.proposed.append((kind, request, ai))
        batch = self.member.mvcc.begin_batch()
        try:
            self.checker.check_internal(ai, kind, request)
            return self.member.auth.handlers()[kind](batch, request)
        finally:
            batch.commit()


class TinyKv(rpc_pb2_grpc.KVServicer):
    """Range answering only the permission decision (shows the resolver + checker
    hook a real KV servicer needs)."""

    def __init__(self, resolver: AuthResolver, checker: PermissionChecker) -> None:
        self._resolver, self._checker = resolver, checker
        self.seen_interceptor: list[bool] = []

    @grpc_errors
    async def Range(self, request: Any, context: Any) -> Any:  # noqa: N802
        self.seen_interceptor.append(_CURRENT.get() is not None)
        try:
            ai = current_auth_info(self._resolver, context)
            self._checker.check_range(ai, request)
        except auth_errors.AuthError as exc:
            raise to_etcd_error(exc) from None
        return rpc_pb2.RangeResponse(header=rpc_pb2.ResponseHeader(member_id=9))


async def _serve(member: Member, interceptor: bool):
    store = member.auth
    tokens = SimpleTokenProvider(lambda: store.revision, ttl_s=300)
    store.on_user_invalidated(tokens.invalidate_user)
    store.on_auth_disabled(tokens.disable)
    checker = PermissionChecker(store)
    resolver = AuthResolver(store, tokens, client_cert_auth=False)
    node = FakeNode(member, checker)
    hasher = PasswordHasher(cost=4, max_concurrency=1)
    server = grpc.aio.server(interceptors=[AuthInterceptor(resolver)] if interceptor else None)
    rpc_pb2_grpc.add_AuthServicer_to_server(
        AuthServicer(node, store, checker, tokens, hasher, resolver), server
    )
    kv = TinyKv(resolver, checker)
    rpc_pb2_grpc.add_KVServicer_to_server(kv, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port, node, kv


async def _scenario(member: Member, interceptor: bool) -> None:
    server, port, node, kv = await _serve(member, interceptor)
    ep = f"127.0.0.1:{port}"
    try:
        async with AsyncClient([ep]) as anon:
            await anon.user_add("root", "rootpw")
            await anon.user_grant_role("root", "root")
            await anon.role_add("app")
            await anon.role_grant_permission("app", "readwrite", "/app/", "/app0")
            await anon.user_add("alice", "apw")
            await anon.user_grant_role("alice", "app")
            with pytest.raises(ClientError, match="^etcdserver: authentication is not enabled$"):
                await anon.authenticate("root", "rootpw")
            await anon.auth_enable()
            with pytest.raises(UserEmptyError):
                await anon.user_list()
            with pytest.raises(UserEmptyError):
                await anon.get("/app/x")
        # only hashes travel through Raft
        adds = [r for kind, r, _ in node.proposed if kind == "auth_user_add"]
        assert adds and all(not r.password and r.hashedPassword.startswith("$2a$") for r in adds)
        async with AsyncClient([ep], user="alice", password="apw") as alice:
            await alice.get("/app/x")
            with pytest.raises(PermissionDeniedError):
                await alice.get("/other")
            assert (await alice.user_get("alice")).roles == ("app",)
            with pytest.raises(PermissionDeniedError):
                await alice.user_list()
        async with AsyncClient([ep], user="alice", password="bad") as bad:
            with pytest.raises(AuthFailedError):
                await bad.get("/app/x")
        async with AsyncClient([ep], user="root", password="rootpw") as root:
            assert set((await root.user_list()).names) == {"alice", "root"}
            status = await root.auth_status()
            assert status.enabled and status.auth_revision == member.auth.revision
            # a password change kills alice's tokens; her client gets a new one
            async with AsyncClient([ep], user="alice", password="apw") as alice:
                await alice.get("/app/x")
                await root.user_change_password("alice", "apw")
                await alice.get("/app/x")
                assert alice.transport.auth.authentications == 2
        ch = grpc.aio.insecure_channel(ep)
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await rpc_pb2_grpc.KVStub(ch).Range(
                rpc_pb2.RangeRequest(key=b"/app/x"), metadata=(("token", "forged.1"),)
            )
        assert (exc.value.code(), exc.value.details()) == (
            grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")  # fmt: skip
        await ch.close()
        # the interceptor's resolution reaches the servicer (same task context)
        assert kv.seen_interceptor and set(kv.seen_interceptor) == {interceptor}
        if shutil.which("etcdctl"):
            proc = await asyncio.create_subprocess_exec(
                "etcdctl", "--endpoints", ep, "--user", "root:rootpw", "role", "get", "app",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            assert out.decode() == (
                "Role app\nKV Read:\n\t[/app/, /app0) (prefix /app/)\n"
                "KV Write:\n\t[/app/, /app0) (prefix /app/)\n"
            )
    finally:
        await server.stop(None)


@pytest.mark.parametrize("interceptor", [False, True], ids=["resolver", "interceptor"])
def test_auth_service_end_to_end(tmp_path: Path, interceptor: bool) -> None:
    member = Member(tmp_path / "db")
    try:
        asyncio.run(asyncio.wait_for(_scenario(member, interceptor), 60))
    finally:
        member.backend.close()
