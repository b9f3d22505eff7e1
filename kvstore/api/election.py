"""Election servicer (`v3electionpb.Election`): Campaign, Proclaim, Leader, Observe, Resign.

Owns: etcd's server-side election recipe (clientv3 `concurrency.Election`):
a candidate's key is `name/<lease hex>` holding its value; the leader is
the key under `name/` with the lowest create revision; Campaign returns
once every older candidate key is gone (waited for through the WatchHub)
and the caller's key still exists (lease re-checked). `LeaderKey.rev` (the
key's create revision) is the fencing token Proclaim and Resign compare on.
Never: keeps leases alive, or touches MVCC other than through the facade.

Errors as etcd's election server: no leader -> Unknown "election: no
leader"; Proclaim by a non-leader -> "election: not leader".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from kvstore import errors
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import abort_with, grpc_errors
from kvstore.api.lock import (
    claim_key,
    delete_quietly,
    first_create,
    prefix_end,
    still_owned,
    wait_deletes,
)
from kvstore.pb import kv_pb2, rpc_pb2, v3election_pb2, v3election_pb2_grpc
from kvstore.seams import KvFacade, LeaseFacade
from kvstore.server.rpc_stats import counted
from kvstore.watch import WatchHub

Context = grpc.aio.ServicerContext
Compare = rpc_pb2.Compare
# concurrency.ErrElectionNotLeader travels as a plain error (gRPC Unknown).
election_not_leader = errors.ELECTION_NOT_LEADER


def _owner_is(leader: v3election_pb2.LeaderKey) -> rpc_pb2.Compare:
    return Compare(
        key=leader.key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=leader.rev
    )


class ElectionServicer(v3election_pb2_grpc.ElectionServicer):
    """`kv`: KvServer facade; `leases`: LeaseService; `hub`: WatchHub."""

    def __init__(
        self, kv: KvFacade, leases: LeaseFacade, hub: WatchHub, auth: RequestAuth | None = None
    ) -> None:
        """`auth`: writes are proposed for the caller (None: no auth)."""
        self._auth = auth
        self._kv = kv
        self._leases = leases
        self._hub = hub

    @grpc_errors
    async def Campaign(  # noqa: N802
        self, request: v3election_pb2.CampaignRequest, context: Context
    ) -> v3election_pb2.CampaignResponse:
        if self._auth is not None:
            self._auth.bind(context)
        kv = self._kv
        pfx = request.name + b"/"
        key, lease, rev, resp = await claim_key(
            kv, self._leases, request.name, request.lease, request.value
        )
        leader = v3election_pb2.LeaderKey(name=request.name, key=key, rev=rev, lease=lease)
        if not resp.succeeded and resp.responses[0].response_range.kvs[0].value != request.value:
            await self._proclaim(leader, request.value)
        try:
            await wait_deletes(kv, self._hub, pfx, leader.rev - 1)
        except BaseException:
            await delete_quietly(kv, key)  # etcd resigns when the campaign is abandoned
            raise
        if not await still_owned(kv, key, leader.rev):
            raise errors.LEASE_NOT_FOUND()
        out = v3election_pb2.CampaignResponse(leader=leader)
        out.header.CopyFrom(kv.header(resp.header.revision))
        return out

    async def _proclaim(
        self, leader: v3election_pb2.LeaderKey, value: bytes
    ) -> rpc_pb2.TxnResponse:
        txn = rpc_pb2.TxnRequest(
            compare=[_owner_is(leader)],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=leader.key, value=value, lease=leader.lease)
                )
            ],
        )
        resp = await self._kv.txn(txn)
        if not resp.succeeded:
            raise election_not_leader()
        return resp

    @grpc_errors
    async def Proclaim(  # noqa: N802
        self, request: v3election_pb2.ProclaimRequest, context: Context
    ) -> v3election_pb2.ProclaimResponse:
        if self._auth is not None:
            self._auth.bind(context)
        resp = await self._proclaim(request.leader, request.value)
        out = v3election_pb2.ProclaimResponse()
        out.header.CopyFrom(self._kv.header(resp.header.revision))
        return out

    @grpc_errors
    async def Resign(  # noqa: N802
        self, request: v3election_pb2.ResignRequest, context: Context
    ) -> v3election_pb2.ResignResponse:
        if self._auth is not None:
            self._auth.bind(context)
        leader = request.leader
        txn = rpc_pb2.TxnRequest(
            compare=[_owner_is(leader)],
            success=[
                rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=leader.key))
            ],
        )
        resp = await self._kv.txn(txn)
        out = v3election_pb2.ResignResponse()
        out.header.CopyFrom(self._kv.header(resp.header.revision))
        return out

    @grpc_errors
    async def Leader(  # noqa: N802
        self, request: v3election_pb2.LeaderRequest, context: Context
    ) -> v3election_pb2.LeaderResponse:
        resp = await self._kv.range(first_create(request.name + b"/"))
        if not resp.kvs:
            raise errors.ELECTION_NO_LEADER()
        out = v3election_pb2.LeaderResponse(kv=resp.kvs[0])
        out.header.CopyFrom(self._kv.header(resp.header.revision))
        return out

    @counted
    async def Observe(  # noqa: N802
        self, request: v3election_pb2.LeaderRequest, context: Context
    ) -> AsyncIterator[v3election_pb2.LeaderResponse]:
        """concurrency.Election.Observe: the current leader, each of its
        proclamations, then the next leader once its key is deleted."""
        pfx = request.name + b"/"
        while True:
            try:
                resp = await self._kv.range(first_create(pfx))
            except (grpc.aio.AbortError, asyncio.CancelledError):
                raise
            except Exception as exc:  # noqa: BLE001 - etcd status, or INTERNAL (logged)
                await abort_with(context, exc, "Observe")
            kv: kv_pb2.KeyValue | None
            if resp.kvs:
                kv, revision = resp.kvs[0], resp.header.revision
            else:
                kv, revision = await self._first_put(pfx, resp.header.revision)
                if kv is None:
                    continue
            yield self._leader_response(kv, revision)
            async for value, rev in self._proclamations(kv.key, revision + 1):
                yield self._leader_response(value, rev)

    def _leader_response(
        self, kv: kv_pb2.KeyValue, revision: int
    ) -> v3election_pb2.LeaderResponse:
        out = v3election_pb2.LeaderResponse(kv=kv)
        out.header.CopyFrom(self._kv.header(revision))
        return out

    async def _first_put(
        self, pfx: bytes, revision: int
    ) -> tuple[kv_pb2.KeyValue | None, int]:
        """Wait for the first candidate key under `pfx` (None if compacted)."""
        stream = self._hub.new_stream()
        try:
            stream.create(
                rpc_pb2.WatchCreateRequest(
                    key=pfx, range_end=prefix_end(pfx), start_revision=revision
                )
            )
            while True:
                resp = await stream.next()
                if resp is None or resp.canceled:
                    return None, 0
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.PUT:
                        return ev.kv, ev.kv.mod_revision
        finally:
            stream.close()

    async def _proclamations(
        self, key: bytes, start: int
    ) -> AsyncIterator[tuple[kv_pb2.KeyValue, int]]:
        """Each new value of the leader's key until it is deleted."""
        stream = self._hub.new_stream()
        try:
            stream.create(rpc_pb2.WatchCreateRequest(key=key, start_revision=start))
            while True:
                resp = await stream.next()
                if resp is None or resp.canceled:
                    return
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.DELETE:
                        return
                    yield ev.kv, resp.header.revision
        finally:
            stream.close()
