"""LeaderMonitor (etcd monitorLeader): streams are canceled only after three
consecutive leaderless checks, a leader seen in between resets the count,
and the monitor task runs only while a stream is registered."""

from __future__ import annotations

import asyncio

from kvstore.api.watch import LeaderMonitor
from kvstore.testing.waiting import async_wait_until


def test_three_consecutive_misses_cancel_every_registered_stream() -> None:
    answers = iter([False, False, True, False, False, False])
    checks: list[bool] = []

    def has_leader() -> bool:
        value = next(answers, True)
        checks.append(value)
        return value

    async def scenario() -> None:
        monitor = LeaderMonitor(has_leader, interval_s=0.0, checks=3)
        lost: list[str] = []
        monitor.register(lambda: lost.append("a"))
        unregister_b = monitor.register(lambda: lost.append("b"))
        monitor.register(lambda: lost.append("c"))
        unregister_b()
        await async_wait_until(lambda: lost, interval=0.001, what="streams canceled")
        assert sorted(lost) == ["a", "c"]
        assert checks == [False, False, True, False, False, False]
        assert monitor.streams == 0
        # Nobody registered: the task ends by itself.
        task = monitor._task
        assert task is not None
        await async_wait_until(task.done, interval=0.001, what="the monitor task to end")

    asyncio.run(asyncio.wait_for(scenario(), 10))
