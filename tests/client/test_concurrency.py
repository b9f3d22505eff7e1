"""Lock and election recipes: mutual exclusion, fencing tokens, leadership order."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess

import pytest

from kvstore.client import AsyncClient, Compare, Op
from kvstore.testing.waiting import async_wait_until


def test_lock_is_exclusive_and_fencing_token_increases(cluster, ns):
    name = ns + "lock"

    async def main():
        async with AsyncClient(cluster.endpoints) as c:
            first = c.lock(name, ttl=10)
            held1 = await first.acquire()
            assert held1.key.startswith((name + "/").encode())
            assert (await c.get(held1.key)).kv.create_revision == held1.revision
            second = c.lock(name, ttl=10)
            waiter = asyncio.ensure_future(second.acquire())

            async def both_enqueued() -> bool:
                return (await c.get(name + "/", prefix=True, count_only=True)).count == 2

            # The second contender has enqueued its key (and waits behind ours).
            await async_wait_until(both_enqueued, what="two lock keys")
            done, _ = await asyncio.wait({waiter}, timeout=1.0)
            assert not done, "second contender acquired a held lock"
            # A write fenced by the holder's token succeeds while it holds the lock.
            fenced = (
                await c.txn()
                .if_(Compare.create(held1.key) == held1.revision)
                .then(Op.put(ns + "resource", "by-1"))
                .commit()
            )
            assert fenced.succeeded
            await first.release()
            held2 = await asyncio.wait_for(waiter, 15)
            assert held2.revision > held1.revision
            # The old holder's token no longer passes the fence.
            stale = (
                await c.txn()
                .if_(Compare.create(held1.key) == held1.revision)
                .then(Op.put(ns + "resource", "by-1-late"))
                .commit()
            )
            assert not stale.succeeded
            await second.release()
            assert (await c.get(name + "/", prefix=True)).count == 0

    asyncio.run(asyncio.wait_for(main(), 60))


def test_sync_lock_context_manager(client, ns):
    with client.lock(ns + "l", ttl=5) as held:
        assert client.get(held.key).count == 1
    assert client.get(ns + "l/", prefix=True).count == 0


def test_election_campaign_proclaim_observe_resign(cluster, ns):
    name = ns + "elect"

    async def main():
        async with AsyncClient(cluster.endpoints) as c:
            e1, e2 = c.election(name, ttl=10), c.election(name, ttl=10)
            leader1 = await e1.campaign(b"node-1")
            assert (await e1.leader()).value == b"node-1"
            observed = []
            observer = e2.observe()
            observed.append((await asyncio.wait_for(observer.__anext__(), 10)).value)
            candidate = asyncio.ensure_future(e2.campaign(b"node-2"))
            done, _ = await asyncio.wait({candidate}, timeout=1.0)
            assert not done, "second candidate elected while first leads"
            await e1.proclaim(b"node-1b")
            observed.append((await asyncio.wait_for(observer.__anext__(), 10)).value)
            await e1.resign()
            leader2 = await asyncio.wait_for(candidate, 15)
            assert leader2.revision > leader1.revision
            observed.append((await asyncio.wait_for(observer.__anext__(), 10)).value)
            await observer.aclose()
            assert (await e2.leader()).key == leader2.key
            await e2.resign()
            return observed

    assert asyncio.run(asyncio.wait_for(main(), 60)) == [b"node-1", b"node-1b", b"node-2"]


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_lock_interoperates_with_etcdctl_lock(cluster, ns):
    """Same key layout as etcd's concurrency.Mutex: an `etcdctl lock` holder excludes us."""
    name = ns + "shared"
    holder = subprocess.Popen(
        ["etcdctl", "--endpoints", ",".join(cluster.endpoints), "lock", name],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )
    try:
        etcdctl_key = holder.stdout.readline().strip()
        assert etcdctl_key.startswith(name + "/")

        async def main():
            async with AsyncClient(cluster.endpoints) as c:
                lock = c.lock(name, ttl=10)
                waiter = asyncio.ensure_future(lock.acquire())
                done, _ = await asyncio.wait({waiter}, timeout=1.0)
                assert not done, "acquired a lock held by etcdctl"
                holder.send_signal(signal.SIGINT)  # etcdctl unlocks on SIGINT
                held = await asyncio.wait_for(waiter, 15)
                assert held.key != etcdctl_key.encode()
                await lock.release()

        asyncio.run(asyncio.wait_for(main(), 30))
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(timeout=10)
