"""Auth servicer (`etcdserverpb.Auth`) and request-credential resolution.

Owns:
- `AuthResolver`: who sends a request (etcd's AuthInfoFromCtx): the `token`
  (or `authorization`) metadata resolved by the token provider (a dict lookup
  for simple tokens, a signature check for JWT: never bcrypt, never Raft); with
  no token and --client-cert-auth, the verified client certificate's CN (not
  for calls relayed by the HTTP gateway). Auth disabled: everyone is NO_AUTH.
- `AuthInterceptor`: the same resolution as a grpc.aio server interceptor that
  leaves the result in a context variable (`current_auth_info`), for servers
  that prefer one interception point; `AuthResolver.auth_info(context)` does
  the same work lazily, only where etcd asks for credentials.
- `AuthServicer`: the 17 Auth RPCs. Writes are proposed through the facade with
  the caller's AuthInfo (the apply stage runs PermissionChecker.check_internal
  then AuthStore.apply_*, see kvstore/auth); passwords are bcrypt-hashed here,
  once, on the proposing member, through the bounded PasswordHasher; reads
  (UserGet/List, RoleGet/List, AuthStatus) are served locally after a read
  barrier; Authenticate checks the password locally and issues a token
  without a Raft round trip.
Never: touches the store's state except through its read methods and the
facade's proposals; lets an AuthError escape unmapped.

The facade (`AuthFacade`) is what the node must provide; see the report of
branch `auth` / docs/security.md for the wiring.
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol

import grpc

from kvstore.api.auth_errors import to_etcd_error
from kvstore.api.errors import grpc_errors
from kvstore.auth import errors as auth_errors
from kvstore.auth.caller import bind_caller
from kvstore.auth.checker import NO_AUTH, AuthInfo, PermissionChecker
from kvstore.auth.hasher import PasswordHasher
from kvstore.auth.store import AuthStore
from kvstore.auth.tokens import TokenProvider
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.security.tls import peer_common_name

Context = grpc.aio.ServicerContext
TOKEN_KEYS = ("token", "authorization")


class AuthFacade(Protocol):
    """What the Auth servicer needs of the node."""

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader: ...

    async def read_barrier(self) -> None: ...

    async def propose_auth(self, kind: str, request: Any, ai: AuthInfo) -> Any:
        """Propose InternalRequest{kind: request} carrying `ai` (user name and
        auth revision); the apply stage checks and applies it; returns the
        response or raises the apply error (EtcdError / AuthError)."""
        ...


class _Resolved:
    """A request's credentials, resolved once."""

    __slots__ = ("ai", "error")

    def __init__(self, ai: AuthInfo | None, error: auth_errors.AuthError | None) -> None:
        self.ai = ai
        self.error = error


class AuthResolver:
    """token / client certificate -> AuthInfo (etcd's AuthInfoFromCtx)."""

    def __init__(self, store: AuthStore, tokens: TokenProvider, client_cert_auth: bool) -> None:
        self._store = store
        self._tokens = tokens
        self._client_cert_auth = client_cert_auth

    def from_metadata(
        self, metadata: Iterable[tuple[str, str | bytes]] | None
    ) -> tuple[AuthInfo | None, bool]:
        """(AuthInfo from the token or None, whether a token was given).
        Raises InvalidAuthToken for a token the provider does not know."""
        for key, value in metadata or ():
            if key in TOKEN_KEYS:
                token = value.decode() if isinstance(value, bytes) else value
                ai = self._tokens.info(token)
                if ai is None:
                    raise auth_errors.InvalidAuthToken()
                return ai, True
        return None, False

    def auth_info(self, context: Context) -> AuthInfo:
        """The caller of this RPC; NO_AUTH for no credentials or auth disabled.
        Raises InvalidAuthToken."""
        if not self._store.enabled:
            return NO_AUTH
        metadata = context.invocation_metadata()
        ai, had_token = self.from_metadata(metadata)
        if ai is not None or had_token:
            return ai or NO_AUTH
        if self._client_cert_auth:
            cn = peer_common_name(context.auth_context(), metadata or ())  # type: ignore[arg-type]
            if cn:
                return AuthInfo(cn, self._store.revision)
        return NO_AUTH


_CURRENT: contextvars.ContextVar[_Resolved | None] = contextvars.ContextVar(
    "kvstore_auth_info", default=None
)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Resolve the token once per RPC into `current_auth_info` (see module doc).

    Certificate CNs need the servicer context, so `current_auth_info(context)`
    falls back to them when the call carried no token."""

    def __init__(self, resolver: AuthResolver) -> None:
        self._resolver = resolver

    async def intercept_service(  # type: ignore[override]
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        try:
            ai, _ = self._resolver.from_metadata(handler_call_details.invocation_metadata)
            _CURRENT.set(_Resolved(ai, None))
        except auth_errors.AuthError as exc:
            _CURRENT.set(_Resolved(None, exc))
        return await continuation(handler_call_details)


def current_auth_info(resolver: AuthResolver, context: Context) -> AuthInfo:
    """The caller, from the interceptor's resolution when there is one."""
    resolved = _CURRENT.get()
    if resolved is None:
        return resolver.auth_info(context)
    if resolved.error is not None:
        raise resolved.error
    if resolved.ai is not None:
        return resolved.ai
    return resolver.auth_info(context)


def _mapped(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """AuthError -> etcd's EtcdError (then grpc_errors makes the status)."""

    async def wrapper(self: AuthServicer, request: Any, context: Context) -> Any:
        try:
            return await fn(self, request, context)
        except auth_errors.AuthError as exc:
            raise to_etcd_error(exc) from None

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    return wrapper


class AuthServicer(rpc_pb2_grpc.AuthServicer):
    """etcdserverpb.Auth over an AuthStore and the node facade."""

    def __init__(
        self,
        facade: AuthFacade,
        store: AuthStore,
        checker: PermissionChecker,
        tokens: TokenProvider,
        hasher: PasswordHasher,
        resolver: AuthResolver,
    ) -> None:
        self._facade = facade
        self._store = store
        self._checker = checker
        self._tokens = tokens
        self._hasher = hasher
        self._resolver = resolver

    def _who(self, context: Context) -> AuthInfo:
        return current_auth_info(self._resolver, context)

    def _with_header(self, resp: Any) -> Any:
        if not resp.header.member_id:
            resp.header.CopyFrom(self._facade.header())
        return resp

    async def _propose(self, kind: str, request: Any, context: Context) -> Any:
        ai = self._who(context)
        # The proposer re-resolves through this after AuthOldRevision.
        bind_caller(lambda: self._who(context))
        return self._with_header(await self._facade.propose_auth(kind, request, ai))

    # ------------------------------------------------------------ authenticate
    @grpc_errors
    @_mapped
    async def Authenticate(self, request: Any, context: Context) -> Any:  # noqa: N802
        hashed, revision = self._store.password_hash(request.name)
        if not await self._hasher.check(request.name, request.password, hashed):
            raise auth_errors.AuthFailed()
        # The store may have moved while bcrypt ran: issue at the revision the
        # password was checked against only if the user is unchanged.
        if self._store.password_hash(request.name)[0] != hashed:
            raise auth_errors.AuthFailed()
        token = self._tokens.assign(request.name, revision)
        return self._with_header(rpc_pb2.AuthenticateResponse(token=token))

    @grpc_errors
    @_mapped
    async def AuthStatus(self, request: Any, context: Context) -> Any:  # noqa: N802
        await self._facade.read_barrier()
        return self._with_header(self._store.status())

    # ------------------------------------------------------------ writes
    @grpc_errors
    @_mapped
    async def AuthEnable(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_enable", request, context)

    @grpc_errors
    @_mapped
    async def AuthDisable(self, request: Any, context: Context) -> Any:  # noqa: N802
        # Every member's tokens die at apply (AuthStore.on_auth_disabled).
        return await self._propose("auth_disable", request, context)

    @grpc_errors
    @_mapped
    async def UserAdd(self, request: Any, context: Context) -> Any:  # noqa: N802
        self._checker.check_admin(self._who(context))  # no bcrypt for the unauthorised
        req = rpc_pb2.AuthUserAddRequest()
        req.CopyFrom(request)
        if not (req.HasField("options") and req.options.no_password):
            req.hashedPassword = await self._hasher.hash(req.password)
        req.password = ""  # only the hash is replicated
        return await self._propose("auth_user_add", req, context)

    @grpc_errors
    @_mapped
    async def UserChangePassword(self, request: Any, context: Context) -> Any:  # noqa: N802
        self._checker.check_admin(self._who(context))
        req = rpc_pb2.AuthUserChangePasswordRequest()
        req.CopyFrom(request)
        req.hashedPassword = await self._hasher.hash(req.password)
        req.password = ""
        return await self._propose("auth_user_change_password", req, context)

    @grpc_errors
    @_mapped
    async def UserDelete(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_user_delete", request, context)

    @grpc_errors
    @_mapped
    async def UserGrantRole(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_user_grant_role", request, context)

    @grpc_errors
    @_mapped
    async def UserRevokeRole(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_user_revoke_role", request, context)

    @grpc_errors
    @_mapped
    async def RoleAdd(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_role_add", request, context)

    @grpc_errors
    @_mapped
    async def RoleDelete(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_role_delete", request, context)

    @grpc_errors
    @_mapped
    async def RoleGrantPermission(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_role_grant_permission", request, context)

    @grpc_errors
    @_mapped
    async def RoleRevokePermission(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._propose("auth_role_revoke_permission", request, context)

    # ------------------------------------------------------------ reads
    async def _read(self, kind: str, request: Any, context: Context) -> AuthInfo:
        ai = self._who(context)
        await self._facade.read_barrier()
        self._checker.check_internal(ai, kind, request)
        return ai

    @grpc_errors
    @_mapped
    async def UserGet(self, request: Any, context: Context) -> Any:  # noqa: N802
        await self._read("auth_user_get", request, context)
        return self._with_header(self._store.user_get(request))

    @grpc_errors
    @_mapped
    async def UserList(self, request: Any, context: Context) -> Any:  # noqa: N802
        await self._read("auth_user_list", request, context)
        return self._with_header(self._store.user_list(request))

    @grpc_errors
    @_mapped
    async def RoleGet(self, request: Any, context: Context) -> Any:  # noqa: N802
        await self._read("auth_role_get", request, context)
        return self._with_header(self._store.role_get(request))

    @grpc_errors
    @_mapped
    async def RoleList(self, request: Any, context: Context) -> Any:  # noqa: N802
        await self._read("auth_role_list", request, context)
        return self._with_header(self._store.role_list(request))
