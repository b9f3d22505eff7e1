"""Authentication and role-based access control, as etcd 3.4 (pure domain).

- store.py    AuthStore: replicated users / roles / permissions / enabled flag /
              auth revision, applied from committed requests, dump / load
- ranges.py   key-range permission sets (etcd's unifiedRangePermissions)
- checker.py  PermissionChecker + AuthInfo: who may run which request
- hasher.py   PasswordHasher: bcrypt off the loop with bounded concurrency
- tokens.py   simple / jwt token providers, --auth-token parsing
- errors.py   AuthError subclasses named after etcd's errors

Nothing here imports grpc or touches the network; the API layer maps
AuthError to etcd's status codes (kvstore/api/auth_errors.py).
"""

from kvstore.auth.checker import NO_AUTH, AuthInfo, PermissionChecker
from kvstore.auth.hasher import PasswordHasher
from kvstore.auth.store import ROOT_ROLE, ROOT_USER, AuthState, AuthStore
from kvstore.auth.tokens import (
    JwtTokenProvider,
    SimpleTokenProvider,
    TokenProvider,
    parse_auth_token,
)

__all__ = [
    "NO_AUTH",
    "ROOT_ROLE",
    "ROOT_USER",
    "AuthInfo",
    "AuthState",
    "AuthStore",
    "JwtTokenProvider",
    "PasswordHasher",
    "PermissionChecker",
    "SimpleTokenProvider",
    "TokenProvider",
    "parse_auth_token",
]
