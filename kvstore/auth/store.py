"""AuthStore: the replicated auth state (users, roles, permissions, enabled flag,
auth revision) and etcd 3.4's rules for changing it.

Owns: the in-memory copy of the auth state, its encoding in RocksDB, the
deterministic apply of every Auth write (UserAdd ... RoleRevokePermission,
AuthEnable / AuthDisable), the reads (UserGet/List, RoleGet/List), the
password check for Authenticate, the admin / root-role tests, and
dump / load of the whole state for snapshot install and `snapshot restore`.
Never: hashes a password (the proposer hashes once, before proposing; apply only
stores `hashedPassword`), reads a clock, uses randomness or per-node settings,
imports grpc, or writes outside the apply batch it is given.

On disk: the `meta` column family under the prefix `auth/` (so snapshot
transfer, `snapshot save` and `snapshot restore`, which copy the replicated
`meta` records, carry the auth state with no extra code):

    auth/enabled        -> b"\\x01" | b"\\x00"
    auth/revision       -> u64 big-endian (the auth revision)
    auth/user/<name>    -> authpb.User   (serialized; password = bcrypt hash)
    auth/role/<name>    -> authpb.Role   (serialized; permissions sorted by key)

Invariants:
- the auth revision starts at 1 (as etcd's NewAuthStore) and increases by one
  on every applied change of users, roles or permissions; AuthEnable and
  AuthDisable leave it unchanged (etcd 3.4); a request checked at revision r
  may apply only while the revision is still r (see checker.py);
- apply methods validate everything before their first mutation, so a raised
  AuthError leaves no trace (memory and batch unchanged);
- a user's roles are kept sorted and unique; a role's permissions sorted by key.

Callers: the apply loop (apply_*), the API / interceptor on the same event loop
(reads, `check_password`, `is_admin`). One thread only.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from google.protobuf.message import Message

from kvstore.auth import errors
from kvstore.pb import auth_pb2, rpc_pb2

ROOT_USER = "root"
ROOT_ROLE = "root"
AUTH_PREFIX = b"auth/"
ENABLED_KEY = b"auth/enabled"
REVISION_KEY = b"auth/revision"
USER_PREFIX = b"auth/user/"
ROLE_PREFIX = b"auth/role/"
META_FAMILY = "meta"
_U64 = struct.Struct(">Q")
_M = TypeVar("_M", bound=Message)

READ = auth_pb2.Permission.READ
WRITE = auth_pb2.Permission.WRITE
READWRITE = auth_pb2.Permission.READWRITE


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix` (etcd's
    GetPrefixRangeEnd; b"\\x00" when there is none)."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


class ApplyBatch(Protocol):
    """What apply needs of the node's apply batch (MvccBatch has both)."""

    def put_raw(self, cf: str, key: bytes, value: bytes) -> None: ...

    def delete_raw(self, cf: str, key: bytes) -> None: ...


class StateReader(Protocol):
    """A read view of the backend (Backend or BackendSnapshot)."""

    def iterate(
        self, cf: str, start: bytes = b"", end: bytes | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...


@dataclass(frozen=True, slots=True)
class AuthState:
    """A self-contained copy of the whole auth state (dump / load)."""

    enabled: bool
    revision: int
    users: tuple[auth_pb2.User, ...]
    roles: tuple[auth_pb2.Role, ...]

    def records(self) -> list[tuple[bytes, bytes]]:
        """The `meta` records that encode this state (sorted by key)."""
        out = [
            (ENABLED_KEY, b"\x01" if self.enabled else b"\x00"),
            (REVISION_KEY, _U64.pack(self.revision)),
        ]
        out += [(USER_PREFIX + u.name, u.SerializeToString()) for u in self.users]
        out += [(ROLE_PREFIX + r.name, r.SerializeToString()) for r in self.roles]
        out.sort()
        return out

    def encode(self) -> bytes:
        """One byte string (length-prefixed records) for a snapshot or a file."""
        parts = []
        for key, value in self.records():
            parts.append(struct.pack(">II", len(key), len(value)) + key + value)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> AuthState:
        records: list[tuple[bytes, bytes]] = []
        pos = 0
        while pos < len(data):
            if pos + 8 > len(data):
                raise ValueError("truncated auth state record header")
            klen, vlen = struct.unpack_from(">II", data, pos)
            pos += 8
            if pos + klen + vlen > len(data):
                raise ValueError("truncated auth state record")
            records.append((data[pos : pos + klen], data[pos + klen : pos + klen + vlen]))
            pos += klen + vlen
        return cls.from_records(records)

    @classmethod
    def from_records(cls, records: Iterable[tuple[bytes, bytes]]) -> AuthState:
        enabled, revision = False, 1
        users: list[auth_pb2.User] = []
        roles: list[auth_pb2.Role] = []
        for key, value in records:
            if key == ENABLED_KEY:
                enabled = value == b"\x01"
            elif key == REVISION_KEY:
                revision = _U64.unpack(value)[0]
            elif key.startswith(USER_PREFIX):
                users.append(auth_pb2.User.FromString(value))
            elif key.startswith(ROLE_PREFIX):
                roles.append(auth_pb2.Role.FromString(value))
        users.sort(key=lambda u: u.name)
        roles.sort(key=lambda r: r.name)
        return cls(enabled, revision, tuple(users), tuple(roles))


def _name(raw: str) -> bytes:
    return raw.encode()


class AuthStore:
    """Replicated auth state; see the module docstring."""

    def __init__(self) -> None:
        self._enabled = False
        self._revision = 1
        self._users: dict[str, auth_pb2.User] = {}
        self._roles: dict[str, auth_pb2.Role] = {}
        # Called with a user name whose tokens must die (deleted, new password):
        # the token provider subscribes (node-local; never replicated).
        self._on_user_invalidated: list[Callable[[str], None]] = []
        # Called after every change of the state (the checker drops its cache).
        self._on_change: list[Callable[[], None]] = []
        # Called when auth goes from enabled to disabled (every token dies).
        self._on_disabled: list[Callable[[], None]] = []

    # ------------------------------------------------------------ observers
    def on_user_invalidated(self, fn: Callable[[str], None]) -> None:
        self._on_user_invalidated.append(fn)

    def on_change(self, fn: Callable[[], None]) -> None:
        self._on_change.append(fn)

    def on_auth_disabled(self, fn: Callable[[], None]) -> None:
        """`fn()` runs on every member when an AuthDisable applies (or a loaded
        state is disabled where this one was enabled): e.g. tokens.disable."""
        self._on_disabled.append(fn)

    def _disabled(self) -> None:
        for fn in self._on_disabled:
            fn()

    def _changed(self) -> None:
        for fn in self._on_change:
            fn()

    def _invalidate_user(self, name: str) -> None:
        for fn in self._on_user_invalidated:
            fn(name)

    # ------------------------------------------------------------ open / dump / load
    def load(self, reader: StateReader) -> None:
        """Rebuild from the `meta` family (node start; after a snapshot install,
        where the tokens of every user that changed or vanished die)."""
        self._adopt(
            AuthState.from_records(
                list(reader.iterate(META_FAMILY, AUTH_PREFIX, prefix_end(AUTH_PREFIX)))
            )
        )

    def dump(self) -> AuthState:
        """A copy of the whole state (for a snapshot or a backup file)."""
        return AuthState(
            self._enabled,
            self._revision,
            tuple(_copy(u) for _, u in sorted(self._users.items())),
            tuple(_copy(r) for _, r in sorted(self._roles.items())),
        )

    def restore(self, state: AuthState, batch: ApplyBatch | None = None) -> None:
        """Replace the whole state by `state`; with `batch`, also rewrite the
        records on disk (old ones deleted) in that batch. The tokens of every
        user that changed or vanished die."""
        if batch is not None:
            for name in self._users:
                batch.delete_raw(META_FAMILY, USER_PREFIX + _name(name))
            for name in self._roles:
                batch.delete_raw(META_FAMILY, ROLE_PREFIX + _name(name))
            for key, value in state.records():
                batch.put_raw(META_FAMILY, key, value)
        self._adopt(state)

    def _adopt(self, state: AuthState) -> None:
        old_users, was_enabled = self._users, self._enabled
        self._enabled = state.enabled
        self._revision = state.revision
        self._users = {u.name.decode(): _copy(u) for u in state.users}
        self._roles = {r.name.decode(): _copy(r) for r in state.roles}
        self._changed()
        for name, user in old_users.items():
            if self._users.get(name) != user:
                self._invalidate_user(name)
        if was_enabled and not self._enabled:
            self._disabled()

    # ------------------------------------------------------------ reads
    @property
    def enabled(self) -> bool:
        return self._enabled

    @property
    def revision(self) -> int:
        return self._revision

    def user(self, name: str) -> auth_pb2.User | None:
        """The stored user (do not mutate), or None."""
        return self._users.get(name)

    def role(self, name: str) -> auth_pb2.Role | None:
        return self._roles.get(name)

    def has_role(self, user: str, role: str) -> bool:
        u = self._users.get(user)
        return u is not None and role in u.roles

    def is_root(self, user: str) -> bool:
        """The user exists and holds the root role (etcd hasRootRole)."""
        return self.has_role(user, ROOT_ROLE)

    def user_get(self, req: rpc_pb2.AuthUserGetRequest) -> rpc_pb2.AuthUserGetResponse:
        u = self._users.get(req.name)
        if u is None:
            raise errors.UserNotFound()
        return rpc_pb2.AuthUserGetResponse(roles=list(u.roles))

    def user_list(
        self, req: rpc_pb2.AuthUserListRequest | None = None
    ) -> rpc_pb2.AuthUserListResponse:
        return rpc_pb2.AuthUserListResponse(users=sorted(self._users))

    def role_get(self, req: rpc_pb2.AuthRoleGetRequest) -> rpc_pb2.AuthRoleGetResponse:
        r = self._roles.get(req.role)
        if r is None:
            raise errors.RoleNotFound()
        return rpc_pb2.AuthRoleGetResponse(perm=list(r.keyPermission))

    def role_list(
        self, req: rpc_pb2.AuthRoleListRequest | None = None
    ) -> rpc_pb2.AuthRoleListResponse:
        return rpc_pb2.AuthRoleListResponse(roles=sorted(self._roles))

    def status(self) -> rpc_pb2.AuthStatusResponse:
        return rpc_pb2.AuthStatusResponse(enabled=self._enabled, authRevision=self._revision)

    def password_hash(self, name: str) -> tuple[bytes, int]:
        """(bcrypt hash, auth revision) of `name` for Authenticate (etcd CheckPassword
        without the bcrypt comparison, which the caller runs off the loop).

        Raises AuthNotEnabled, AuthFailed (no such user), NoPasswordUser."""
        if not self._enabled:
            raise errors.AuthNotEnabled()
        u = self._users.get(name)
        if u is None:
            raise errors.AuthFailed()
        if u.HasField("options") and u.options.no_password:
            raise errors.NoPasswordUser()
        return u.password, self._revision

    # ------------------------------------------------------------ apply: enable
    def apply_auth_enable(
        self, batch: ApplyBatch, req: rpc_pb2.AuthEnableRequest | None = None
    ) -> rpc_pb2.AuthEnableResponse:
        """Raises RootUserNotExist, RootRoleNotExist. Enabling twice is a no-op."""
        if self._enabled:
            return rpc_pb2.AuthEnableResponse()
        root = self._users.get(ROOT_USER)
        if root is None:
            raise errors.RootUserNotExist()
        if ROOT_ROLE not in root.roles:
            raise errors.RootRoleNotExist()
        self._enabled = True
        batch.put_raw(META_FAMILY, ENABLED_KEY, b"\x01")
        self._persist_revision(batch)  # first enable writes the initial revision
        self._changed()
        return rpc_pb2.AuthEnableResponse()

    def apply_auth_disable(
        self, batch: ApplyBatch, req: rpc_pb2.AuthDisableRequest | None = None
    ) -> rpc_pb2.AuthDisableResponse:
        if self._enabled:
            self._enabled = False
            batch.put_raw(META_FAMILY, ENABLED_KEY, b"\x00")
            self._changed()
            self._disabled()
        return rpc_pb2.AuthDisableResponse()

    # ------------------------------------------------------------ apply: users
    def apply_user_add(
        self, batch: ApplyBatch, req: rpc_pb2.AuthUserAddRequest
    ) -> rpc_pb2.AuthUserAddResponse:
        """Add a user with `req.hashedPassword` (the proposer hashed it; a plain
        `password` is never stored). Raises UserEmpty, UserAlreadyExist."""
        if not req.name:
            raise errors.UserEmpty()
        if req.name in self._users:
            raise errors.UserAlreadyExist()
        no_password = req.HasField("options") and req.options.no_password
        user = auth_pb2.User(
            name=_name(req.name),
            password=b"" if no_password else req.hashedPassword.encode(),
            options=auth_pb2.UserAddOptions(no_password=no_password),
        )
        self._users[req.name] = user
        self._put_user(batch, user)
        self._commit_revision(batch)
        return rpc_pb2.AuthUserAddResponse()

    def apply_user_delete(
        self, batch: ApplyBatch, req: rpc_pb2.AuthUserDeleteRequest
    ) -> rpc_pb2.AuthUserDeleteResponse:
        """Raises InvalidAuthMgmt (root while enabled), UserNotFound."""
        if self._enabled and req.name == ROOT_USER:
            raise errors.InvalidAuthMgmt()
        if req.name not in self._users:
            raise errors.UserNotFound()
        del self._users[req.name]
        batch.delete_raw(META_FAMILY, USER_PREFIX + _name(req.name))
        self._commit_revision(batch)
        self._invalidate_user(req.name)
        return rpc_pb2.AuthUserDeleteResponse()

    def apply_user_change_password(
        self, batch: ApplyBatch, req: rpc_pb2.AuthUserChangePasswordRequest
    ) -> rpc_pb2.AuthUserChangePasswordResponse:
        """Store `req.hashedPassword`; a no-password user stays one (etcd 3.4).
        Raises UserNotFound."""
        old = self._users.get(req.name)
        if old is None:
            raise errors.UserNotFound()
        user = _copy(old)
        user.password = req.hashedPassword.encode()
        self._users[req.name] = user
        self._put_user(batch, user)
        self._commit_revision(batch)
        self._invalidate_user(req.name)
        return rpc_pb2.AuthUserChangePasswordResponse()

    def apply_user_grant_role(
        self, batch: ApplyBatch, req: rpc_pb2.AuthUserGrantRoleRequest
    ) -> rpc_pb2.AuthUserGrantRoleResponse:
        """Raises UserNotFound, RoleNotFound (except for `root`, which may be
        granted before the role exists). Granting a held role is a no-op."""
        old = self._users.get(req.user)
        if old is None:
            raise errors.UserNotFound()
        if req.role != ROOT_ROLE and req.role not in self._roles:
            raise errors.RoleNotFound()
        if req.role in old.roles:
            return rpc_pb2.AuthUserGrantRoleResponse()
        user = _copy(old)
        roles = list(user.roles)
        bisect.insort(roles, req.role)
        del user.roles[:]
        user.roles.extend(roles)
        self._users[req.user] = user
        self._put_user(batch, user)
        self._commit_revision(batch)
        return rpc_pb2.AuthUserGrantRoleResponse()

    def apply_user_revoke_role(
        self, batch: ApplyBatch, req: rpc_pb2.AuthUserRevokeRoleRequest
    ) -> rpc_pb2.AuthUserRevokeRoleResponse:
        """Raises InvalidAuthMgmt (root's root role while enabled), UserNotFound,
        RoleNotGranted."""
        if self._enabled and req.name == ROOT_USER and req.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmt()
        old = self._users.get(req.name)
        if old is None:
            raise errors.UserNotFound()
        if req.role not in old.roles:
            raise errors.RoleNotGranted()
        user = _copy(old)
        roles = [r for r in user.roles if r != req.role]
        del user.roles[:]
        user.roles.extend(roles)
        self._users[req.name] = user
        self._put_user(batch, user)
        self._commit_revision(batch)
        return rpc_pb2.AuthUserRevokeRoleResponse()

    # ------------------------------------------------------------ apply: roles
    def apply_role_add(
        self, batch: ApplyBatch, req: rpc_pb2.AuthRoleAddRequest
    ) -> rpc_pb2.AuthRoleAddResponse:
        """Raises RoleEmpty, RoleAlreadyExist."""
        if not req.name:
            raise errors.RoleEmpty()
        if req.name in self._roles:
            raise errors.RoleAlreadyExist()
        role = auth_pb2.Role(name=_name(req.name))
        self._roles[req.name] = role
        self._put_role(batch, role)
        self._commit_revision(batch)
        return rpc_pb2.AuthRoleAddResponse()

    def apply_role_delete(
        self, batch: ApplyBatch, req: rpc_pb2.AuthRoleDeleteRequest
    ) -> rpc_pb2.AuthRoleDeleteResponse:
        """Delete the role and take it from every user holding it.
        Raises InvalidAuthMgmt (root while enabled), RoleNotFound."""
        if self._enabled and req.role == ROOT_ROLE:
            raise errors.InvalidAuthMgmt()
        if req.role not in self._roles:
            raise errors.RoleNotFound()
        del self._roles[req.role]
        batch.delete_raw(META_FAMILY, ROLE_PREFIX + _name(req.role))
        for name, old in list(self._users.items()):
            if req.role in old.roles:
                user = _copy(old)
                roles = [r for r in user.roles if r != req.role]
                del user.roles[:]
                user.roles.extend(roles)
                self._users[name] = user
                self._put_user(batch, user)
        self._commit_revision(batch)
        return rpc_pb2.AuthRoleDeleteResponse()

    def apply_role_grant_permission(
        self, batch: ApplyBatch, req: rpc_pb2.AuthRoleGrantPermissionRequest
    ) -> rpc_pb2.AuthRoleGrantPermissionResponse:
        """Add the permission, or change the type of the one with the same
        [key, range_end). Raises PermissionNotGiven (no `perm`: etcd 3.4.23
        crashes on that, 3.5 answers this), RoleNotFound."""
        if not req.HasField("perm"):
            raise errors.PermissionNotGiven()
        old = self._roles.get(req.name)
        if old is None:
            raise errors.RoleNotFound()
        role = _copy(old)
        perms = list(role.keyPermission)
        for p in perms:
            if p.key == req.perm.key and p.range_end == req.perm.range_end:
                p.permType = req.perm.permType
                break
        else:
            perms.append(
                auth_pb2.Permission(
                    permType=req.perm.permType, key=req.perm.key, range_end=req.perm.range_end
                )
            )
            perms.sort(key=lambda p: p.key)  # stable: equal keys keep grant order
        del role.keyPermission[:]
        role.keyPermission.extend(perms)
        self._roles[req.name] = role
        self._put_role(batch, role)
        self._commit_revision(batch)
        return rpc_pb2.AuthRoleGrantPermissionResponse()

    def apply_role_revoke_permission(
        self, batch: ApplyBatch, req: rpc_pb2.AuthRoleRevokePermissionRequest
    ) -> rpc_pb2.AuthRoleRevokePermissionResponse:
        """Raises RoleNotFound, PermissionNotGranted (no permission with exactly
        this [key, range_end))."""
        old = self._roles.get(req.role)
        if old is None:
            raise errors.RoleNotFound()
        kept = [
            p for p in old.keyPermission if not (p.key == req.key and p.range_end == req.range_end)
        ]
        if len(kept) == len(old.keyPermission):
            raise errors.PermissionNotGranted()
        role = _copy(old)
        del role.keyPermission[:]
        role.keyPermission.extend(kept)
        self._roles[req.role] = role
        self._put_role(batch, role)
        self._commit_revision(batch)
        return rpc_pb2.AuthRoleRevokePermissionResponse()

    # ------------------------------------------------------------ persistence
    def _put_user(self, batch: ApplyBatch, user: auth_pb2.User) -> None:
        batch.put_raw(META_FAMILY, USER_PREFIX + user.name, user.SerializeToString())

    def _put_role(self, batch: ApplyBatch, role: auth_pb2.Role) -> None:
        batch.put_raw(META_FAMILY, ROLE_PREFIX + role.name, role.SerializeToString())

    def _persist_revision(self, batch: ApplyBatch) -> None:
        batch.put_raw(META_FAMILY, REVISION_KEY, _U64.pack(self._revision))

    def _commit_revision(self, batch: ApplyBatch) -> None:
        self._revision += 1
        self._persist_revision(batch)
        self._changed()

    # ------------------------------------------------------------ dispatch
    def handlers(self) -> dict[str, Callable[[ApplyBatch, Any], Any]]:
        """InternalRequest field name -> apply function, for `Applier.register`
        (the field names the lead adds to internal.proto's oneof)."""
        return {
            "auth_enable": self.apply_auth_enable,
            "auth_disable": self.apply_auth_disable,
            "auth_user_add": self.apply_user_add,
            "auth_user_delete": self.apply_user_delete,
            "auth_user_change_password": self.apply_user_change_password,
            "auth_user_grant_role": self.apply_user_grant_role,
            "auth_user_revoke_role": self.apply_user_revoke_role,
            "auth_role_add": self.apply_role_add,
            "auth_role_delete": self.apply_role_delete,
            "auth_role_grant_permission": self.apply_role_grant_permission,
            "auth_role_revoke_permission": self.apply_role_revoke_permission,
        }


def _copy(msg: _M) -> _M:
    """A deep copy of a protobuf message (stored messages are never mutated)."""
    out = type(msg)()
    out.CopyFrom(msg)
    return out
