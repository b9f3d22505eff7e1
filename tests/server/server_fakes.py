"""Test doubles for driver tests: in-memory log with save(), a dict MVCC store,
and a loopback network between drivers in one event loop.

They implement the same seams as RocksLogStorage, MvccStore and GrpcTransport
(CONTRACTS.md) so the driver logic is tested without RocksDB or sockets; the
integration tests in test_cluster.py use the real ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kvstore.raft.storage import MemoryLogStorage
from kvstore.raft.types import ConfState, HardState, Message, Snapshot


class SavingMemoryLog(MemoryLogStorage):
    """MemoryLogStorage with RocksLogStorage's write method."""

    def __init__(self, conf_state: ConfState | None = None) -> None:
        super().__init__(conf_state)
        self.saves = 0

    def save(
        self,
        hard_state: HardState | None,
        entries: list,
        snapshot: Snapshot | None = None,
        sync: bool = True,
    ) -> None:
        self.saves += 1
        if snapshot is not None:
            self.apply_snapshot(snapshot)
        if entries:
            self.append(entries)
        if hard_state is not None:
            self.set_hard_state(hard_state)


class _Batch:
    def __init__(self, store: DictStore) -> None:
        self._store = store
        self._ops: list[tuple[bytes, bytes | None]] = []
        self._meta: dict[bytes, bytes] = {}
        self._rev = store.current_revision

    def put(self, req: Any) -> Any:
        from kvstore.pb import rpc_pb2

        self._rev += 1
        self._ops.append((bytes(req.key), bytes(req.value)))
        return rpc_pb2.PutResponse(header=rpc_pb2.ResponseHeader(revision=self._rev))

    def delete_range(self, req: Any) -> Any:
        from kvstore.pb import rpc_pb2

        existed = bytes(req.key) in self._store.data
        if existed:
            self._rev += 1
            self._ops.append((bytes(req.key), None))
        return rpc_pb2.DeleteRangeResponse(
            header=rpc_pb2.ResponseHeader(revision=self._rev), deleted=int(existed)
        )

    def txn(self, req: Any) -> Any:
        from kvstore.pb import rpc_pb2

        for op in req.success:
            self.put(op.request_put)
        return rpc_pb2.TxnResponse(
            header=rpc_pb2.ResponseHeader(revision=self._rev), succeeded=True
        )

    def compact(self, revision: int) -> Any:
        from kvstore.pb import rpc_pb2

        return rpc_pb2.CompactionResponse()

    def set_meta(self, key: bytes, value: bytes) -> None:
        self._meta[key] = value

    def commit(self, sync: bool = False) -> list:
        events = []
        for key, value in self._ops:
            self._store.revision += 1
            if value is None:
                self._store.data.pop(key, None)
            else:
                self._store.data[key] = value
            events.append((self._store.revision, [key]))
        self._store.meta.update(self._meta)
        return events


class DictStore:
    """Key -> value with a revision counter; enough MVCC for driver tests."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.meta: dict[bytes, bytes] = {}
        self.revision = 1

    @property
    def current_revision(self) -> int:
        return self.revision

    def begin_batch(self) -> _Batch:
        return _Batch(self)

    def range(self, req: Any) -> Any:
        from kvstore.pb import kv_pb2, rpc_pb2

        key = bytes(req.key)
        kvs = [kv_pb2.KeyValue(key=key, value=self.data[key])] if key in self.data else []
        return rpc_pb2.RangeResponse(kvs=kvs, count=len(kvs))


class LoopbackNetwork:
    """Delivers messages between drivers in the same loop; links can be cut."""

    def __init__(self) -> None:
        self.nodes: dict[int, Any] = {}
        self.down: set[int] = set()

    def transport(self, node_id: int) -> LoopbackTransport:
        return LoopbackTransport(self, node_id)

    def deliver(self, messages: list[Message]) -> None:
        loop = asyncio.get_running_loop()
        for msg in messages:
            if msg.sender in self.down or msg.to in self.down:
                continue
            target = self.nodes.get(msg.to)
            if target is not None:
                loop.call_soon(target.deliver, [msg])


class LoopbackTransport:
    def __init__(self, net: LoopbackNetwork, node_id: int) -> None:
        self._net = net
        self.node_id = node_id

    def set_peers(self, peers: dict[int, str]) -> None:
        pass

    def send(self, messages: list[Message]) -> None:
        self._net.deliver(messages)
