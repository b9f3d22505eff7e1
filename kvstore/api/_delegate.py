"""Calling facade methods that may be sync or async from servicers.

Owns: `maybe_await` (KvServer answers status / member_list / hash_kv
synchronously; a facade may answer them asynchronously).
Never: holds state or catches errors.
"""

from __future__ import annotations

import inspect
from typing import Any


async def maybe_await(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value
