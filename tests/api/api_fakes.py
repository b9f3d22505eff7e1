"""A small in-memory stand-in for KvServer and an in-process gRPC harness.

FakeKv implements the facade (`kvstore.seams.KvFacade`): single-key and
prefix ranges, put, delete_range, flat txns, compact, status, member_list,
header; the maintenance and membership calls answer UNIMPLEMENTED (as a
facade without those features would), and there are no watch/lease parts.
It records every call so tests can assert that validation stopped a request
before the facade saw it. It deliberately returns responses WITHOUT a
header: the servicers must fill it. `fail_with` makes
the next call raise the given exception (EtcdError or anything else).
`serving(fake)` runs the api servicers on a grpc.aio server on 127.0.0.1:0.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc

from kvstore import errors
from kvstore.api import add_servicers, grpc_server_options
from kvstore.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc

CLUSTER_ID = 0x1234
MEMBER_ID = 0xABCD
RAFT_TERM = 7


def _unimplemented(rpc: str) -> errors.EtcdError:
    return errors.EtcdError(grpc.StatusCode.UNIMPLEMENTED, f"kvstore: {rpc} is not implemented")


class FakeKv:
    # No watch / lease / metrics parts: those APIs are off, RPCs are not counted.
    watch_hub = None
    leases = None
    metrics = None

    def __init__(self) -> None:
        self.data: dict[bytes, kv_pb2.KeyValue] = {}
        self.revision = 1
        self.compact_revision = 0
        self.calls: list[str] = []
        self.fail_with: BaseException | None = None

    # ------------------------------------------------------------- helpers
    def _enter(self, name: str) -> None:
        self.calls.append(name)
        if self.fail_with is not None:
            exc, self.fail_with = self.fail_with, None
            raise exc

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(
            cluster_id=CLUSTER_ID,
            member_id=MEMBER_ID,
            revision=self.revision if revision is None else revision,
            raft_term=RAFT_TERM,
        )

    def _keys(self, key: bytes, range_end: bytes) -> list[bytes]:
        if not range_end:
            return [key] if key in self.data else []
        return sorted(k for k in self.data if k >= key and (range_end == b"\0" or k < range_end))

    # ------------------------------------------------------------------ KV
    async def range(self, req: Any) -> rpc_pb2.RangeResponse:
        self._enter("range")
        if req.revision and req.revision < self.compact_revision:
            raise errors.COMPACTED()
        if req.revision > self.revision:
            raise errors.FUTURE_REVISION()
        keys = self._keys(req.key, req.range_end)
        kvs = [self.data[k] for k in keys]
        if req.limit:
            kvs = kvs[: req.limit]
        return rpc_pb2.RangeResponse(kvs=kvs, count=len(keys), more=len(kvs) < len(keys))

    def _put(self, req: Any) -> rpc_pb2.PutResponse:
        old = self.data.get(req.key)
        self.data[req.key] = kv_pb2.KeyValue(
            key=req.key,
            value=req.value,
            create_revision=old.create_revision if old else self.revision,
            mod_revision=self.revision,
            version=(old.version + 1) if old else 1,
        )
        resp = rpc_pb2.PutResponse()
        if req.prev_kv and old is not None:
            resp.prev_kv.CopyFrom(old)
        return resp

    async def put(self, req: Any) -> rpc_pb2.PutResponse:
        self._enter("put")
        self.revision += 1
        return self._put(req)

    async def delete_range(self, req: Any) -> rpc_pb2.DeleteRangeResponse:
        self._enter("delete_range")
        keys = self._keys(req.key, req.range_end)
        if keys:
            self.revision += 1
        for k in keys:
            del self.data[k]
        return rpc_pb2.DeleteRangeResponse(deleted=len(keys))

    async def txn(self, req: Any) -> rpc_pb2.TxnResponse:
        self._enter("txn")
        ok = all(
            (self.data[c.key].value if c.key in self.data else None) == c.value for c in req.compare
        )
        ops = req.success if ok else req.failure
        if any(op.WhichOneof("request") == "request_put" for op in ops):
            self.revision += 1
        resp = rpc_pb2.TxnResponse(succeeded=ok)
        for op in ops:
            if op.WhichOneof("request") == "request_put":
                resp.responses.add(response_put=self._put(op.request_put))
            else:
                resp.responses.add()
        return resp

    async def compact(self, req: Any) -> rpc_pb2.CompactionResponse:
        self._enter("compact")
        if req.revision <= self.compact_revision:
            raise errors.COMPACTED()
        if req.revision > self.revision:
            raise errors.FUTURE_REVISION()
        self.compact_revision = req.revision
        return rpc_pb2.CompactionResponse()

    # ------------------------------------------------------ cluster/status
    def status(self) -> rpc_pb2.StatusResponse:  # sync, like KvServer today
        self._enter("status")
        return rpc_pb2.StatusResponse(version="3.4.23", leader=MEMBER_ID, raftTerm=RAFT_TERM)

    async def member_list(self) -> rpc_pb2.MemberListResponse:  # async, like the contract
        self._enter("member_list")
        return rpc_pb2.MemberListResponse(
            members=[rpc_pb2.Member(ID=MEMBER_ID, name="n1", peerURLs=["http://127.0.0.1:1"])]
        )

    # ------------------------------------- features this facade does not have
    async def member_add(self, req: Any) -> Any:
        raise _unimplemented("Cluster/MemberAdd")

    async def member_remove(self, req: Any) -> Any:
        raise _unimplemented("Cluster/MemberRemove")

    async def member_update(self, req: Any) -> Any:
        raise _unimplemented("Cluster/MemberUpdate")

    async def member_promote(self, req: Any) -> Any:
        raise _unimplemented("Cluster/MemberPromote")

    async def move_leader(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/MoveLeader")

    async def alarm(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/Alarm")

    async def defragment(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/Defragment")

    async def hash(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/Hash")

    async def hash_kv(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/HashKV")

    def snapshot(self, req: Any) -> Any:
        raise _unimplemented("Maintenance/Snapshot")


@dataclass
class Stubs:
    channel: grpc.aio.Channel
    kv: rpc_pb2_grpc.KVStub
    maintenance: rpc_pb2_grpc.MaintenanceStub
    cluster: rpc_pb2_grpc.ClusterStub


@contextlib.asynccontextmanager
async def serving(fake: Any, max_request_bytes: int = 1_572_864) -> AsyncIterator[Stubs]:
    server = grpc.aio.server(options=grpc_server_options(max_request_bytes))
    add_servicers(server, fake, max_request_bytes=max_request_bytes)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    # Unlimited client send so oversized requests reach the server's limits.
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)]
    )
    try:
        yield Stubs(
            channel,
            rpc_pb2_grpc.KVStub(channel),
            rpc_pb2_grpc.MaintenanceStub(channel),
            rpc_pb2_grpc.ClusterStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(grace=None)
