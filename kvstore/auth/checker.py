"""PermissionChecker: may this user run this request, as etcd 3.4 decides.

Owns: the per-request permission rules (etcd's authApplierV3 and
checkTxnAuth / checkLeasePuts / IsAdminPermitted, isWatchPermitted), the
per-user cache of merged range permissions, and the table of RPCs that need
the root role. Call `check_*` at APPLY time with the AuthInfo the request was
admitted with: the auth revision in it must still be the store's, so a
permission revoked between admission and apply is honoured (no
time-of-check / time-of-use gap; the proposer re-resolves the token and
retries on AuthOldRevision, as etcd's raftRequest loop does).
Never: resolves tokens, reads the clock, imports grpc.

Where kvstore is stricter than etcd 3.4.23 (both are read leaks or privilege
escalations fixed in later etcd releases, see ../../docs or the README):
- a nested Txn (RequestOp.request_txn) is checked op by op, recursively
  (etcd 3.4.23 skips nested txns: CVE-2023-32082 family, fixed in 3.4.26);
- a Put with prev_kv inside a Txn needs READ on the key, as a plain Put with
  prev_kv already does (3.4.23 returns the previous value without the check).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kvstore.auth import errors
from kvstore.auth.ranges import RangePermissions
from kvstore.auth.store import AuthStore
from kvstore.pb import rpc_pb2


@dataclass(frozen=True, slots=True)
class AuthInfo:
    """Who sends a request and the auth revision it was admitted at
    (revision 0 = no credentials: etcd's empty AuthInfo)."""

    username: str = ""
    revision: int = 0


NO_AUTH = AuthInfo()

# Full gRPC method paths that need the root role when auth is enabled
# (observed on etcd 3.4.23, see tests/auth/test_checker.py). Auth writes and
# the user/role listings are checked at apply; the others before serving.
ADMIN_METHODS: frozenset[str] = frozenset(
    {
        "/etcdserverpb.Auth/AuthEnable",
        "/etcdserverpb.Auth/AuthDisable",
        "/etcdserverpb.Auth/UserAdd",
        "/etcdserverpb.Auth/UserDelete",
        "/etcdserverpb.Auth/UserChangePassword",
        "/etcdserverpb.Auth/UserGrantRole",
        "/etcdserverpb.Auth/UserRevokeRole",
        "/etcdserverpb.Auth/UserList",
        "/etcdserverpb.Auth/RoleAdd",
        "/etcdserverpb.Auth/RoleDelete",
        "/etcdserverpb.Auth/RoleGrantPermission",
        "/etcdserverpb.Auth/RoleRevokePermission",
        "/etcdserverpb.Auth/RoleList",
        "/etcdserverpb.Cluster/MemberAdd",
        "/etcdserverpb.Cluster/MemberRemove",
        "/etcdserverpb.Cluster/MemberUpdate",
        "/etcdserverpb.Cluster/MemberPromote",
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Defragment",
    }
)
# Of those, etcd 3.4 answers these with code Unknown and the raw "auth: ..."
# message (its authMaintenanceServer does not translate the error).
RAW_ERROR_METHODS: frozenset[str] = frozenset(
    {
        "/etcdserverpb.Maintenance/Snapshot",
        "/etcdserverpb.Maintenance/Hash",
        "/etcdserverpb.Maintenance/HashKV",
        "/etcdserverpb.Maintenance/Defragment",
    }
)
# Need no credentials at all even when auth is enabled (observed): Authenticate,
# Status, Alarm, MemberList, MoveLeader (a 3-member etcd 3.4.23 moved its leader
# for a caller without credentials), LeaseGrant / KeepAlive / TimeToLive /
# Leases, Compact (any authenticated or anonymous caller), the health service.


class PermissionChecker:
    """Permission decisions against one AuthStore. Same task as the store."""

    def __init__(self, store: AuthStore) -> None:
        self._store = store
        self._cache: dict[str, RangePermissions] = {}
        store.on_change(self._cache.clear)

    # ------------------------------------------------------------ primitives
    def _user_perms(self, ai: AuthInfo) -> RangePermissions | None:
        """etcd isOpPermitted's preamble; None = root (everything allowed).
        Raises UserEmpty, AuthOldRevision, PermissionDenied."""
        store = self._store
        if ai.revision == 0:
            raise errors.UserEmpty()
        if ai.revision < store.revision:
            raise errors.AuthOldRevision()
        user = store.user(ai.username)
        if user is None:
            raise errors.PermissionDenied()
        if store.is_root(ai.username):
            return None
        perms = self._cache.get(ai.username)
        if perms is None:
            roles = (store.role(r) for r in user.roles)
            perms = RangePermissions.merge(r for r in roles if r is not None)
            self._cache[ai.username] = perms
        return perms

    def _check(self, ai: AuthInfo, write: bool, key: bytes, range_end: bytes = b"") -> None:
        if not self._store.enabled:
            return
        perms = self._user_perms(ai)
        if perms is not None and not perms.allows(write, key, range_end):
            raise errors.PermissionDenied()

    def check_read(self, ai: AuthInfo, key: bytes, range_end: bytes = b"") -> None:
        """etcd IsRangePermitted."""
        self._check(ai, False, key, range_end)

    def check_write(self, ai: AuthInfo, key: bytes, range_end: bytes = b"") -> None:
        """etcd IsPutPermitted (no range_end) / IsDeleteRangePermitted."""
        self._check(ai, True, key, range_end)

    def check_admin(self, ai: AuthInfo | None) -> None:
        """etcd IsAdminPermitted: the root role. Raises UserEmpty, UserNotFound,
        PermissionDenied."""
        store = self._store
        if not store.enabled:
            return
        if ai is None or not ai.username:
            raise errors.UserEmpty()
        if store.user(ai.username) is None:
            raise errors.UserNotFound()
        if not store.is_root(ai.username):
            raise errors.PermissionDenied()

    # ------------------------------------------------------------ requests
    def check_range(self, ai: AuthInfo, req: rpc_pb2.RangeRequest) -> None:
        self.check_read(ai, req.key, req.range_end)

    def check_put(
        self,
        ai: AuthInfo,
        req: rpc_pb2.PutRequest,
        lease_keys: Callable[[int], Iterable[bytes]] | None = None,
    ) -> None:
        """WRITE on the key; WRITE on every key already attached to req.lease
        (a user who could not revoke the lease must not attach to it); READ
        on the key with prev_kv."""
        self.check_write(ai, req.key)
        if req.lease and lease_keys is not None:
            self.check_lease_revoke(ai, req.lease, lease_keys)
        if req.prev_kv:
            self.check_read(ai, req.key)

    def check_delete_range(self, ai: AuthInfo, req: rpc_pb2.DeleteRangeRequest) -> None:
        self.check_write(ai, req.key, req.range_end)
        if req.prev_kv:
            self.check_read(ai, req.key, req.range_end)

    def check_txn(self, ai: AuthInfo, req: rpc_pb2.TxnRequest) -> None:
        """READ on every compare's range, then every op of both branches
        (etcd checkTxnAuth), recursing into nested txns (see module doc)."""
        if not self._store.enabled:
            return
        for cmp in req.compare:
            self.check_read(ai, cmp.key, cmp.range_end)
        self._check_ops(ai, req.success)
        self._check_ops(ai, req.failure)

    def _check_ops(self, ai: AuthInfo, ops: Iterable[rpc_pb2.RequestOp]) -> None:
        for op in ops:
            which = op.WhichOneof("request")
            if which == "request_range":
                self.check_read(ai, op.request_range.key, op.request_range.range_end)
            elif which == "request_put":
                self.check_write(ai, op.request_put.key)
                if op.request_put.prev_kv:
                    self.check_read(ai, op.request_put.key)
            elif which == "request_delete_range":
                d = op.request_delete_range
                if d.prev_kv:
                    self.check_read(ai, d.key, d.range_end)
                self.check_write(ai, d.key, d.range_end)
            elif which == "request_txn":
                self.check_txn(ai, op.request_txn)

    def check_lease_revoke(
        self, ai: AuthInfo, lease_id: int, lease_keys: Callable[[int], Iterable[bytes]]
    ) -> None:
        """WRITE on every key attached to the lease (etcd checkLeasePuts); a
        lease with no keys (or unknown) needs nothing."""
        if not self._store.enabled:
            return
        for key in lease_keys(lease_id):
            self.check_write(ai, key)

    def check_watch(self, ai: AuthInfo, req: rpc_pb2.WatchCreateRequest) -> None:
        """READ on the watched range (etcd isWatchPermitted). The Watch
        servicer answers a refusal with a created+canceled response, watch_id
        -1 and cancel_reason "rpc error: code = <Code> desc = <etcd message>"."""
        self.check_read(ai, req.key, req.range_end)

    def check_user_get(self, ai: AuthInfo, req: rpc_pb2.AuthUserGetRequest) -> None:
        """Root, or the user asking about itself."""
        try:
            self.check_admin(ai)
        except errors.AuthError:
            if req.name != ai.username:
                raise

    def check_role_get(self, ai: AuthInfo, req: rpc_pb2.AuthRoleGetRequest) -> None:
        """Root, or a user holding that role."""
        try:
            self.check_admin(ai)
        except errors.AuthError:
            if not self._store.has_role(ai.username, req.role):
                raise

    def check_internal(
        self,
        ai: AuthInfo,
        kind: str,
        req: object,
        lease_keys: Callable[[int], Iterable[bytes]] | None = None,
    ) -> None:
        """Apply-time check of one replicated request, by InternalRequest field
        name (what etcd's authApplierV3 does before applying). Kinds that need
        no permission (lease_grant, compaction, alarm, ...) pass."""
        if not self._store.enabled:
            return
        if kind in ADMIN_KINDS:
            self.check_admin(ai)
        elif kind == "put":
            self.check_put(ai, req, lease_keys)  # type: ignore[arg-type]
        elif kind == "delete_range":
            self.check_delete_range(ai, req)  # type: ignore[arg-type]
        elif kind == "txn":
            self.check_txn(ai, req)  # type: ignore[arg-type]
        elif kind == "range":
            self.check_range(ai, req)  # type: ignore[arg-type]
        elif kind == "lease_revoke" and lease_keys is not None:
            self.check_lease_revoke(ai, req.ID, lease_keys)  # type: ignore[attr-defined]
        elif kind == "auth_user_get":
            self.check_user_get(ai, req)  # type: ignore[arg-type]
        elif kind == "auth_role_get":
            self.check_role_get(ai, req)  # type: ignore[arg-type]

    def check_method(self, ai: AuthInfo | None, method: str) -> None:
        """Before serving an RPC that is not replicated: the root role where
        etcd 3.4 requires it (ADMIN_METHODS)."""
        if method in ADMIN_METHODS:
            self.check_admin(ai)


# InternalRequest kinds that need the root role at apply (etcd needAdminPermission).
ADMIN_KINDS: frozenset[str] = frozenset(
    {
        "auth_enable",
        "auth_disable",
        "auth_user_add",
        "auth_user_delete",
        "auth_user_change_password",
        "auth_user_grant_role",
        "auth_user_revoke_role",
        "auth_role_add",
        "auth_role_grant_permission",
        "auth_role_revoke_permission",
        "auth_role_delete",
        "auth_user_list",
        "auth_role_list",
    }
)
