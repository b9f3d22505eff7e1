"""Calling optional facade methods from servicers.

Owns: `maybe_await` (facade methods may be sync or async) and `optional`,
which finds an optional facade method by name. Convention for RPCs other
issues fill in later: the facade method is the snake_case RPC name taking
the request message (`kv.hash_kv(req)`, `kv.member_add(req)`, ...) and
returning the response (or, for Snapshot, an async iterator of responses).
While the facade lacks it the RPC answers UNIMPLEMENTED.
Never: holds state or catches errors.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


def optional(kv: Any, name: str) -> Callable[..., Any] | None:
    fn = getattr(kv, name, None)
    return fn if callable(fn) else None
