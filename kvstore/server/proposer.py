"""Proposer: put a request through Raft and stamp response headers.

Owns: encoding `InternalRequest{kind: request}` with the driver's request id,
waiting out a short leaderless gap before proposing, and the
ResponseHeader (cluster id, member id, revision, raft term) — the two things
every facade (KV, lease, alarm, watch) needs, built before any of them so
none of them needs another facade (server.assembly passes it to each).
With auth: each proposal carries who it is made for (the RPC's caller bound
by the API edge in kvstore.auth.caller.CALLER; none bound: anonymous, which
auth refuses; `propose_as_member`: the member itself), and
is proposed again when the apply stage answers AuthOldRevision while the
caller's credentials now resolve to a newer auth revision (etcd's raftRequest
loop).
Never: validates requests or maps errors (the api layer does), touches the
Raft core (only through the driver).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvstore.auth.caller import CALLER
from kvstore.auth.checker import NO_AUTH, AuthInfo
from kvstore.auth.errors import AuthOldRevision
from kvstore.mvcc import MvccStore
from kvstore.pb import internal_pb2, rpc_pb2
from kvstore.server.node import NodeDriver


class Proposer:
    """Implements `kvstore.seams.Proposer` over one driver and store."""

    def __init__(
        self,
        driver: NodeDriver,
        store: MvccStore,
        *,
        cluster_id: int,
        member_id: int,
        system_caller: Callable[[], AuthInfo] | None = None,
    ) -> None:
        """`system_caller`: who a proposal made outside any RPC acts for
        (server.auth_parts.NodeAuth.system_caller; None: nobody)."""
        self._driver = driver
        self._system_caller = system_caller
        self._store = store
        self.cluster_id = cluster_id
        self.member_id = member_id
        self._internal = internal_pb2.InternalRequest

    @property
    def store(self) -> MvccStore:
        return self._store

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        """ResponseHeader for this member; revision defaults to the current one."""
        rev = self._store.current_revision if revision is None else revision
        return rpc_pb2.ResponseHeader(
            cluster_id=self.cluster_id,
            member_id=self.member_id,
            revision=rev,
            raft_term=self._driver.term,
        )

    async def propose(self, kind: str, request: Any) -> Any:
        """Propose InternalRequest{kind: request}; return the apply result."""
        resolve = CALLER.get()
        if resolve is None:  # no caller bound: anonymous (fail-safe)
            return await self._propose_once(kind, request, NO_AUTH)
        ai = resolve()
        while True:
            try:
                return await self._propose_once(kind, request, ai)
            except AuthOldRevision:
                again = resolve()
                if again.revision <= ai.revision:
                    raise  # a JWT's revision never moves: the client re-authenticates
                ai = again

    async def propose_as_member(self, kind: str, request: Any) -> Any:
        """Propose for the member itself (lease expiry): root while auth is
        enabled, as etcd's auth.WithRoot; nobody otherwise."""
        system = self._system_caller
        if system is None:
            return await self._propose_once(kind, request, NO_AUTH)
        token = CALLER.set(system)
        try:
            return await self.propose(kind, request)
        finally:
            CALLER.reset(token)

    async def _propose_once(self, kind: str, request: Any, ai: AuthInfo) -> Any:
        make = self._internal
        username, auth_revision = ai.username, ai.revision

        def payload(rid: int) -> bytes:
            ireq = make(id=rid)
            getattr(ireq, kind).CopyFrom(request)
            if auth_revision:
                ireq.username = username
                ireq.auth_revision = auth_revision
            return ireq.SerializeToString()

        if self._driver.leader_id == 0:
            # Briefly wait out an election or a restart instead of failing at once.
            await self._driver.wait_leader()
        return await self._driver.propose(payload)
