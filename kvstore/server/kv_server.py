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
from collections.abc import Callable
from typing import Any

import grpc

from kvstore import errors
from kvstore.raft.types import Role
from kvstore.server.membership import MemberTable
from kvstore.server.node import NodeDriver
from kvstore.transport.forward import LeaderForwarder

# Clients (go-zero, clientv3 RejectOldCluster) refuse servers reporting < 3.2,
# so Status and /version report an etcd-like version (ETCD_API.md §0.6).
SERVER_VERSION = "3.4.23"
CLUSTER_VERSION = "3.4.0"


def _pb() -> Any:
    from kvstore.pb import rpc_pb2

    return rpc_pb2


def txn_is_read_only(txn: Any) -> bool:
    """True when no branch (recursively) writes: such a txn is served as a read."""
    for ops in (txn.success, txn.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind in ("request_put", "request_delete_range"):
                return False
            if kind == "request_txn" and not txn_is_read_only(op.request_txn):
                return False
    return True


class KvServer:
    """Async facade; every method may raise `kvstore.errors.EtcdError`."""

    def __init__(
        self,
        driver: NodeDriver,
        store: Any,
        members: MemberTable,
        *,
        cluster_id: int,
        member_id: int,
        db_size: Callable[[], int] = lambda: 0,
        db_size_in_use: Callable[[], int] | None = None,
        cluster_token: str = "",
        forwarder: LeaderForwarder | None = None,
    ) -> None:
        from kvstore.pb import internal_pb2
        from kvstore.server.cluster_ops import ClusterOps

        self._driver = driver
        self._store = store
        self._members = members
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._db_size = db_size
        self._db_size_in_use = db_size_in_use or db_size
        self._internal = internal_pb2.InternalRequest
        # Followers forward membership changes to the leader through `forwarder`.
        self._cluster = ClusterOps(driver, members, self.header, cluster_token, forwarder)
        # Set by server.coordination when the node wires leases and watches.
        self.watch_hub: Any = None
        self.leases: Any = None
        # kvstore.maintenance.MaintenanceService when attached (quota, alarms,
        # hash, snapshot, defragment); None: those features are off.
        self.maintenance: Any = None

    @property
    def driver(self) -> NodeDriver:
        return self._driver

    @property
    def store(self) -> Any:
        return self._store

    @property
    def members(self) -> MemberTable:
        return self._members

    # ----------------------------------------------------------------- header
    def header(self, revision: int | None = None) -> Any:
        """ResponseHeader for this member; revision defaults to the current one."""
        rev = self._store.current_revision if revision is None else revision
        return _pb().ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=rev,
            raft_term=self._driver.term,
        )

    def _fill_header(self, resp: Any, revision: int | None = None) -> Any:
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
        """Propose InternalRequest{kind: request}; return the apply result.

        Used for KV writes here and by other facades (lease, alarm)."""
        make = self._internal

        def payload(rid: int) -> bytes:
            ireq = make(id=rid)
            getattr(ireq, kind).CopyFrom(request)
            return ireq.SerializeToString()

        if self._driver.leader_id == 0:
            # Briefly wait out an election or a restart instead of failing at once.
            await self._driver.wait_leader()
        return await self._driver.propose(payload)

    # -------------------------------------------------------------------- KV
    async def range(self, req: Any) -> Any:
        if not req.serializable:
            await self.read_barrier()
        return self._fill_header(self._store.range(req))

    async def put(self, req: Any) -> Any:
        if self.maintenance is not None:
            await self.maintenance.check_write("put", req)
        return self._fill_header(await self.propose("put", req))

    async def delete_range(self, req: Any) -> Any:
        return self._fill_header(await self.propose("delete_range", req))

    async def txn(self, req: Any) -> Any:
        if txn_is_read_only(req):
            # Served like a Range: ReadIndex barrier, then local state. A batch
            # that only reads stages nothing and is never committed.
            await self.read_barrier()
            return self._fill_header(self._store.begin_batch().txn(req))
        if self.maintenance is not None:
            await self.maintenance.check_write("txn", req)
        return self._fill_header(await self.propose("txn", req))

    async def compact(self, req: Any) -> Any:
        resp = await self.propose("compaction", req)
        if resp is None:
            resp = _pb().CompactionResponse()
        return self._fill_header(resp)

    # ------------------------------------------------------- cluster / status
    def status(self) -> Any:
        d = self._driver
        member = self._members.get(self.member_id)
        size = self._db_size()
        in_use = self._db_size_in_use()
        return _pb().StatusResponse(
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

    def member_list(self) -> Any:
        pb = _pb()
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

    async def member_add(self, req: Any) -> Any:
        return await self._cluster.member_add(req)

    async def member_remove(self, req: Any) -> Any:
        return await self._cluster.member_remove(req)

    async def member_update(self, req: Any) -> Any:
        return await self._cluster.member_update(req)

    async def member_promote(self, req: Any) -> Any:
        return await self._cluster.member_promote(req)

    async def move_leader(self, req: Any) -> Any:
        return await self._cluster.move_leader(req)

    async def alarm(self, req: Any) -> Any:
        if self.maintenance is not None:
            return await self.maintenance.alarm(req)
        # No alarm table attached: nothing is ever raised; GET/DEACTIVATE list none.
        pb = _pb()
        if req.action == pb.AlarmRequest.ACTIVATE:
            raise errors.NOT_CAPABLE()
        return pb.AlarmResponse(header=self.header())

    async def defragment(self, req: Any) -> Any:
        if self.maintenance is not None:
            return await self.maintenance.defragment(req)
        # RocksDB compacts by itself. etcd 3.4 answers Defragment without a header.
        return _pb().DefragmentResponse()

    def hash_kv(self, req: Any) -> Any:
        """CRC-32 of the MVCC history up to req.revision (0: current); equal on
        members that applied the same log (etcd's corruption check)."""
        if self.maintenance is not None:
            return self.maintenance.hash_kv(req)
        value, compact_rev = self._store.hash_kv(req.revision)
        return _pb().HashKVResponse(header=self.header(), hash=value, compact_revision=compact_rev)

    async def hash(self, req: Any) -> Any:
        if self.maintenance is not None:
            return await self.maintenance.hash(req)
        value, _ = self._store.hash_kv(0)  # etcd hashes the whole backend
        return _pb().HashResponse(header=self.header(), hash=value)

    def snapshot(self, req: Any) -> Any:
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
