"""Lease component harness: members = MvccStore + Lessor on RocksDB under tmp_path,
sharing one FakeClock; a proposal is applied on every member in order, as Raft
would, so leader changes can be simulated by switching `cluster.leader`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import errors
from kvstore.lease import FakeClock, LeaderLeases, LeaseService, Lessor
from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2
from kvstore.server.applier import apply_handlers
from kvstore.storage.backend import Backend
from tests.watch.local_node import no_leader_forwarding


class Member:
    def __init__(self, cluster: Cluster, path: Path) -> None:
        self.cluster = cluster
        self.path = path
        self.open()

    def open(self) -> None:
        self.backend = Backend.open(self.path)
        self.lessor = Lessor()
        self.store = MvccStore(self.backend, self.lessor)
        self.lessor.recover(self.backend, self.store.leased_keys())
        self.leader = LeaderLeases(
            self.lessor, self.cluster.clock, checkpoint_interval_s=2.0,
            first_checkpoint_delay_s=0.5,
        )  # fmt: skip
        self.service = LeaseService(
            self.lessor,
            self.leader,
            propose=self.cluster.propose,
            header=lambda revision=None: rpc_pb2.ResponseHeader(
                revision=self.store.current_revision if revision is None else revision
            ),
            is_leader=lambda: self.cluster.leader is self,
            forwarder=no_leader_forwarding(),
            member_id=len(self.cluster.members) + 1,
            min_ttl_s=2,
        )
        self.events: list = []

    def reopen(self) -> None:
        self.backend.close()
        self.open()

    def apply(self, kind: str, req: Any) -> Any:
        handlers = apply_handlers(lessor=self.lessor)  # the node's own table
        batch = self.store.begin_batch()
        try:
            out = handlers[kind](batch, req)
        except errors.EtcdError as exc:
            out = exc
        self.events.extend(batch.commit())
        return out


class Cluster:
    def __init__(self, base: Path, size: int) -> None:
        self.clock = FakeClock()
        self.members: list[Member] = []
        for i in range(size):
            self.members.append(Member(self, base / f"m{i}"))
        self.leader: Member | None = self.members[0]
        self.proposals: list[tuple[str, Any]] = []

    async def propose(self, kind: str, req: Any) -> Any:
        if self.leader is None:
            raise errors.NO_LEADER()
        self.proposals.append((kind, req))
        results = [m.apply(kind, req) for m in self.members]
        out = results[0]
        if isinstance(out, errors.EtcdError):
            raise out
        return out

    def put(self, key: bytes, lease: int) -> Any:
        return self._sync(self.propose("put", rpc_pb2.PutRequest(key=key, value=b"v", lease=lease)))

    @staticmethod
    def _sync(coro: Any) -> Any:
        import asyncio

        return asyncio.run(coro)

    def close(self) -> None:
        for m in self.members:
            m.backend.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, 2)
    yield c
    c.close()
