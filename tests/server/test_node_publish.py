"""Publishing a member's name and client URLs (etcd's publish) never waits for
a proposal answer that will not come.

A publish entry applied inside a snapshot (a joiner catching up) or dropped by
a leader change never resolves its proposal; the publish used to sit out the
whole request timeout. It now ends as soon as the member table shows the
attributes, and proposes again after a few election timeouts. The driver's
request timeout is raised to an hour here, so the old behaviour would hang
these tests (bounded by their deadlines) instead of passing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from node_harness import InProcessCluster, run

from kvstore.pb import internal_pb2
from kvstore.server.kv_server import KvServer
from kvstore.testing.waiting import async_wait_until

pytestmark = pytest.mark.integration

NEW_URL = "http://127.0.0.1:1"


async def _republish_setup(c: InProcessCluster) -> tuple[Any, list[str], asyncio.Future[Any]]:
    """Member 1 with published attributes, then new client URLs to publish."""
    await c.leader()
    node = c.nodes[1]
    assert node is not None
    await async_wait_until(lambda: node._publish_task.done(), timeout=20, what="first publish")
    node.driver.request_timeout_s = 3600.0
    node.cfg.advertise_client_urls = (NEW_URL,)
    calls: list[str] = []
    never = asyncio.get_running_loop().create_future()  # an answer that never comes
    return node, calls, never


def test_publish_ends_when_the_table_shows_the_attributes(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        node, calls, never = await _republish_setup(c)

        async def lost(kind: str, req: Any) -> Any:
            calls.append(kind)
            return await never

        node.kv.propose = lost  # every proposal of member 1 is lost
        task = asyncio.create_task(node._publish())
        await async_wait_until(lambda: calls, timeout=10, what="publish proposed")
        # The same entry gets applied without member 1's waiter firing (as when
        # it arrives inside a snapshot): here another member proposes it.
        attrs = internal_pb2.MemberAttributes(
            member_id=node.kv.member_id, name="n1", client_urls=[NEW_URL]
        )
        await c.kv(0).propose("member_attributes", attrs)  # member 0: not patched
        await asyncio.wait_for(task, 20)
        assert c.kv(0).members.get(node.kv.member_id).client_urls == [NEW_URL]

    run(tmp_path, body)


def test_a_lost_publish_is_proposed_again(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        node, calls, never = await _republish_setup(c)
        real = KvServer.propose.__get__(node.kv)

        async def first_lost(kind: str, req: Any) -> Any:
            calls.append(kind)
            if len(calls) == 1:
                return await never  # dropped by a leader change, say
            return await real(kind, req)

        node.kv.propose = first_lost
        await asyncio.wait_for(node._publish(), 30)
        assert len(calls) >= 2
        await async_wait_until(
            lambda: c.kv(2).members.get(node.kv.member_id).client_urls == [NEW_URL],
            timeout=20,
            what="new client URLs everywhere",
        )

    run(tmp_path, body)
