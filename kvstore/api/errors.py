"""The one place where servicer exceptions become gRPC statuses.

Owns: `grpc_errors`, the decorator every unary servicer method wears.
`kvstore.errors.EtcdError` -> `context.abort(e.code, e.message)` with the
byte-exact etcd message (clients match on it); anything unexpected ->
INTERNAL with a short message while the traceback goes to the server log.
Never: lets an exception escape to grpc (which would log it and answer
UNKNOWN with the exception text), never sends a traceback to a client,
never turns an unexpected error into UNAVAILABLE (clients would retry a
write whose outcome is unknown).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from kvstore import errors

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "kvstore: internal error"

R = TypeVar("R")
Handler = Callable[[Any, Any, grpc.aio.ServicerContext], Awaitable[R]]


async def abort_with(context: grpc.aio.ServicerContext, exc: BaseException, method: str) -> None:
    """Abort the call for `exc`; always raises (grpc.aio.AbortError)."""
    if isinstance(exc, errors.EtcdError):
        await context.abort(exc.code, exc.message)
    log.error("unexpected error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"{INTERNAL_MESSAGE} ({type(exc).__name__})")


def grpc_errors(fn: Handler[R]) -> Handler[R]:
    """Decorate `async def Method(self, request, context)` with the error mapping.

    The happy path costs one extra frame and a try block (free in 3.11)."""
    method = fn.__qualname__

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> R:
        try:
            return await fn(self, request, context)
        except (grpc.aio.AbortError, asyncio.CancelledError):
            # Already a status (the method aborted itself) / the client went away.
            raise
        except Exception as exc:  # noqa: BLE001 - mapped, logged, never leaked
            await abort_with(context, exc, method)
            raise AssertionError("unreachable: context.abort raises") from exc

    return wrapper


async def unimplemented(context: grpc.aio.ServicerContext, method: str) -> None:
    """Answer UNIMPLEMENTED for an RPC this server does not offer (yet)."""
    await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"kvstore: {method} is not implemented")
