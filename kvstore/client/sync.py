"""`Client`: the blocking client, a thin wrapper over `AsyncClient`.

Owns: one private event loop running in a daemon thread, and `_Blocking`, a
proxy that turns an async object (AsyncClient, Watcher, Lease, Lock,
Election, ServiceRegistration) into a blocking one: coroutine methods run on
the loop and wait for the result; `with` maps to `async with`; iteration maps
to `async for`. There is no second implementation of any client logic.

Must never: call the loop's objects from the caller's thread directly (every
access goes through `run_coroutine_threadsafe`), or leave the loop thread
running after `close()`.

Example::

    from kvstore.client import Client, Compare, Op

    with Client(["127.0.0.1:2379"]) as client:
        client.put("k", "v")
        print(client.get("k").value)
        with client.watch("k") as watcher:
            for event in watcher:
                ...
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from kvstore.client.aio import AsyncClient
from kvstore.client.auth import ClientTLS
from kvstore.client.config_view import (
    ConfigView,
    OnChange,
    OnError,
    Schema,
    SyncConfigView,
    open_sync_view,
)
from kvstore.client.configtree import Decoder
from kvstore.client.ops import KeyLike, Txn

T = TypeVar("T")

# Methods whose result is an async helper object to wrap (not a coroutine).
_WRAP_RESULT = {"watch", "lease", "register_service", "lock", "election", "observe"}


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="kvstore-client-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        fut = asyncio.run_coroutine_threadsafe(_as_coroutine(coro), self.loop)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


async def _as_coroutine(aw: Awaitable[T]) -> T:
    return await aw


class _Blocking:
    """Blocking view of an async object living on `runner`'s loop."""

    def __init__(self, target: Any, runner: _LoopThread) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if inspect.iscoroutinefunction(attr):
            return _blocking_method(attr, self._runner)
        if inspect.isasyncgenfunction(attr):
            return _blocking_iter_method(attr, self._runner)
        if name in _WRAP_RESULT and callable(attr):

            @functools.wraps(attr)
            def wrap(*args: Any, **kwargs: Any) -> _Blocking:
                return _Blocking(attr(*args, **kwargs), self._runner)

            return wrap
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    def __repr__(self) -> str:
        return f"<blocking {self._target!r}>"

    def __enter__(self) -> Any:
        result = self._runner.run(self._target.__aenter__())
        return self if result is self._target else _wrap_value(result, self._runner)

    def __exit__(self, *exc: Any) -> None:
        self._runner.run(self._target.__aexit__(*exc))

    def __iter__(self) -> _Blocking:
        return self

    def __next__(self) -> Any:
        try:
            return self._runner.run(self._target.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def next(self, timeout: float | None = None) -> Any:
        """Next item, waiting at most `timeout` seconds (TimeoutError)."""
        try:
            return self._runner.run(asyncio.wait_for(self._target.__anext__(), timeout))
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        """Close an iterator (watcher / observer)."""
        closer = getattr(self._target, "aclose", None)
        if closer is not None:
            self._runner.run(closer())


def _wrap_value(value: Any, runner: _LoopThread) -> Any:
    if hasattr(value, "__aenter__") or hasattr(value, "__anext__"):
        return _Blocking(value, runner)
    return value


def _blocking_method(method: Callable[..., Awaitable[T]], runner: _LoopThread):
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return _wrap_value(runner.run(method(*args, **kwargs)), runner)

    return call


def _blocking_iter_method(method: Callable[..., Any], runner: _LoopThread):
    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> _Blocking:
        return _Blocking(method(*args, **kwargs), runner)

    return call


class Client(_Blocking):
    """Blocking client with the same methods and arguments as `AsyncClient`.

    Results are the same typed objects; `watch()` returns an iterator usable
    in `with`, `lease()` / `lock()` / `register_service()` are `with` blocks,
    `txn()...commit()` returns the TxnResult directly. Construction is cheap
    (channels connect on first use); `close()` (or `with`) releases them.
    Thread-safe: calls from several threads are all executed on the client's
    loop thread.
    """

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        dial_timeout: float = 2.0,
        command_timeout: float = 5.0,
        tls: ClientTLS | bool | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        runner = _LoopThread()
        # Build the AsyncClient on its loop: grpc.aio objects belong to one loop.
        aio = runner.run(
            _make_async(
                endpoints,
                dial_timeout=dial_timeout,
                command_timeout=command_timeout,
                tls=tls,
                user=user,
                password=password,
            )
        )
        super().__init__(aio, runner)
        # Open config views by id (a Mapping is unhashable): closed with the client.
        object.__setattr__(self, "_views", weakref.WeakValueDictionary())

    @property
    def endpoints(self) -> list[str]:
        return self._target.endpoints

    def txn(self, *, timeout: float | None = None) -> Txn:
        """Start a transaction; `.commit()` blocks and returns a TxnResult."""
        aio: AsyncClient = self._target
        return Txn(lambda req: self._runner.run(aio.txn_request(req, timeout=timeout)))

    def config_view(
        self,
        prefix: KeyLike,
        *,
        schema: Schema | None = None,
        decode: str | Decoder = "yaml",
        on_change: OnChange | None = None,
        on_error: OnError | None = None,
        reconnect_timeout: float = 60.0,
    ) -> SyncConfigView:
        """Blocking `AsyncClient.config_view`: a live read-only mapping of the
        keys under `prefix`. Callbacks run in order on the view's own thread
        (they may call this client). Close with `view.close()` or `with`."""
        aio: AsyncClient = self._target

        async def make(change: OnChange | None, error: OnError | None) -> ConfigView:
            return await aio.config_view(
                prefix,
                schema=schema,
                decode=decode,
                on_change=change,
                on_error=error,
                reconnect_timeout=reconnect_timeout,
            )

        view = open_sync_view(self._runner, make, on_change, on_error)
        self._views[id(view)] = view
        return view

    def close(self) -> None:
        # Views still open stop first: their tasks and threads live on this loop.
        for view in list(self._views.values()):
            view.close()
        if not self._runner.loop.is_closed():
            self._runner.run(self._target.close())
            self._runner.stop()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


async def _make_async(endpoints: Any, **kwargs: Any) -> AsyncClient:
    return AsyncClient(endpoints, **kwargs)
