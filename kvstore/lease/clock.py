"""Clock: the only way lease code learns the time (injected, so tests use FakeClock).

Owns: the monotonic production clock and a manual `FakeClock` for
deterministic tests (both implement `kvstore.seams.Clock`).
Never: used by anything that runs inside apply (apply has no clock).
"""

from __future__ import annotations

import time

from kvstore.seams import Clock

__all__ = ["Clock", "FakeClock", "MonotonicClock"]


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()


class FakeClock:
    """Time moves only when a test calls `advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._now += seconds
