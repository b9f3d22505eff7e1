"""Removing the leader (in-process nodes over real gRPC on loopback): the
leader commits and applies its own removal, steps down (Raft thesis §4.2.2)
and knows it was removed (KvNode.removed, etcd stops such a member); the two
others elect a leader among themselves and keep committing writes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from node_harness import InProcessCluster, put, run

from kvstore.pb import rpc_pb2
from kvstore.raft.types import Role

pytestmark = pytest.mark.integration


def test_removing_the_leader(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        kv = c.kv(leader)
        await kv.put(put(b"before", b"1"))
        node = c.nodes[leader]
        assert node is not None
        removed_id = kv.member_id
        resp = await kv.member_remove(rpc_pb2.MemberRemoveRequest(ID=removed_id))
        assert removed_id not in {m.ID for m in resp.members}
        await asyncio.wait_for(node.removed.wait(), 20)
        assert kv.driver.role != Role.LEADER
        rest = [i for i in range(3) if i != leader]
        new_leader = await c.leader(exclude=(leader,))
        assert new_leader in rest
        r = await c.kv(rest[0]).put(put(b"after", b"2"))
        assert r.header.member_id == c.kv(rest[0]).member_id
        for i in rest:
            members = c.kv(i).members
            assert removed_id not in members and members.is_removed(removed_id)
            assert len(members) == 2
        await c.stop_node(leader)

    run(tmp_path, body)
