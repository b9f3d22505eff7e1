"""The per-request auth of the client API: who calls, and may they.

Owns: `RequestAuth`, built once per server from the member's auth parts
(kvstore.server.auth_parts.NodeAuth), which the servicers call where etcd
3.4 asks for credentials:
- `bind(context)` before a call that proposes (the proposer stamps the
  caller on the replicated request; the apply stage checks it, no TOCTOU);
- `read(context, check, serve)` for what is served locally (Range, read-only
  Txn): etcd's doSerialize — check, serve, and serve again if the auth
  revision moved meanwhile;
- `check_method(context, method)` for the RPCs that need the root role and
  are not replicated (Maintenance, Cluster);
- `watch_refusal(context, req)` for a watch create.
Also `resolver`: token / client-certificate resolution callable outside a
grpc interceptor (the HTTP gateway can use `resolver.from_metadata`).
Never: bcrypt or a Raft round trip on the request path; costs one attribute
test and a dict lookup per request while auth is disabled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kvstore.api.auth import AuthResolver, AuthServicer
from kvstore.api.auth_errors import to_etcd_error, watch_cancel_reason
from kvstore.auth import errors as auth_errors
from kvstore.auth.caller import bind_caller
from kvstore.auth.checker import RAW_ERROR_METHODS, AuthInfo
from kvstore.pb import rpc_pb2
from kvstore.seams import KvFacade
from kvstore.server.auth_parts import NodeAuth

Context = grpc.aio.ServicerContext
T = TypeVar("T")


class RequestAuth:
    """Credentials and permission checks at the API edge of one member."""

    def __init__(self, parts: NodeAuth) -> None:
        self.parts = parts
        self.store = parts.store
        self.checker = parts.checker
        self.resolver = AuthResolver(parts.store, parts.tokens, parts.client_cert_auth)

    def who(self, context: Context) -> AuthInfo:
        """The caller (NO_AUTH while auth is disabled). Raises InvalidAuthToken."""
        return self.resolver.auth_info(context)

    def bind(self, context: Context) -> None:
        """Proposals of this RPC are made for its caller (re-resolved on retry)."""
        resolver = self.resolver
        bind_caller(lambda: resolver.auth_info(context))

    async def read(
        self,
        context: Context,
        check: Callable[[AuthInfo], None],
        serve: Callable[[], Awaitable[T]],
    ) -> T:
        """etcd's doSerialize: resolve, check, serve; again if the auth
        revision changed while serving (a revoked permission wins)."""
        store = self.store
        while True:
            if not store.enabled:
                return await serve()
            ai = self.resolver.auth_info(context)
            check(ai)
            resp = await serve()
            if ai.revision == 0 or ai.revision == store.revision:
                return resp

    def check_method(self, context: Context, method: str) -> None:
        """The root role where etcd 3.4 requires it for an RPC served locally;
        raises the EtcdError the client sees."""
        if not self.store.enabled:
            return
        try:
            self.checker.check_method(self.who(context), method)
        except auth_errors.AuthError as exc:
            raise to_etcd_error(exc, raw=method in RAW_ERROR_METHODS) from None

    def watch_refusal(self, context: Context, req: rpc_pb2.WatchCreateRequest) -> str | None:
        """None if the caller may watch req's range, else etcd's cancel_reason."""
        if not self.store.enabled:
            return None
        try:
            self.checker.check_watch(self.who(context), req)
        except auth_errors.AuthError as exc:
            return watch_cancel_reason(exc)
        return None

    def servicer(self, kv: KvFacade) -> AuthServicer:
        """The etcdserverpb.Auth servicer over this member."""
        p = self.parts
        return AuthServicer(_AuthFacade(kv), p.store, p.checker, p.tokens, p.hasher, self.resolver)


class _AuthFacade:
    """kvstore.api.auth.AuthFacade over the KV facade: the Auth servicer binds
    its caller before proposing, so the proposer stamps and retries."""

    def __init__(self, kv: KvFacade) -> None:
        self._kv = kv

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return self._kv.header(revision)

    async def read_barrier(self) -> None:
        await self._kv.read_barrier()

    async def propose_auth(self, kind: str, request: Any, ai: AuthInfo) -> Any:
        return await self._kv.propose(kind, request)
