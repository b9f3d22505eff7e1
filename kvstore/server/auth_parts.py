"""One member's auth parts, built by the composition root (server.assembly).

Owns: `NodeAuth`: the AuthStore (loaded from the data dir, reloaded after a
snapshot install), the PermissionChecker over it, the token provider chosen
by --auth-token (its tokens die when the store invalidates a user or auth is
disabled), the bounded bcrypt PasswordHasher, and the apply pipeline's
permission stage (`check`, the `kvstore.seams.ApplyAuth` seam).
Never: resolves gRPC credentials (kvstore.api.auth does, from these parts),
hashes on the apply path, reads the clock in `check`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from kvstore.auth.checker import NO_AUTH, AuthInfo, PermissionChecker
from kvstore.auth.hasher import PasswordHasher
from kvstore.auth.store import ROOT_USER, AuthStore, StateReader
from kvstore.auth.tokens import DEFAULT_TOKEN_TTL_S, TokenProvider, parse_auth_token


class NodeAuth:
    """Auth state and services of one member. Event-loop thread only."""

    def __init__(
        self,
        backend: StateReader,
        lease_keys: Callable[[int], Iterable[bytes]],
        *,
        auth_token: str = "simple",
        token_ttl_s: float = DEFAULT_TOKEN_TTL_S,
        client_cert_auth: bool = False,
    ) -> None:
        """Raises the auth domain errors of `parse_auth_token` for a bad
        --auth-token (one line for the operator)."""
        self.store = AuthStore()
        self.checker = PermissionChecker(self.store)
        self.tokens: TokenProvider = parse_auth_token(
            auth_token, lambda: self.store.revision, token_ttl_s
        )
        self.store.on_user_invalidated(self.tokens.invalidate_user)
        self.store.on_auth_disabled(self.tokens.disable)
        self.hasher = PasswordHasher()
        self.client_cert_auth = client_cert_auth
        self._lease_keys = lease_keys
        self.store.load(backend)

    def reload(self, backend: StateReader) -> None:
        """After a snapshot install: memory follows disk (tokens of changed
        users die through on_user_invalidated)."""
        self.store.load(backend)

    # ------------------------------------------------ the apply stage (ApplyAuth)
    def check(self, username: str, revision: int, kind: str, request: Any) -> None:
        """etcd's authApplierV3: the request's permissions at apply, against
        the auth revision it was admitted at. Nothing while auth is off."""
        if not self.store.enabled:
            return
        self.checker.check_internal(
            AuthInfo(username, revision), kind, request, lease_keys=self._lease_keys
        )

    def system_caller(self) -> AuthInfo:
        """Who a proposal made outside any RPC acts for (lease expiry,
        auto-compaction, ...): root while auth is on (etcd's auth.WithRoot),
        nobody otherwise. Root exists and holds the root role while enabled."""
        if not self.store.enabled:
            return NO_AUTH
        return AuthInfo(ROOT_USER, self.store.revision)
