"""Retry policy: reads fail over on UNAVAILABLE, writes are never resent once sent.

A fake KV server on loopback answers every call with UNAVAILABLE "etcdserver:
request timed out" (an ambiguous outcome for writes) and counts calls; the
real cluster is the second endpoint.
"""

from __future__ import annotations

import asyncio

import grpc
import pytest

from kvstore.client import AsyncClient, Client, errors
from kvstore.pb import rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until


class _TimingOutKV(rpc_pb2_grpc.KVServicer):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def _fail(self, name: str, context) -> None:
        self.calls.append(name)
        await context.abort(grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out")

    async def Range(self, request, context):
        await self._fail("Range", context)

    async def Put(self, request, context):
        await self._fail("Put", context)

    async def Txn(self, request, context):
        await self._fail("Txn", context)


async def _with_fake(real_endpoints, body):
    server = grpc.aio.server()
    fake = _TimingOutKV()
    rpc_pb2_grpc.add_KVServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncClient([f"127.0.0.1:{port}", *real_endpoints]) as c:
            return await body(c, fake)
    finally:
        await server.stop(None)


def test_read_fails_over_after_unavailable(cluster, ns):
    async def body(c, fake):
        await c.transport.connect()  # pin the fake (first endpoint)
        r = await c.get(ns + "k")
        return r, fake.calls

    r, calls = asyncio.run(asyncio.wait_for(_with_fake(cluster.endpoints, body), 30))
    assert calls == ["Range"]  # tried once on the fake, then answered elsewhere
    assert r.count == 0


def test_write_is_not_resent_after_ambiguous_failure(cluster, ns):
    async def body(c, fake):
        with pytest.raises(errors.RequestTimeoutError):
            await c.put(ns + "k", "v")
        # The failure moved the pin: the next call goes to a real member.
        return fake.calls, (await c.get(ns + "k")).count

    calls, count = asyncio.run(asyncio.wait_for(_with_fake(cluster.endpoints, body), 30))
    assert calls == ["Put"]  # sent once, not resent to another member
    assert count == 0  # so the write never reached the real cluster


def test_write_fails_over_when_first_endpoint_never_connects(cluster, ns):
    dead = f"127.0.0.1:{free_port()}"
    with Client([dead, *cluster.endpoints], dial_timeout=0.5) as c:
        c.put(ns + "k", "v")
        assert c.get(ns + "k").value == b"v"
        assert c.endpoints[0] == dead


@pytest.mark.integration
def test_reads_and_writes_survive_a_killed_member(cluster, ns):
    with Client(cluster.endpoints, dial_timeout=1.0, command_timeout=15) as c:
        c.put(ns + "k", "before")
        victim = cluster.endpoints.index(c.status().endpoint)
        cluster.kill(victim)
        try:
            assert c.get(ns + "k").value == b"before"
            c.put(ns + "k", "after")  # pinned endpoint is dead: never sent there
            assert c.get(ns + "k").value == b"after"
        finally:
            cluster.restart(victim)
            wait_until(
                lambda: c.status(cluster.endpoints[victim]).raft_index > 0,
                timeout=30,
                what="restarted member serving",
            )
