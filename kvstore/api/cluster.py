"""Cluster servicer (`etcdserverpb.Cluster`).

Owns: MemberList (from `KvServer.member_list()`; like etcd its header has
no revision) and the plumbing for membership changes: MemberAdd/Remove/
Update/Promote are delegated to `kv.member_add(req)` etc. (the KvFacade).
Never: changes membership itself (only Raft conf changes do).
"""

from __future__ import annotations

import grpc

from kvstore.api._delegate import maybe_await
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import grpc_errors
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.seams import KvFacade

Context = grpc.aio.ServicerContext


class ClusterServicer(rpc_pb2_grpc.ClusterServicer):
    def __init__(self, kv: KvFacade, auth: RequestAuth | None = None) -> None:
        self._kv = kv
        self._auth = auth

    def _admin(self, context: Context, method: str) -> None:
        if self._auth is not None:
            self._auth.check_method(context, "/etcdserverpb.Cluster/" + method)

    @grpc_errors
    async def MemberList(  # noqa: N802
        self, request: rpc_pb2.MemberListRequest, context: Context
    ) -> rpc_pb2.MemberListResponse:
        resp = await maybe_await(self._kv.member_list())
        hdr = resp.header
        if not hdr.member_id:
            hdr.CopyFrom(self._kv.header(0))
            hdr.revision = 0  # etcd: MemberList does not touch the KV store
        return resp

    @grpc_errors
    async def MemberAdd(  # noqa: N802
        self, request: rpc_pb2.MemberAddRequest, context: Context
    ) -> rpc_pb2.MemberAddResponse:
        self._admin(context, "MemberAdd")
        return await maybe_await(self._kv.member_add(request))

    @grpc_errors
    async def MemberRemove(  # noqa: N802
        self, request: rpc_pb2.MemberRemoveRequest, context: Context
    ) -> rpc_pb2.MemberRemoveResponse:
        self._admin(context, "MemberRemove")
        return await maybe_await(self._kv.member_remove(request))

    @grpc_errors
    async def MemberUpdate(  # noqa: N802
        self, request: rpc_pb2.MemberUpdateRequest, context: Context
    ) -> rpc_pb2.MemberUpdateResponse:
        self._admin(context, "MemberUpdate")
        return await maybe_await(self._kv.member_update(request))

    @grpc_errors
    async def MemberPromote(  # noqa: N802
        self, request: rpc_pb2.MemberPromoteRequest, context: Context
    ) -> rpc_pb2.MemberPromoteResponse:
        self._admin(context, "MemberPromote")
        return await maybe_await(self._kv.member_promote(request))
