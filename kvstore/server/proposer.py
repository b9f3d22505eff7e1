"""Proposer: put a request through Raft and stamp response headers.

Owns: encoding `InternalRequest{kind: request}` with the driver's request id,
waiting out a short leaderless gap before proposing, and the
ResponseHeader (cluster id, member id, revision, raft term) — the two things
every facade (KV, lease, alarm, watch) needs, built before any of them so
none of them needs another facade (server.assembly passes it to each).
Never: validates requests or maps errors (the api layer does), touches the
Raft core (only through the driver).
"""

from __future__ import annotations

from typing import Any

from kvstore.mvcc import MvccStore
from kvstore.pb import internal_pb2, rpc_pb2
from kvstore.server.node import NodeDriver


class Proposer:
    """Implements `kvstore.seams.Proposer` over one driver and store."""

    def __init__(
        self, driver: NodeDriver, store: MvccStore, *, cluster_id: int, member_id: int
    ) -> None:
        self._driver = driver
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
        make = self._internal

        def payload(rid: int) -> bytes:
            ireq = make(id=rid)
            getattr(ireq, kind).CopyFrom(request)
            return ireq.SerializeToString()

        if self._driver.leader_id == 0:
            # Briefly wait out an election or a restart instead of failing at once.
            await self._driver.wait_leader()
        return await self._driver.propose(payload)
