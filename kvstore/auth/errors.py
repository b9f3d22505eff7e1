"""Auth domain errors: one class per etcd 3.4 auth error, carrying etcd's name.

Owns: the errors raised by kvstore/auth (store rules, permission checks,
tokens, hashing). Each carries `name` (the Go variable in etcd's auth package,
e.g. "ErrUserNotFound") and `message` (etcd's `auth: ...` text, used only in
logs and where etcd itself leaks it to clients).
Never: imports grpc or knows status codes. The API layer maps `name` to etcd's
gRPC code and the byte-exact `etcdserver: ...` message (kvstore/api/auth_errors.py);
an error whose name has no mapping goes out as etcd 3.4 does for those:
code Unknown with the `auth: ...` message (observed for ErrNoPasswordUser and
for the admin checks of Snapshot / Hash / HashKV / Defragment).
"""

from __future__ import annotations


class AuthError(Exception):
    """Base of every auth domain error."""

    name: str = "ErrAuth"
    message: str = "auth: error"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail or self.message)
        self.detail = detail

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))


def _error(name: str, message: str) -> type[AuthError]:
    return type(name, (AuthError,), {"name": name, "message": message})


RootUserNotExist = _error("ErrRootUserNotExist", "auth: root user does not exist")
RootRoleNotExist = _error("ErrRootRoleNotExist", "auth: root user does not have root role")
UserAlreadyExist = _error("ErrUserAlreadyExist", "auth: user already exists")
UserEmpty = _error("ErrUserEmpty", "auth: user name is empty")
UserNotFound = _error("ErrUserNotFound", "auth: user not found")
RoleAlreadyExist = _error("ErrRoleAlreadyExist", "auth: role already exists")
RoleNotFound = _error("ErrRoleNotFound", "auth: role not found")
RoleEmpty = _error("ErrRoleEmpty", "auth: role name is empty")
AuthFailed = _error("ErrAuthFailed", "auth: authentication failed, invalid user ID or password")
NoPasswordUser = _error(
    "ErrNoPasswordUser", "auth: authentication failed, password was given for no password user"
)
PermissionDenied = _error("ErrPermissionDenied", "auth: permission denied")
RoleNotGranted = _error("ErrRoleNotGranted", "auth: role is not granted to the user")
PermissionNotGranted = _error(
    "ErrPermissionNotGranted", "auth: permission is not granted to the role"
)
PermissionNotGiven = _error("ErrPermissionNotGiven", "auth: permission not given")
AuthNotEnabled = _error("ErrAuthNotEnabled", "auth: authentication is not enabled")
AuthOldRevision = _error("ErrAuthOldRevision", "auth: revision in header is old")
InvalidAuthToken = _error("ErrInvalidAuthToken", "auth: invalid auth token")
InvalidAuthOpts = _error("ErrInvalidAuthOpts", "auth: invalid auth options")
InvalidAuthMgmt = _error("ErrInvalidAuthMgmt", "auth: invalid auth management")
InvalidAuthMethod = _error("ErrInvalidAuthMethod", "auth: invalid auth signature")
MissingKey = _error("ErrMissingKey", "auth: missing key data")
KeyMismatch = _error("ErrKeyMismatch", "auth: public and private keys don't match")
VerifyOnly = _error("ErrVerifyOnly", "auth: token signing attempted with verify-only key")
# The password hasher refused work (its queue is full); not an etcd error:
# the API maps it to etcd's "too many requests" (ResourceExhausted).
TooManyRequests = _error("ErrTooManyRequests", "auth: too many authentication requests")
