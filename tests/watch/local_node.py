"""A single-member stand-in for KvNode (no Raft): MvccStore + Lessor + WatchHub on
RocksDB under a temp dir, with a KvServer-like facade whose `propose` applies
at once (commit, then publish to the hub, like the apply loop). `serving()`
runs the Watch / Lease / Lock / Election servicers on 127.0.0.1:0 so the
servicers are tested over real gRPC before the node integration exists."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from kvstore import errors
from kvstore.lease import FakeClock, LeaderLeases, LeaseService, Lessor
from kvstore.mvcc import MvccStore
from kvstore.pb import rpc_pb2, rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc
from kvstore.server.applier import apply_handlers
from kvstore.storage.backend import Backend
from kvstore.transport.forward import LeaderForwarder, LeaderResolver, LeaseForwarding
from kvstore.transport.peer_client import PeerChannels, PeerClient
from kvstore.watch import WatchHub


def no_leader_forwarding() -> LeaseForwarding:
    """Forwarding of a member that knows no leader address: "no leader"."""
    client = PeerClient(PeerChannels(credentials=None))
    return LeaseForwarding(LeaderForwarder(client, LeaderResolver(lambda: 0, {})))


class LocalKv:
    member_id = 0xABC
    cluster_id = 0x123

    def __init__(self, path: Path, clock: Any | None = None) -> None:
        self.backend = Backend.open(path)
        self.lessor = Lessor()
        self.store = MvccStore(self.backend, self.lessor)
        self.lessor.recover(self.backend, self.store.leased_keys())
        self.has_leader = True
        self.address = ""  # set by serving()
        self.is_leader = True
        self.election_timeout_s = 0.0  # unknown: servicers use etcd's default checks
        self.watch_hub = WatchHub(self.store, self.header)
        self.clock = clock or FakeClock()
        self.leases = LeaseService(
            self.lessor,
            LeaderLeases(self.lessor, self.clock),
            propose=self.propose,
            header=self.header,
            is_leader=lambda: self.is_leader,
            forwarder=no_leader_forwarding(),
            member_id=self.member_id,
            min_ttl_s=2,
        )
        self._handlers = apply_handlers(lessor=self.lessor)  # the node's own table

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=self.store.current_revision if revision is None else revision,
            raft_term=1,
        )

    async def propose(self, kind: str, req: Any) -> Any:
        if not self.has_leader:
            raise errors.NO_LEADER()
        batch = self.store.begin_batch()
        try:
            out = self._handlers[kind](batch, req)
        except errors.EtcdError as exc:
            out = exc
        self.watch_hub.publish(batch.commit())
        if isinstance(out, errors.EtcdError):
            raise out
        return out

    async def range(self, req: Any) -> Any:
        resp = self.store.range(req)
        resp.header.CopyFrom(self.header(resp.header.revision))
        return resp

    async def put(self, req: Any) -> Any:
        return await self.propose("put", req)

    async def delete_range(self, req: Any) -> Any:
        return await self.propose("delete_range", req)

    async def txn(self, req: Any) -> Any:
        return await self.propose("txn", req)

    def close(self) -> None:
        self.backend.close()


@contextlib.asynccontextmanager
async def serving(kv: LocalKv, leader_check_s: float = 1.0) -> AsyncIterator[grpc.aio.Channel]:
    from kvstore.api.election import ElectionServicer
    from kvstore.api.lease import LeaseServicer
    from kvstore.api.lock import LockServicer
    from kvstore.api.watch import WatchServicer

    server = grpc.aio.server()
    rpc_pb2_grpc.add_WatchServicer_to_server(
        WatchServicer(kv, kv.watch_hub, leader_check_s=leader_check_s), server
    )
    rpc_pb2_grpc.add_LeaseServicer_to_server(
        LeaseServicer(kv, kv.leases, leader_check_s=leader_check_s), server
    )
    rpc_pb2_grpc.add_KVServicer_to_server(_Kv(kv), server)
    v3lock_pb2_grpc.add_LockServicer_to_server(LockServicer(kv, kv.leases, kv.watch_hub), server)
    v3election_pb2_grpc.add_ElectionServicer_to_server(
        ElectionServicer(kv, kv.leases, kv.watch_hub), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    kv.address = f"127.0.0.1:{port}"
    await server.start()
    kv.watch_hub.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await server.stop(grace=0)
        await kv.watch_hub.stop()
        await kv.leases.stop()


class _Kv(rpc_pb2_grpc.KVServicer):
    """Minimal KV servicer over LocalKv (tests drive writes through gRPC)."""

    def __init__(self, kv: LocalKv) -> None:
        self._kv = kv

    async def Put(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            return await self._kv.put(request)
        except errors.EtcdError as exc:
            await context.abort(exc.code, exc.message)

    async def DeleteRange(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._kv.delete_range(request)

    async def Range(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._kv.range(request)

    async def Txn(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._kv.txn(request)

    async def Compact(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._kv.propose("compaction", request)
