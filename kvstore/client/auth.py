"""Client-side security: TLS settings, the auth token, and the Auth API.

Owns: `ClientTLS` (CA / client certificate / skip-verify, as etcdctl's
--cacert / --cert / --key / --insecure-skip-tls-verify), `TokenAuth` (calls
Authenticate once, sends the token as gRPC metadata `token`, and gets a new one
when the server answers `invalid auth token` or `revision of auth store is
old`, single-flight, so watches and keep-alives reopen with a fresh token),
the typed results of the Auth service, and `AuthMixin`, the Auth methods of
AsyncClient (auth_enable ... role_revoke_permission).
Never: stores a password anywhere but in TokenAuth's memory; logs a token.

etcd rules kept (clientv3 3.4): Authenticate when "authentication is not
enabled" is not an error: the client goes on without a token.
"""

from __future__ import annotations

import asyncio
import enum
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from kvstore.client.errors import (
    AuthNotEnabledError,
    AuthOldRevisionError,
    ClientError,
    InvalidAuthTokenError,
)
from kvstore.client.types import Header
from kvstore.pb import auth_pb2, rpc_pb2

if TYPE_CHECKING:
    from kvstore.client._transport import Transport

TOKEN_METADATA = "token"


# ------------------------------------------------------------------ TLS


@dataclass(frozen=True, slots=True)
class ClientTLS:
    """TLS for the client's channels. Empty `ca_file`: the system roots.
    `insecure_skip_verify`: trust whatever certificate each endpoint shows
    (fetched once per endpoint at channel creation) and skip the host name
    check, for --auto-tls test clusters only. `server_name` overrides the name
    checked against the certificate (default: the endpoint's host)."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    insecure_skip_verify: bool = False
    server_name: str = ""

    def channel_args(
        self, endpoint: str, dial_timeout: float
    ) -> tuple[grpc.ChannelCredentials, tuple[tuple[str, Any], ...]]:
        """(credentials, extra channel options) for one endpoint. Raises ClientError
        (bad files, or an unreachable endpoint with insecure_skip_verify)."""
        key = cert = None
        if bool(self.cert_file) != bool(self.key_file):
            raise ClientError("a client certificate needs both --cert and --key")
        try:
            if self.cert_file:
                cert = Path(self.cert_file).read_bytes()
                key = Path(self.key_file).read_bytes()
            roots = Path(self.ca_file).read_bytes() if self.ca_file else None
        except OSError as exc:
            raise ClientError(f"cannot read {exc.filename}: {exc.strerror}") from None
        options: tuple[tuple[str, Any], ...] = ()
        if self.insecure_skip_verify:
            roots, name = _fetch_server_cert(endpoint, dial_timeout)
            options = (("grpc.ssl_target_name_override", name),)
        elif self.server_name:
            options = (("grpc.ssl_target_name_override", self.server_name),)
        return grpc.ssl_channel_credentials(roots, key, cert), options


def _fetch_server_cert(endpoint: str, timeout: float) -> tuple[bytes, str]:
    """The PEM certificate `endpoint` presents, and a name it is valid for."""
    from cryptography import x509

    host, _, port = endpoint.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            ctx.wrap_socket(raw) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ValueError) as exc:
        raise ClientError(
            f"cannot fetch the certificate of {endpoint}: {exc}", grpc.StatusCode.UNAVAILABLE
        ) from None
    if not der:
        raise ClientError(f"{endpoint} presented no certificate", grpc.StatusCode.UNAVAILABLE)
    cert = x509.load_der_x509_certificate(der)
    name = host.strip("[]")
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = sans.get_values_for_type(x509.DNSName)
        ips = [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
        if name not in ips and name not in dns and (dns or ips):
            name = dns[0] if dns else ips[0]
    except x509.ExtensionNotFound:
        cns = cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)
        if cns:
            name = str(cns[0].value)
    return ssl.DER_cert_to_PEM_cert(der).encode(), name


async def diagnose_tls(endpoint: str, tls: ClientTLS | None) -> str:
    """One line on a TLS mismatch with `endpoint`, "" when there is none to tell:
    a TLS client at a plaintext port, a plaintext client at a TLS port, or the
    server certificate failing verification (unknown CA, expired, wrong name).
    Only called after a connection failed (it opens one more connection)."""
    host, _, port = endpoint.rpartition(":")
    host = host.strip("[]")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    probe.set_alpn_protocols(["h2"])
    try:
        _r, w = await asyncio.open_connection(host, int(port), ssl=probe)
    except ssl.SSLError:
        return "the server does not speak TLS: a plaintext port?" if tls is not None else ""
    except (OSError, ValueError):
        return ""  # nothing listens, or no route: not a TLS matter
    w.close()
    if tls is None:
        return "the server speaks TLS: use an https:// endpoint or --cacert"
    if tls.insecure_skip_verify:
        return ""
    verify = ssl.create_default_context(cafile=tls.ca_file or None)
    verify.set_alpn_protocols(["h2"])
    if tls.cert_file and tls.key_file:
        try:
            verify.load_cert_chain(tls.cert_file, tls.key_file)
        except (OSError, ssl.SSLError) as exc:
            return f"client certificate {tls.cert_file}: {exc}"
    try:
        _r, w = await asyncio.open_connection(
            host, int(port), ssl=verify, server_hostname=tls.server_name or host
        )
    except ssl.SSLCertVerificationError as exc:
        return f"server certificate rejected: {exc.verify_message}"
    except ssl.SSLError as exc:
        return f"TLS handshake failed: {exc.reason or exc}"
    except (OSError, ValueError):
        return ""
    w.close()
    return ""


# ------------------------------------------------------------------ token


def auth_expired(err: ClientError) -> bool:
    """The server wants a new token (expired / unknown, or the auth state moved on)."""
    return isinstance(err, InvalidAuthTokenError | AuthOldRevisionError)


def cancel_reason_auth_expired(reason: str) -> bool:
    """A watch create refused for the token (etcd's cancel_reason text)."""
    return "invalid auth token" in reason or "revision of auth store is old" in reason


class TokenAuth:
    """The token of one client (user + password). Same event loop as the client."""

    def __init__(self, user: str, password: str) -> None:
        if not user:
            raise ValueError("user name is empty")
        self.user = user
        self._password = password
        self.token: str | None = None
        self.authentications = 0  # figures for tests
        self._lock = asyncio.Lock()
        self._ready = False

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((TOKEN_METADATA, self.token),) if self.token else ()

    async def ensure(self, transport: Transport) -> None:
        """Authenticate once, before the first call."""
        if not self._ready:
            await self.refresh(transport, None)

    async def refresh(self, transport: Transport, stale: str | None) -> None:
        """Get a new token unless someone already replaced `stale` meanwhile."""
        async with self._lock:
            if self._ready and self.token != stale:
                return
            req = rpc_pb2.AuthenticateRequest(name=self.user, password=self._password)
            try:
                _ep, resp = await transport.unary(
                    "Auth", "Authenticate", req, idempotent=True, authenticated=False
                )
            except AuthNotEnabledError:
                self.token = None  # clientv3 goes on without a token
            else:
                self.token = resp.token
            self.authentications += 1
            self._ready = True


# ------------------------------------------------------------------ Auth API


class PermissionType(enum.IntEnum):
    READ = auth_pb2.Permission.READ
    WRITE = auth_pb2.Permission.WRITE
    READWRITE = auth_pb2.Permission.READWRITE


@dataclass(frozen=True, slots=True)
class Permission:
    """A role's permission on a key (range_end b""), a range, a prefix
    (range_end = prefix end) or all keys from `key` (range_end b"\\x00")."""

    perm_type: PermissionType
    key: bytes
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class AuthResult:
    header: Header


@dataclass(frozen=True, slots=True)
class UserInfo:
    header: Header
    roles: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RoleInfo:
    header: Header
    perms: tuple[Permission, ...]


@dataclass(frozen=True, slots=True)
class NameList:
    header: Header
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AuthStatus:
    header: Header
    enabled: bool
    auth_revision: int


def _h(r: Any) -> Header:
    h = r.header
    return Header(h.cluster_id, h.member_id, h.revision, h.raft_term)


def _b(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class AuthMixin:
    """The etcd Auth service for AsyncClient (`self._call` is AsyncClient's)."""

    _call: Callable[..., Awaitable[Any]]  # AsyncClient._call

    async def _auth(self, method: str, req: Any, idempotent: bool, timeout: float | None) -> Any:
        return await self._call("Auth", method, req, idempotent=idempotent, timeout=timeout)

    async def auth_enable(self, *, timeout: float | None = None) -> AuthResult:
        r = await self._auth("AuthEnable", rpc_pb2.AuthEnableRequest(), False, timeout)
        return AuthResult(_h(r))

    async def auth_disable(self, *, timeout: float | None = None) -> AuthResult:
        r = await self._auth("AuthDisable", rpc_pb2.AuthDisableRequest(), False, timeout)
        return AuthResult(_h(r))

    async def auth_status(self, *, timeout: float | None = None) -> AuthStatus:
        """etcd >= 3.5 (and kvstore); etcd 3.4 answers UNIMPLEMENTED."""
        r = await self._auth("AuthStatus", rpc_pb2.AuthStatusRequest(), True, timeout)
        return AuthStatus(_h(r), r.enabled, r.authRevision)

    async def authenticate(self, user: str, password: str, *, timeout: float | None = None) -> str:
        """A token for `user` (the client does this itself when given user=)."""
        req = rpc_pb2.AuthenticateRequest(name=user, password=password)
        return (await self._auth("Authenticate", req, True, timeout)).token

    async def user_add(
        self, name: str, password: str = "", *, no_password: bool = False,
        timeout: float | None = None,
    ) -> AuthResult:  # fmt: skip
        req = rpc_pb2.AuthUserAddRequest(name=name, password=password)
        if no_password:
            req.options.no_password = True
        return AuthResult(_h(await self._auth("UserAdd", req, False, timeout)))

    async def user_get(self, name: str, *, timeout: float | None = None) -> UserInfo:
        r = await self._auth("UserGet", rpc_pb2.AuthUserGetRequest(name=name), True, timeout)
        return UserInfo(_h(r), tuple(r.roles))

    async def user_list(self, *, timeout: float | None = None) -> NameList:
        r = await self._auth("UserList", rpc_pb2.AuthUserListRequest(), True, timeout)
        return NameList(_h(r), tuple(r.users))

    async def user_delete(self, name: str, *, timeout: float | None = None) -> AuthResult:
        req = rpc_pb2.AuthUserDeleteRequest(name=name)
        return AuthResult(_h(await self._auth("UserDelete", req, False, timeout)))

    async def user_change_password(
        self, name: str, password: str, *, timeout: float | None = None
    ) -> AuthResult:
        req = rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password)
        return AuthResult(_h(await self._auth("UserChangePassword", req, False, timeout)))

    async def user_grant_role(
        self, name: str, role: str, *, timeout: float | None = None
    ) -> AuthResult:
        req = rpc_pb2.AuthUserGrantRoleRequest(user=name, role=role)
        return AuthResult(_h(await self._auth("UserGrantRole", req, False, timeout)))

    async def user_revoke_role(
        self, name: str, role: str, *, timeout: float | None = None
    ) -> AuthResult:
        req = rpc_pb2.AuthUserRevokeRoleRequest(name=name, role=role)
        return AuthResult(_h(await self._auth("UserRevokeRole", req, False, timeout)))

    async def role_add(self, name: str, *, timeout: float | None = None) -> AuthResult:
        req = rpc_pb2.AuthRoleAddRequest(name=name)
        return AuthResult(_h(await self._auth("RoleAdd", req, False, timeout)))

    async def role_get(self, name: str, *, timeout: float | None = None) -> RoleInfo:
        r = await self._auth("RoleGet", rpc_pb2.AuthRoleGetRequest(role=name), True, timeout)
        perms = tuple(Permission(PermissionType(p.permType), p.key, p.range_end) for p in r.perm)
        return RoleInfo(_h(r), perms)

    async def role_list(self, *, timeout: float | None = None) -> NameList:
        r = await self._auth("RoleList", rpc_pb2.AuthRoleListRequest(), True, timeout)
        return NameList(_h(r), tuple(r.roles))

    async def role_delete(self, name: str, *, timeout: float | None = None) -> AuthResult:
        req = rpc_pb2.AuthRoleDeleteRequest(role=name)
        return AuthResult(_h(await self._auth("RoleDelete", req, False, timeout)))

    async def role_grant_permission(
        self, name: str, perm_type: PermissionType | str, key: str | bytes,
        range_end: str | bytes = b"", *, timeout: float | None = None,
    ) -> AuthResult:  # fmt: skip
        """Grant READ / WRITE / READWRITE on `key` (or [key, range_end))."""
        if isinstance(perm_type, str):
            perm_type = PermissionType[perm_type.upper()]
        perm = auth_pb2.Permission(permType=int(perm_type), key=_b(key), range_end=_b(range_end))
        req = rpc_pb2.AuthRoleGrantPermissionRequest(name=name, perm=perm)
        return AuthResult(_h(await self._auth("RoleGrantPermission", req, False, timeout)))

    async def role_revoke_permission(
        self, name: str, key: str | bytes, range_end: str | bytes = b"", *,
        timeout: float | None = None,
    ) -> AuthResult:  # fmt: skip
        req = rpc_pb2.AuthRoleRevokePermissionRequest(
            role=name, key=_b(key), range_end=_b(range_end)
        )
        return AuthResult(_h(await self._auth("RoleRevokePermission", req, False, timeout)))
