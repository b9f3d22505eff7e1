"""Who a proposal is made for: the caller of the RPC being served.

Owns: `CALLER`, a context variable the API edge sets (per RPC task) to a
callable that resolves the caller's credentials again (etcd's
AuthInfoFromCtx), and which the proposer reads to stamp `username` /
`auth_revision` on the replicated request. A callable, not a value, so the
proposer can re-resolve after AuthOldRevision (etcd's raftRequest loop: a
simple token then carries the new revision; a JWT keeps its own and the
error reaches the client, which re-authenticates).
Never: resolves anything itself, imports grpc.

A proposal made outside any RPC (lease expiry, auto-compaction, member
attributes, checkpoints) sees None here: the proposer then acts for the
member itself (root while auth is enabled, as etcd's auth.WithRoot).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable

from kvstore.auth.checker import AuthInfo

Resolve = Callable[[], AuthInfo]

CALLER: contextvars.ContextVar[Resolve | None] = contextvars.ContextVar(
    "kvstore_auth_caller", default=None
)


def bind_caller(resolve: Resolve) -> None:
    """Proposals made from the current task on are made for `resolve()`."""
    CALLER.set(resolve)
