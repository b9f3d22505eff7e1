"""Three real RaftCores over GrpcTransport and RocksLogStorage on 127.0.0.1.

A deliberately tiny driver (tick, step inbox, Ready: send / persist / send-after /
record commits / advance) checks that the log storage and the transport satisfy
what the real core expects: a leader is elected, proposals commit on every node,
and a node restarted from its RocksDB catches up. The real driver lives in
kvstore/server/node.py; this one exists only to test the seams.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import grpc
import pytest

from kvstore.raft.types import ConfState, EntryType, Message, Role
from kvstore.storage.backend import Backend
from kvstore.storage.raft_log import RocksLogStorage
from kvstore.testing.waiting import async_wait_until
from kvstore.transport import SERVER_OPTIONS, GrpcTransport
from kvstore.transport.peer_client import PeerChannels

core_mod = pytest.importorskip("kvstore.raft.core")

pytestmark = pytest.mark.integration

IDS = (1, 2, 3)
TICK_S = 0.01


class MiniNode:
    def __init__(self, node_id: int, path: Path, port: int, seed: int) -> None:
        self.id = node_id
        self.path = path
        self.port = port
        self.seed = seed
        self.committed: list[bytes] = []
        self.inbox: list[Message] = []
        self.backend: Backend | None = None
        self.core = None
        self.server: grpc.aio.Server | None = None
        self.transport: GrpcTransport | None = None
        self.task: asyncio.Task[None] | None = None

    async def open(self, bootstrap: bool) -> None:
        """Open storage, build the core and bind the peer server (port 0 the first time)."""
        self.backend = Backend.open(self.path)
        storage = RocksLogStorage(self.backend)
        if bootstrap:
            storage.set_conf_state(ConfState(voters=IDS))
        self.storage = storage
        cfg = core_mod.RaftConfig(id=self.id, election_ticks=10, heartbeat_ticks=1)
        self.core = core_mod.RaftCore(cfg, storage, random.Random(self.seed))
        self.transport = GrpcTransport(
            self.id,
            7,
            self.inbox.extend,
            channels=PeerChannels(credentials=None),
            on_unreachable=self.core.report_unreachable,
        )
        self.server = grpc.aio.server(options=SERVER_OPTIONS)
        self.transport.add_to_server(self.server)
        self.port = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def connect(self, peers: dict[int, str]) -> None:
        self.transport.set_peers(peers)
        await self.transport.start()
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        core = self.core
        while True:
            await asyncio.sleep(TICK_S)
            core.tick()
            msgs, self.inbox[:] = list(self.inbox), []
            for m in msgs:
                core.step(m)
            while core.has_ready():
                rd = core.ready()
                self.transport.send(rd.messages)
                snap = rd.snapshot if rd.snapshot is not None and not rd.snapshot.is_empty else None
                if rd.entries or rd.hard_state is not None or snap is not None:
                    self.storage.save(rd.hard_state, rd.entries, snap, rd.must_sync)
                self.transport.send(rd.messages_after_persist)
                self.committed.extend(
                    e.data for e in rd.committed_entries if e.type == EntryType.NORMAL and e.data
                )
                core.advance(rd)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.transport.stop()
        await self.server.stop(grace=None)
        self.backend.close()


def test_cluster_elects_commits_and_restarted_node_catches_up(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = [MiniNode(i, tmp_path / f"n{i}", 0, seed=100 + i) for i in IDS]
        try:
            # Bind every server first (port 0), then point the transports at each other.
            for n in nodes:
                await n.open(bootstrap=True)
            urls = {n.id: f"http://127.0.0.1:{n.port}" for n in nodes}
            for n in nodes:
                await n.connect(urls)

            def leader() -> MiniNode | None:
                leaders = [n for n in nodes if n.core is not None and n.core.role == Role.LEADER]
                return leaders[0] if len(leaders) == 1 else None

            lead = await async_wait_until(leader, timeout=20, what="one leader")
            for i in range(50):
                lead.core.propose(b"v%d" % i)
            want = [b"v%d" % i for i in range(50)]
            await async_wait_until(
                lambda: all(n.committed == want for n in nodes), timeout=20, what="all commit"
            )
            # Restart a follower from disk; it must keep its log and catch up on new entries.
            follower = next(n for n in nodes if n is not lead)
            last_before = follower.storage.last_index()
            await follower.stop()
            await async_wait_until(
                lambda: not lead.transport.reachable(follower.id), what="follower down"
            )
            for i in range(50, 60):
                lead.core.propose(b"v%d" % i)
            follower.committed = []
            follower.inbox = []
            await follower.open(bootstrap=False)  # same port as before
            await follower.connect(urls)
            assert follower.storage.last_index() >= last_before
            assert follower.storage.entries(last_before, last_before + 1)
            want = [b"v%d" % i for i in range(60)]
            await async_wait_until(
                lambda: follower.committed == want, timeout=20, what="restarted node catches up"
            )
        finally:
            for n in nodes:
                if n.backend is not None and n.task is not None and not n.task.done():
                    await n.stop()

    asyncio.run(asyncio.wait_for(body(), 90))
