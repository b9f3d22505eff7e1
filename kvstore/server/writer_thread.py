"""WriterThread: one long-lived thread that runs the driver's synced storage writes.

Owns: a thread and its job queue; each job's result is handed back to the
event loop as an asyncio future.
Never: runs two jobs at once (writes reach disk in submission order), touches
the event loop from the thread except through `call_soon_threadsafe`.

Why not `asyncio.to_thread`: it builds a concurrent.futures.Future (with its
Condition), copies the context and goes through the executor's queue for every
call — about 100 us of CPU per hand-off under uvloop, against about 25 us for
this queue + `call_soon_threadsafe`. The driver hands off once per Ready, so
that difference is paid on every batch of every member.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = object()


class WriterThread:
    def __init__(self, name: str = "raft-writer") -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = False

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run `fn(*args)` on the writer thread; the future resolves on this loop."""
        loop = asyncio.get_running_loop()
        if not self._started:
            self._started = True
            self._thread.start()
        fut: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((loop, fut, fn, args))
        return fut

    def stop(self) -> None:
        """Finish queued jobs, then end the thread (does not wait for it)."""
        if self._started:
            self._jobs.put(_STOP)

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            loop, fut, fn, args = job
            try:
                result = fn(*args)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                _call_soon(loop, _fail, fut, exc)
            else:
                _call_soon(loop, _resolve, fut, result)


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    # A closed loop raises RuntimeError: nobody awaits the result any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn, *args)


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)
