"""Cluster servicer (`etcdserverpb.Cluster`).

Owns: MemberList (from `KvServer.member_list()`; like etcd its header has
no revision) and the plumbing for membership changes: MemberAdd/Remove/
Update/Promote are delegated to `kv.member_add(req)` etc. when the facade
has them, else they answer UNIMPLEMENTED.
Never: changes membership itself (only Raft conf changes do).
"""

from __future__ import annotations

from typing import Any

import grpc

from kvstore.api._delegate import maybe_await, optional
from kvstore.api.errors import grpc_errors, unimplemented
from kvstore.pb import rpc_pb2_grpc

Context = grpc.aio.ServicerContext


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, kv: Any) -> None:
        self._kv = kv
        self._member_add = optional(kv, "member_add")
        self._member_remove = optional(kv, "member_remove")
        self._member_update = optional(kv, "member_update")
        self._member_promote = optional(kv, "member_promote")

    @grpc_errors
    async def MemberList(self, request: Any, context: Context) -> Any:  # noqa: N802
        resp = await maybe_await(self._kv.member_list())
        hdr = resp.header
        if not hdr.member_id:
            hdr.CopyFrom(self._kv.header(0))
            hdr.revision = 0  # etcd: MemberList does not touch the KV store
        return resp

    async def _call(self, fn: Any, name: str, request: Any, context: Context) -> Any:
        if fn is None:
            await unimplemented(context, f"Cluster/{name}")
        return await maybe_await(fn(request))

    @grpc_errors
    async def MemberAdd(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._member_add, "MemberAdd", request, context)

    @grpc_errors
    async def MemberRemove(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._member_remove, "MemberRemove", request, context)

    @grpc_errors
    async def MemberUpdate(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._member_update, "MemberUpdate", request, context)

    @grpc_errors
    async def MemberPromote(self, request: Any, context: Context) -> Any:  # noqa: N802
        return await self._call(self._member_promote, "MemberPromote", request, context)
