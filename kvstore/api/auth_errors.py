"""AuthError (kvstore/auth, no grpc) -> etcd's gRPC status code and exact message.

Owns: the one table from auth domain errors to the `etcdserver: ...` errors of
etcd 3.4's rpctypes (kvstore/errors.py). An auth error etcd 3.4 does not
translate (ErrNoPasswordUser; every auth error of the admin-checked
Maintenance RPCs: Snapshot, Hash, HashKV, Defragment) leaves as code UNKNOWN
with the raw `auth: ...` message, byte for byte as observed on etcd 3.4.23.
Never: decides anything; callers catch AuthError and call `to_etcd_error`.
"""

from __future__ import annotations

from collections.abc import Callable

import grpc

from kvstore import errors
from kvstore.auth import errors as auth_errors

_TABLE: dict[str, Callable[[], errors.EtcdError]] = {
    auth_errors.RootUserNotExist.name: errors.ROOT_USER_NOT_EXIST,
    auth_errors.RootRoleNotExist.name: errors.ROOT_ROLE_NOT_EXIST,
    auth_errors.UserAlreadyExist.name: errors.USER_ALREADY_EXIST,
    auth_errors.UserEmpty.name: errors.USER_EMPTY,
    auth_errors.UserNotFound.name: errors.USER_NOT_FOUND,
    auth_errors.RoleAlreadyExist.name: errors.ROLE_ALREADY_EXIST,
    auth_errors.RoleNotFound.name: errors.ROLE_NOT_FOUND,
    auth_errors.RoleEmpty.name: errors.ROLE_EMPTY,
    auth_errors.AuthFailed.name: errors.AUTH_FAILED,
    auth_errors.PermissionDenied.name: errors.PERMISSION_DENIED,
    auth_errors.RoleNotGranted.name: errors.ROLE_NOT_GRANTED,
    auth_errors.PermissionNotGranted.name: errors.PERMISSION_NOT_GRANTED,
    auth_errors.PermissionNotGiven.name: errors.PERMISSION_NOT_GIVEN,
    auth_errors.AuthNotEnabled.name: errors.AUTH_NOT_ENABLED,
    auth_errors.InvalidAuthToken.name: errors.INVALID_AUTH_TOKEN,
    auth_errors.InvalidAuthMgmt.name: errors.INVALID_AUTH_MGMT,
    auth_errors.AuthOldRevision.name: errors.AUTH_OLD_REVISION,
    auth_errors.TooManyRequests.name: errors.TOO_MANY_REQUESTS,
}


def to_etcd_error(exc: auth_errors.AuthError, raw: bool = False) -> errors.EtcdError:
    """The error a client sees. `raw=True` for the RPCs etcd 3.4 does not
    translate (kvstore.auth.checker.RAW_ERROR_METHODS): UNKNOWN + `auth: ...`."""
    make = None if raw else _TABLE.get(exc.name)
    if make is None:
        return errors.EtcdError(grpc.StatusCode.UNKNOWN, exc.message)
    return make()


def watch_cancel_reason(exc: auth_errors.AuthError) -> str:
    """WatchResponse.cancel_reason for a refused watch create, as etcd 3.4 writes
    it (Go's status error text), e.g.
    "rpc error: code = PermissionDenied desc = etcdserver: permission denied"."""
    err = to_etcd_error(exc)
    code = "".join(part.capitalize() for part in err.code.name.split("_"))
    return f"rpc error: code = {code} desc = {err.message}"
