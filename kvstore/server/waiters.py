"""Futures that connect client requests to the apply loop.

Owns: ProposalWaiters (request id -> Future resolved when the entry carrying
that id is applied) and AppliedIndexWaiter (wake readers once the applied
index reaches theirs).
Never: touches Raft or storage. Futures are resolved only from the driver
task; a result or error is set at most once (cancelled futures are skipped).

Request ids are unique per node and across restarts of that node:
high 16 bits from the member id's low 16 bits, low 48 bits a counter seeded
from the clock (etcd's idutil.Generator layout)
the caller passes in (so ids from a previous run are not reused while their
entries may still be in the log).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any


class ProposalWaiters:
    def __init__(self, member_id: int, seed: int) -> None:
        prefix = member_id & 0xFFFF
        self._base = prefix << 48
        self._counter = itertools.count((seed & ((1 << 40) - 1)) << 8)
        self._futures: dict[int, asyncio.Future[Any]] = {}

    def __len__(self) -> int:
        return len(self._futures)

    def next_id(self) -> int:
        return self._base | (next(self._counter) & ((1 << 48) - 1))

    def register(self, request_id: int) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._futures[request_id] = fut
        return fut

    def has(self, request_id: int) -> bool:
        return request_id in self._futures

    def discard(self, request_id: int) -> None:
        self._futures.pop(request_id, None)

    def trigger(self, request_id: int, result: Any) -> None:
        fut = self._futures.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(result)

    def fail(self, request_id: int, exc: BaseException) -> None:
        fut = self._futures.pop(request_id, None)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def fail_all(self, exc: BaseException) -> None:
        futures, self._futures = self._futures, {}
        for fut in futures.values():
            if not fut.done():
                fut.set_exception(exc)


class AppliedIndexWaiter:
    """Wait until the applied index reaches a target. `advance` is O(k log n)."""

    def __init__(self, applied: int = 0) -> None:
        self.applied = applied
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def wait(self, index: int) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if index <= self.applied:
            fut.set_result(None)
        else:
            heapq.heappush(self._heap, (index, next(self._seq), fut))
        return fut

    def advance(self, applied: int) -> None:
        self.applied = max(self.applied, applied)
        heap = self._heap
        while heap and heap[0][0] <= self.applied:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)

    def fail_all(self, exc: BaseException) -> None:
        heap, self._heap = self._heap, []
        for _, _, fut in heap:
            if not fut.done():
                fut.set_exception(exc)
