"""KvServer: the facade the gRPC servicers call (pb in, pb out, EtcdError out).

Owns: choosing the path of each request — writes are proposed through the
driver and answered when applied; linearizable reads wait on the batched
ReadIndex barrier and are then served from local MVCC state; serializable
reads are served locally at once — and filling the ResponseHeader.
Never: touches the Raft core (only the driver does) or the network; never
validates request shape (api/ does: empty keys, sizes, txn limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc

from kvstore import errors
from kvstore.mvcc import MvccStore
from kvstore.mvcc.txn_ops import txn_is_read_only
from kvstore.pb import rpc_pb2
from kvstore.raft.types import Role
from kvstore.seams import LeaseFacade
from kvstore.server.cluster_ops import ClusterOps
from kvstore.server.membership import MemberTable
from kvstore.server.node import NodeDriver
from kvstore.server.proposer import Proposer
from kvstore.transport.forward import LeaderForwarder

if TYPE_CHECKING:
    from kvstore.maintenance.service import MaintenanceService
    from kvstore.server.auth_parts import NodeAuth
    from kvstore.server.metrics import NodeMetrics
    from kvstore.watch import WatchHub

__all__ = ["CLUSTER_VERSION", "SERVER_VERSION", "KvServer", "txn_is_read_only"]


class _HasHeader(Protocol):
    @property
    def header(self) -> rpc_pb2.ResponseHeader: ...


_R = TypeVar("_R", bound=_HasHeader)

# Clients (go-zero, clientv3 RejectOldCluster) refuse servers reporting < 3.2,
# so Status and /version report an etcd-like version (ETCD_API.md §0.6).
SERVER_VERSION = "3.4.23"
CLUSTER_VERSION = "3.4.0"


class KvServer:
    """Async facade (implements `kvstore.seams.KvFacade`); every method may
    raise `kvstore.errors.EtcdError`.

    The optional parts are given at construction (server.assembly does):
    `watch_hub` and `leases` (None: the Watch / Lease / Lock / Election APIs
    are off), `maintenance` (None: quota, alarms, hash, snapshot and
    defragment fall back to the plain behaviour below), `metrics` (counts
    RPCs when the api registers servicers; None: not counted), `forwarder`
    (transport.forward: a follower runs membership changes on the leader
    through it; None: a follower answers them "no leader"), `auth`
    (server.auth_parts.NodeAuth; None: the Auth API is off)."""

    def __init__(
        self,
        driver: NodeDriver,
        store: MvccStore,
        members: MemberTable,
        *,
        cluster_id: int,
        member_id: int,
        db_size: Callable[[], int] = lambda: 0,
        db_size_in_use: Callable[[], int] | None = None,
        cluster_token: str = "",
        proposer: Proposer | None = None,
        watch_hub: WatchHub | None = None,
        leases: LeaseFacade | None = None,
        maintenance: MaintenanceService | None = None,
        metrics: NodeMetrics | None = None,
        forwarder: LeaderForwarder | None = None,
        auth: NodeAuth | None = None,
    ) -> None:
        self._driver = driver
        # The member's auth parts (the api builds the Auth servicer and the
        # per-request checks from them); None: no auth at all.
        self.auth = auth
        self._store = store
        self._members = members
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._db_size = db_size
        self._db_size_in_use = db_size_in_use or db_size
        self._proposer = proposer or Proposer(
            driver, store, cluster_id=cluster_id, member_id=member_id
        )
        # Followers forward membership changes to the leader through `forwarder`.
        self._cluster = ClusterOps(driver, members, self.header, cluster_token, forwarder)
        self._watch_hub = watch_hub
        self._leases = leases
        self.maintenance = maintenance
        self.metrics = metrics

    @property
    def watch_hub(self) -> WatchHub | None:
        return self._watch_hub

    @property
    def leases(self) -> LeaseFacade | None:
        return self._leases

    @property
    def driver(self) -> NodeDriver:
        return self._driver

    @property
    def store(self) -> MvccStore:
        return self._store

    @property
    def members(self) -> MemberTable:
        return self._members

    # ----------------------------------------------------------------- header
    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        """ResponseHeader for this member; revision defaults to the current one."""
        return self._proposer.header(revision)

    def _fill_header(self, resp: _R, revision: int | None = None) -> _R:
        hdr = resp.header
        hdr.cluster_id = self.cluster_id
        hdr.member_id = self.member_id
        hdr.raft_term = self._driver.term
        if revision is not None:
            hdr.revision = revision
        elif not hdr.revision:
            hdr.revision = self._store.current_revision
        return resp

    # ------------------------------------------------------------ primitives
    async def read_barrier(self) -> None:
        """Wait until this member may serve a linearizable read."""
        if self._driver.leader_id == 0:
            await self._driver.wait_leader()
        await self._driver.read_barrier()

    async def propose(self, kind: str, request: Any) -> Any:
        """Propose InternalRequest{kind: request}; return the apply result."""
        return await self._proposer.propose(kind, request)

    # -------------------------------------------------------------------- KV
    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse:
        if not req.serializable:
            await self.read_barrier()
        return self._fill_header(self._store.range(req))

    async def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse:
        if self.maintenance is not None:
            await self.maintenance.check_write("put", req)
        return self._fill_header(await self._proposer.propose("put", req))

    async def delete_range(self, req: rpc_pb2.DeleteRangeRequest) -> rpc_pb2.DeleteRangeResponse:
        return self._fill_header(await self._proposer.propose("delete_range", req))

    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse:
        if txn_is_read_only(req):
            # Served like a Range: ReadIndex barrier, then local state. A batch
            # that only reads stages nothing and is never committed.
            await self.read_barrier()
            return self._fill_header(self._store.begin_batch().txn(req))
        if self.maintenance is not None:
            await self.maintenance.check_write("txn", req)
        return self._fill_header(await self._proposer.propose("txn", req))

    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
        resp = await self._proposer.propose("compaction", req)
        if resp is None:
            resp = rpc_pb2.CompactionResponse()
        return self._fill_header(resp)

    # ------------------------------------------------------- cluster / status
    def status(self) -> rpc_pb2.StatusResponse:
        d = self._driver
        member = self._members.get(self.member_id)
        size = self._db_size()
        in_use = self._db_size_in_use()
        return rpc_pb2.StatusResponse(
            header=self.header(),
            version=SERVER_VERSION,
            dbSize=size,
            leader=d.leader_id,
            raftIndex=d.commit_index,
            raftTerm=d.term,
            raftAppliedIndex=d.applied_index,
            dbSizeInUse=in_use,
            isLearner=bool(member and member.is_learner),
            errors=self.maintenance.status_errors() if self.maintenance is not None else [],
        )

    def member_list(self) -> rpc_pb2.MemberListResponse:
        pb = rpc_pb2
        return pb.MemberListResponse(
            header=self.header(revision=0),
            members=[
                pb.Member(
                    ID=m.id,
                    name=m.name,
                    peerURLs=m.peer_urls,
                    clientURLs=m.client_urls,
                    isLearner=m.is_learner,
                )
                for m in self._members.all()
            ],
        )

    async def member_add(self, req: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse:
        return await self._cluster.member_add(req)

    async def member_remove(self, req: rpc_pb2.MemberRemoveRequest) -> rpc_pb2.MemberRemoveResponse:
        return await self._cluster.member_remove(req)

    async def member_update(self, req: rpc_pb2.MemberUpdateRequest) -> rpc_pb2.MemberUpdateResponse:
        return await self._cluster.member_update(req)

    async def member_promote(
        self, req: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse:
        return await self._cluster.member_promote(req)

    async def move_leader(self, req: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse:
        return await self._cluster.move_leader(req)

    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        if self.maintenance is not None:
            return await self.maintenance.alarm(req)
        # No alarm table attached: nothing is ever raised; GET/DEACTIVATE list none.
        pb = rpc_pb2
        if req.action == pb.AlarmRequest.ACTIVATE:
            raise errors.NOT_CAPABLE()
        return pb.AlarmResponse(header=self.header())

    async def defragment(self, req: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse:
        if self.maintenance is not None:
            return await self.maintenance.defragment(req)
        # RocksDB compacts by itself. etcd 3.4 answers Defragment without a header.
        return rpc_pb2.DefragmentResponse()

    def hash_kv(self, req: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse:
        """CRC-32 of the MVCC history up to req.revision (0: current); equal on
        members that applied the same log (etcd's corruption check)."""
        if self.maintenance is not None:
            return self.maintenance.hash_kv(req)
        value, compact_rev = self._store.hash_kv(req.revision)
        return rpc_pb2.HashKVResponse(
            header=self.header(), hash=value, compact_revision=compact_rev
        )

    async def hash(self, req: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse:
        if self.maintenance is not None:
            return await self.maintenance.hash(req)
        value, _ = self._store.hash_kv(0)  # etcd hashes the whole backend
        return rpc_pb2.HashResponse(header=self.header(), hash=value)

    def snapshot(self, req: rpc_pb2.SnapshotRequest) -> AsyncIterator[rpc_pb2.SnapshotResponse]:
        """Async iterator of SnapshotResponse chunks (needs kvstore.maintenance)."""
        if self.maintenance is None:
            raise errors.EtcdError(
                grpc.StatusCode.UNIMPLEMENTED, "snapshot is not supported by this server"
            )
        return self.maintenance.snapshot(req)

    def leader_endpoint(self) -> str | None:
        """host:port of the leader's first published client URL (for forwarding
        leader-only calls such as lease keepalives), or None if unknown."""
        return self._cluster.leader_client_address()

    @property
    def election_timeout_s(self) -> float:
        """The member's election timeout (streams' leader monitor checks at this period)."""
        return self._driver.election_timeout_s

    @property
    def is_leader(self) -> bool:
        return self._driver.role == Role.LEADER

    @property
    def has_leader(self) -> bool:
        return self._driver.leader_id != 0

    async def wait_for_leader(self, timeout: float) -> bool:
        """Poll-free wait for a known leader (used by startup and tests)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.has_leader:
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True
