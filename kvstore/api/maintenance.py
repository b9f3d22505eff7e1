"""Maintenance servicer (`etcdserverpb.Maintenance`).

Owns: Status (from `KvServer.status()`, which reports an etcd-like version
string — clients reject versions below 3.2, ETCD_API.md §0.6) and the
plumbing for the other RPCs: each is delegated to the facade method of the
same snake_case name (`kvstore.seams.KvFacade`).
Never: reads node state directly; never leaks a traceback (api.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from kvstore.api._delegate import maybe_await
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import abort_with, grpc_errors
from kvstore.api.kv import ensure_header
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.seams import KvFacade
from kvstore.server.rpc_stats import counted

Context = grpc.aio.ServicerContext


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, kv: KvFacade, auth: RequestAuth | None = None) -> None:
        self._kv = kv
        self._auth = auth

    def _admin(self, context: Context, method: str) -> None:
        if self._auth is not None:
            self._auth.check_method(context, "/etcdserverpb.Maintenance/" + method)

    @grpc_errors
    async def Status(  # noqa: N802
        self, request: rpc_pb2.StatusRequest, context: Context
    ) -> rpc_pb2.StatusResponse:
        return ensure_header(self._kv, await maybe_await(self._kv.status()))

    # etcd answers Alarm/Defragment/MoveLeader without a header: the facade
    # decides, no ensure_header below.
    @grpc_errors
    async def Alarm(  # noqa: N802
        self, request: rpc_pb2.AlarmRequest, context: Context
    ) -> rpc_pb2.AlarmResponse:
        return await maybe_await(self._kv.alarm(request))

    @grpc_errors
    async def Defragment(  # noqa: N802
        self, request: rpc_pb2.DefragmentRequest, context: Context
    ) -> rpc_pb2.DefragmentResponse:
        self._admin(context, "Defragment")
        return await maybe_await(self._kv.defragment(request))

    @grpc_errors
    async def Hash(  # noqa: N802
        self, request: rpc_pb2.HashRequest, context: Context
    ) -> rpc_pb2.HashResponse:
        self._admin(context, "Hash")
        return await maybe_await(self._kv.hash(request))

    @grpc_errors
    async def HashKV(  # noqa: N802
        self, request: rpc_pb2.HashKVRequest, context: Context
    ) -> rpc_pb2.HashKVResponse:
        self._admin(context, "HashKV")
        return await maybe_await(self._kv.hash_kv(request))

    @grpc_errors
    async def MoveLeader(  # noqa: N802
        self, request: rpc_pb2.MoveLeaderRequest, context: Context
    ) -> rpc_pb2.MoveLeaderResponse:
        return await maybe_await(self._kv.move_leader(request))

    @counted
    async def Snapshot(  # noqa: N802
        self, request: rpc_pb2.SnapshotRequest, context: Context
    ) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        try:
            self._admin(context, "Snapshot")
            async for chunk in self._kv.snapshot(request):
                yield chunk
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped like every unary RPC
            await abort_with(context, exc, "MaintenanceServicer.Snapshot")
