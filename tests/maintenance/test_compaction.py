"""Auto-compaction policies with an injected clock (no sleeping)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kvstore.maintenance.compaction import (
    AutoCompactor,
    CompactionConfigError,
    parse_retention,
)
from kvstore.testing.waiting import async_wait_until


def test_parse_retention() -> None:
    assert parse_retention("periodic", "1") == 3600
    assert parse_retention("periodic", "30m") == 1800
    assert parse_retention("periodic", "1h30m") == 5400
    assert parse_retention("periodic", "500ms") == 0.5
    assert parse_retention("periodic", "0") == 0
    assert parse_retention("revision", "1000") == 1000
    for mode, bad in [("revision", "1h"), ("periodic", "abc"), ("periodic", "5x"), ("x", "1")]:
        with pytest.raises(CompactionConfigError):
            parse_retention(mode, bad)


def test_revision_mode_keeps_retention_revisions() -> None:
    rev = [10]
    c = AutoCompactor("revision", 100, lambda: rev[0])
    assert c.poll(0) is None  # not enough history
    rev[0] = 1000
    assert c.poll(1) is None  # next poll only after 5 minutes
    assert c.poll(300) == 900
    c.compacted(900, 300)
    assert c.poll(600) is None  # nothing new
    rev[0] = 1500
    assert c.poll(900) == 1400


def test_periodic_mode_compacts_to_revision_retention_ago() -> None:
    rev = [1]
    c = AutoCompactor("periodic", 10.0, lambda: rev[0])
    assert c.interval == 1.0
    got = []
    for t in range(0, 31):
        rev[0] = 100 + t * 10  # revision grows 10 per second
        target = c.poll(float(t))
        if target is not None:
            got.append((t, target))
            c.compacted(target, float(t))
    # First at t=10 to the revision sampled at t=0, then every 10 s.
    assert got == [(10, 100), (20, 200), (30, 300)]


def test_run_compacts_only_while_leader() -> None:
    async def scenario() -> list[int]:
        now = [0.0]
        rev = [500]
        leader = [False]
        done: list[int] = []
        c = AutoCompactor("revision", 100, lambda: rev[0])

        async def compact(r: int) -> None:
            done.append(r)

        asked: list[bool] = []

        def is_leader() -> bool:
            asked.append(leader[0])
            return leader[0]

        task = asyncio.create_task(c.run(compact, is_leader, lambda: now[0], tick_s=0))
        # Many polls as a follower (each asks is_leader) ...
        await async_wait_until(lambda: len(asked) >= 20, interval=0.001, what="20 polls")
        assert done == []  # follower: never compacts
        leader[0] = True
        # ... then it compacts once it leads.
        await async_wait_until(lambda: done, interval=0.001, what="a compaction as leader")
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return done

    assert asyncio.run(asyncio.wait_for(scenario(), 10)) == [400]
