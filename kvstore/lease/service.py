"""LeaseService: the lease facade the Lease servicer calls (pb in, pb out).

Owns: choosing lease IDs and clamping TTLs before proposing (so apply stays
deterministic), the Raft proposals for grant / revoke / checkpoint, the
leader loop that promotes/demotes `LeaderLeases` and proposes revokes for
expired leases and TTL checkpoints, and answering keepalive / time-to-live
on the leader or forwarding them to it through the injected `LeaseForwarder`
(followers keep no expiry clock).
Never: imports server/ or transport/ (the node passes callables and the
forwarder in), opens connections, mutates the lessor
outside apply, or answers a keepalive from a follower's own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from kvstore import errors
from kvstore import failpoints as fp
from kvstore.lease.leader import LeaderLeases
from kvstore.lease.lessor import MAX_LEASE_TTL_S, Lessor
from kvstore.pb import rpc_pb2
from kvstore.seams import LeaseForwarder

log = logging.getLogger(__name__)

DEFAULT_LOOP_INTERVAL_S = 0.5  # etcd checks expiry at least every 500 ms

Propose = Callable[[str, Any], Awaitable[Any]]
Header = Callable[..., rpc_pb2.ResponseHeader]


def min_lease_ttl(election_timeout_s: float) -> int:
    """etcd: a lease must outlive an election, ceil(1.5 x election timeout)."""
    return max(1, math.ceil(1.5 * election_timeout_s))


class LeaseIdGen:
    """etcd idutil.Generator: 16 bits of member id | 40 bits of ms time | counter;
    masked to a positive int64, never 0."""

    def __init__(self, member_id: int, now_ms: int | None = None) -> None:
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        self._prefix = (member_id & 0xFFFF) << 48
        self._suffix = itertools.count((ms & ((1 << 40) - 1)) << 8)

    def next(self) -> int:
        while True:
            value = (self._prefix | (next(self._suffix) & ((1 << 48) - 1))) & ((1 << 63) - 1)
            if value:
                return value


class LeaseService:
    """Async lease facade; every method may raise `kvstore.errors.EtcdError`."""

    def __init__(
        self,
        lessor: Lessor,
        leader: LeaderLeases,
        *,
        propose: Propose,
        header: Header,
        is_leader: Callable[[], bool],
        forwarder: LeaseForwarder,
        member_id: int,
        min_ttl_s: int,
        loop_interval_s: float = DEFAULT_LOOP_INTERVAL_S,
    ) -> None:
        self.lessor = lessor
        self.leader = leader
        self._propose = propose
        self._header = header
        self._is_leader = is_leader
        self._forwarder = forwarder
        self._ids = LeaseIdGen(member_id)
        self.min_ttl_s = min_ttl_s
        self.loop_interval_s = loop_interval_s
        self._task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[Any]] = set()
        self._clears: set[int] = set()
        self._clear_batch: asyncio.Future[None] | None = None
        self._clear_lock = asyncio.Lock()

    # --------------------------------------------------------------- RPCs
    async def grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse:
        if req.TTL > MAX_LEASE_TTL_S:
            raise errors.LEASE_TTL_TOO_LARGE()
        prop = rpc_pb2.LeaseGrantRequest(
            TTL=max(req.TTL, self.min_ttl_s), ID=req.ID if req.ID else self._ids.next()
        )
        resp = await self._propose("lease_grant", prop)
        resp.header.CopyFrom(self._header())
        return resp

    async def revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse:
        resp = await self._propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=req.ID))
        resp.header.CopyFrom(self._header(resp.header.revision or None))
        return resp

    async def keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        """Renew on the leader (TTL = granted TTL; 0 if unknown/expired), or
        forward to the leader from a follower."""
        if not self._is_leader():
            return await self._forward_keepalive(lease_id)
        self._sync_role()
        ttl, needs_clear = self.leader.renew(lease_id)
        if needs_clear:
            # Wait for it: answering first would let a leader change right
            # after this reply restart the lease from its stale checkpoint.
            await self._clear_checkpoint(lease_id)
        return rpc_pb2.LeaseKeepAliveResponse(header=self._header(), ID=lease_id, TTL=ttl)

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        """TTL -1 for an unknown lease (no error), as etcd."""
        if not self._is_leader():
            return await self._forward_time_to_live(req)
        self._sync_role()
        lease = self.lessor.get(req.ID)
        resp = rpc_pb2.LeaseTimeToLiveResponse(header=self._header(), ID=req.ID)
        if lease is None:
            resp.TTL = -1
            return resp
        remaining = self.leader.remaining(req.ID)
        resp.TTL = remaining if remaining is not None else (lease.remaining_ttl or lease.ttl)
        resp.grantedTTL = lease.ttl
        if req.keys:
            resp.keys.extend(self.lessor.keys_of(req.ID))
        return resp

    def leases(self, req: rpc_pb2.LeaseLeasesRequest | None = None) -> rpc_pb2.LeaseLeasesResponse:
        return rpc_pb2.LeaseLeasesResponse(
            header=self._header(),
            leases=[rpc_pb2.LeaseStatus(ID=i) for i in sorted(self.lessor.ids())],
        )

    async def _clear_checkpoint(self, lease_id: int) -> None:
        """Batch the clears of concurrent renewals into one entry; at most one
        such proposal is in flight, so their rate is bounded by Raft latency,
        not by the number of leases."""
        self._clears.add(lease_id)
        batch = self._clear_batch
        if batch is None:
            batch = self._clear_batch = asyncio.get_running_loop().create_future()
            self._spawn(self._flush_clears(batch))
        await asyncio.shield(batch)

    async def _flush_clears(self, done: asyncio.Future[None]) -> None:
        try:
            async with self._clear_lock:
                ids, self._clears = sorted(self._clears), set()
                self._clear_batch = None
                req = rpc_pb2.LeaseCheckpointRequest(
                    checkpoints=[rpc_pb2.LeaseCheckpoint(ID=i, remaining_TTL=0) for i in ids]
                )
                await self._propose_quietly("lease_checkpoint", req)
        finally:
            if not done.done():
                done.set_result(None)

    # --------------------------------------------------------- forwarding
    async def _forward_keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse:
        resp = await self._forwarder.keepalive(lease_id)
        # Answered in this member's name, as etcd's follower does.
        return rpc_pb2.LeaseKeepAliveResponse(header=self._header(), ID=resp.ID, TTL=resp.TTL)

    async def _forward_time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse:
        resp = await self._forwarder.time_to_live(req)
        resp.header.CopyFrom(self._header())
        return resp

    # -------------------------------------------------------- leader loop
    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="lease-leader-loop")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._task = None
        self._inflight.clear()

    async def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the loop must survive one bad pass
                log.exception("lease leader pass failed")
            await asyncio.sleep(self.loop_interval_s)

    def _sync_role(self) -> None:
        is_leader = self._is_leader()
        if is_leader and not self.leader.active:
            self.leader.promote()
        elif not is_leader and self.leader.active:
            self.leader.demote()

    def run_once(self) -> None:
        """One leader pass: follow the role, propose revokes and checkpoints."""
        self._sync_role()
        if not self.leader.active:
            return
        for lease_id in self.leader.expired():
            self._spawn(self._revoke_expired(lease_id))
        checkpoints = self.leader.checkpoints_due()
        if checkpoints:
            req = rpc_pb2.LeaseCheckpointRequest(
                checkpoints=[rpc_pb2.LeaseCheckpoint(ID=i, remaining_TTL=r) for i, r in checkpoints]
            )
            self._spawn(self._propose_quietly("lease_checkpoint", req))

    async def settle(self) -> None:
        """Wait until the proposals started by `run_once` have finished."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _revoke_expired(self, lease_id: int) -> None:
        try:
            fp.ON and fp.hit("lease_before_revoke")
            await self._propose("lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=lease_id))
        except errors.EtcdError as exc:
            if exc != errors.LEASE_NOT_FOUND():
                log.info("revoke of expired lease %x failed: %s", lease_id, exc.message)
                self.leader.revoke_failed(lease_id)

    async def _propose_quietly(self, kind: str, req: Any) -> None:
        try:
            await self._propose(kind, req)
        except errors.EtcdError as exc:
            log.info("%s proposal failed: %s", kind, exc.message)
