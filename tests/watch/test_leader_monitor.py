"""LeaderMonitor (etcd monitorLeader): streams are canceled only after three
consecutive leaderless checks, a leader seen in between resets the count,
and the monitor task runs only while a stream is registered."""

from __future__ import annotations

import asyncio

from kvstore.api.watch import LeaderMonitor


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
        for _ in range(200):  # bounded: each check is one loop iteration
            if lost:
                break
            await asyncio.sleep(0)
        assert sorted(lost) == ["a", "c"]
        assert checks == [False, False, True, False, False, False]
        assert monitor.streams == 0
        for _ in range(5):  # nobody registered: the task ends by itself
            await asyncio.sleep(0)
        assert monitor._task is not None and monitor._task.done()

    asyncio.run(asyncio.wait_for(scenario(), 10))
