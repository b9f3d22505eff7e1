"""Auto-compaction: etcd's `--auto-compaction-mode` / `--auto-compaction-retention`.

Owns: parsing the retention flag and the two policies, as pure logic driven
by an injected clock (`AutoCompactor.poll(now)` -> revision to compact or
None), plus `run()`, the asyncio loop that polls and proposes the compaction
through the normal `Compact` path while this member is the leader (etcd's
compactor pauses on followers so only one member proposes).

Policies (etcd 3.4 semantics):
- revision: every 5 minutes compact to `current_revision - retention` (if
  positive and not already compacted there);
- periodic (retention is a duration, a bare number means hours): sample the
  current revision every `min(retention, 1h) / 10`; once `min(retention, 1h)`
  has passed since the last compaction, compact to the newest sampled revision
  that is at least `retention` old, so history younger than `retention` stays.
Never: compacts to a revision above the current one, or twice to the same one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kvstore import errors

log = logging.getLogger(__name__)

MODES = ("periodic", "revision")
REVISION_INTERVAL_S = 300.0
HOUR_S = 3600.0
RETRY_DIVISOR = 10
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")


class CompactionConfigError(ValueError):
    pass


def parse_retention(mode: str, value: str) -> float:
    """Retention as seconds (periodic) or revisions (revision); 0 disables."""
    if mode not in MODES:
        raise CompactionConfigError(
            f"--auto-compaction-mode must be 'periodic' or 'revision' (got {mode!r})"
        )
    value = (value or "0").strip()
    if mode == "revision":
        if not value.isdigit():
            raise CompactionConfigError(
                f"--auto-compaction-retention {value!r}: revision mode needs a revision count"
            )
        return float(int(value))
    if value.isdigit():
        return int(value) * HOUR_S  # etcd: a bare number means hours
    pos = 0
    total = 0.0
    for m in _DURATION.finditer(value):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if pos != len(value) or pos == 0:
        raise CompactionConfigError(
            f"--auto-compaction-retention {value!r}: expected hours or a duration like 30m, 1h30m"
        )
    return total


class AutoCompactor:
    """Decides when and where to compact. `poll` is pure given its inputs."""

    def __init__(
        self,
        mode: str,
        retention: float,
        current_revision: Callable[[], int],
        *,
        start_time: float = 0.0,
    ) -> None:
        if mode not in MODES:
            raise CompactionConfigError(f"unknown auto-compaction mode {mode!r}")
        self.mode = mode
        self.retention = retention
        self._current = current_revision
        self._last_compacted = 0
        self._last_compact_time = start_time
        self._next_poll = start_time
        self._samples: collections.deque[tuple[float, int]] = collections.deque()

    @property
    def enabled(self) -> bool:
        return self.retention > 0

    @property
    def interval(self) -> float:
        """Seconds between polls."""
        if self.mode == "revision":
            return REVISION_INTERVAL_S
        return min(self.retention, HOUR_S) / RETRY_DIVISOR

    def reset(self, now: float) -> None:
        """Forget samples (this member just became leader: etcd's Resume)."""
        self._samples.clear()
        self._last_compact_time = now
        self._next_poll = now

    def poll(self, now: float) -> int | None:
        """The revision to compact to now, or None."""
        if not self.enabled or now < self._next_poll:
            return None
        self._next_poll = now + self.interval
        cur = self._current()
        if self.mode == "revision":
            rev = cur - int(self.retention)
            if rev <= 0 or rev <= self._last_compacted:
                return None
            return rev
        self._samples.append((now, cur))
        if now - self._last_compact_time < min(self.retention, HOUR_S):
            return None
        cutoff = now - self.retention
        target = None
        while self._samples and self._samples[0][0] <= cutoff + 1e-9:
            target = self._samples.popleft()[1]
        if target is None or target <= self._last_compacted:
            return None
        return target

    def compacted(self, revision: int, now: float) -> None:
        """Record a successful (or already done) compaction."""
        self._last_compacted = max(self._last_compacted, revision)
        self._last_compact_time = now

    async def run(
        self,
        compact: Callable[[int], Awaitable[Any]],
        is_leader: Callable[[], bool],
        clock: Callable[[], float],
        *,
        tick_s: float | None = None,
    ) -> None:
        """Poll forever (cancel to stop); compact only while leader."""
        was_leader = False
        while True:
            now = clock()
            leader = is_leader()
            if leader and not was_leader:
                self.reset(now)
            was_leader = leader
            rev = self.poll(now) if leader else None
            if rev is not None:
                try:
                    await compact(rev)
                    log.info("auto-compaction: compacted to revision %d", rev)
                    self.compacted(rev, clock())
                except errors.EtcdError as exc:
                    if exc == errors.COMPACTED():
                        self.compacted(rev, clock())
                    else:
                        log.warning("auto-compaction to %d failed: %s", rev, exc.message)
            await asyncio.sleep(tick_s if tick_s is not None else min(self.interval, 1.0))
