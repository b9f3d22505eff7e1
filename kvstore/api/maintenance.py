"""Maintenance servicer (`etcdserverpb.Maintenance`).

Owns: Status (from `KvServer.status()`, which reports an etcd-like version
string — clients reject versions below 3.2, ETCD_API.md §0.6) and the
plumbing for the other RPCs: each is delegated to the facade method of the
same snake_case name when the facade has one (api._delegate), otherwise it
answers UNIMPLEMENTED (issue 5 adds alarm/defragment/hash/hash_kv/snapshot/
move_leader).
Never: reads node state directly; never leaks a traceback (api.errors).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore.api._delegate import maybe_await, optional
from kvstore.api.errors import abort_with, grpc_errors, unimplemented
from kvstore.api.kv import ensure_header
from kvstore.pb import rpc_pb2_grpc

Context = grpc.aio.ServicerContext


class MaintenanceServicer(rpc_pb2_grpc.MaintenanceServicer):
    def __init__(self, kv: Any) -> None:
        self._kv = kv
        self._alarm = optional(kv, "alarm")
        self._defragment = optional(kv, "defragment")
        self._hash = optional(kv, "hash")
        self._hash_kv = optional(kv, "hash_kv")
        self._snapshot = optional(kv, "snapshot")
        self._move_leader = optional(kv, "move_leader")

    @grpc_errors
    async def Status(self, request: Any, context: Context) -> Any:  # noqa: N802
        return ensure_header(self._kv, await maybe_await(self._kv.status()))

    async def _call(self, fn: Any, name: str, request: Any, context: Context) -> Any:
        if fn is None:
            await unimplemented(context, f"Maintenance/{name}")
        # etcd answers Alarm/Defragment/MoveLeader without a header: the
        # facade decides, no ensure_header here.
        return await maybe_await(fn(request))

    @grpc_errors
    async def Alarm(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._alarm, "Alarm", request, context)

    @grpc_errors
    async def Defragment(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._defragment, "Defragment", request, context)

    @grpc_errors
    async def Hash(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._hash, "Hash", request, context)

    @grpc_errors
    async def HashKV(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._hash_kv, "HashKV", request, context)

    @grpc_errors
    async def MoveLeader(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._move_leader, "MoveLeader", request, context)

    async def Snapshot(self, request: Any, context: Context) -> AsyncIterator[Any]:  # noqa: N802
        if self._snapshot is None:
            await unimplemented(context, "Maintenance/Snapshot")
        try:
            async for chunk in await maybe_await(self._snapshot(request)):
                yield chunk
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001 - mapped like every unary RPC
            await abort_with(context, exc, "MaintenanceServicer.Snapshot")
