"""Membership and leadership operations behind the Cluster / Maintenance RPCs.

Owns: MemberAdd / MemberRemove / MemberUpdate / MemberPromote as Raft conf
changes (single-server changes, thesis §4.1) and MoveLeader (§3.10); each
waits until the change is applied locally before answering, like etcd.
On a follower the request is forwarded to the leader's advertised client URL
(published through member_attributes entries) by transport.forward, as etcd
forwards to its leader.
MemberAdd draws a fresh, never-used id (time-salted, like etcd), so a removed
id never returns; operations on a removed id answer "member not found".
Never: edits the member table directly (only the applier does, when the
conf-change entry is applied); never touches the Raft core (the driver does).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, TypeVar

from kvstore import errors
from kvstore.raft.errors import ConfChangeInProgress, NotLeader, ProposalDropped
from kvstore.raft.types import ConfChange, ConfChangeType, Role
from kvstore.server import strict_reconfig
from kvstore.server.applier import encode_member_context
from kvstore.server.config import ConfigError, host_port, member_id
from kvstore.server.membership import Member, MemberTable
from kvstore.server.node import NodeDriver
from kvstore.transport.forward import (
    MEMBER_ADD,
    MEMBER_PROMOTE,
    MEMBER_REMOVE,
    MEMBER_UPDATE,
    LeaderForwarder,
    LeaderResolver,
)
from kvstore.transport.peer_client import UnaryMethod

Req = TypeVar("Req")
Resp = TypeVar("Resp")

# Salts tried before giving up on finding an unused member id (a collision of
# 64-bit hashes is already astronomically unlikely; this only bounds the loop).
MAX_ID_ATTEMPTS = 64

# A learner may be promoted once its match index is within this fraction of
# the leader's commit index (etcd: 90%).
LEARNER_READY_FRACTION = 0.9


def new_member_id(members: MemberTable, peer_urls: list[str], token: str, now_ns: int) -> int:
    """etcd's computeMemberId(peerURLs, token, now), re-salted until the id is
    neither a current nor a removed member (removed ids never come back)."""
    for salt in range(now_ns, now_ns + MAX_ID_ATTEMPTS):
        candidate = member_id(peer_urls, token, salt)
        if candidate and candidate not in members and not members.is_removed(candidate):
            return candidate
    raise errors.MEMBER_EXIST()


def _pb() -> Any:
    from kvstore.pb import rpc_pb2

    return rpc_pb2


class ClusterOps:
    """`forwarder`: how a follower reaches the leader (None: it cannot, and
    answers "no leader" to a membership change)."""

    def __init__(
        self,
        driver: NodeDriver,
        members: MemberTable,
        header: Any,
        cluster_token: str,
        forwarder: LeaderForwarder | None = None,
    ) -> None:
        self._driver = driver
        self._members = members
        self._header = header  # callable(revision) -> ResponseHeader
        self._token = cluster_token
        self._forwarder = forwarder
        self._resolver = (
            forwarder.resolver
            if forwarder is not None
            else LeaderResolver(lambda: driver.leader_id, members)
        )

    # ----------------------------------------------------------- helpers
    def _pb_members(self) -> list[Any]:
        pb = _pb()
        return [
            pb.Member(
                ID=m.id, name=m.name, peerURLs=m.peer_urls,
                clientURLs=m.client_urls, isLearner=m.is_learner,
            )
            for m in self._members.all()
        ]  # fmt: skip

    def leader_client_address(self) -> str | None:
        return self._resolver.leader_client_address()

    async def _forward(self, method: UnaryMethod[Req, Resp], request: Req) -> Resp:
        """Run `method` on the leader (we are a follower); errors.EtcdError."""
        if self._forwarder is None:
            raise errors.NO_LEADER()
        return await self._forwarder.unary(
            method, request, timeout_s=self._driver.request_timeout_s
        )

    async def _change(self, cc: ConfChange) -> None:
        """Propose `cc` on this (leader) node and wait until it is applied here."""
        try:
            index = await self._driver.propose_conf_change(cc)
        except ConfChangeInProgress as exc:
            raise errors.MEMBER_NOT_ENOUGH_STARTED() from exc
        except NotLeader as exc:
            raise errors.NOT_LEADER() from exc
        except ProposalDropped as exc:
            raise errors.NO_LEADER() from exc
        try:
            await asyncio.wait_for(
                self._driver.wait_applied(index), timeout=self._driver.request_timeout_s
            )
        except TimeoutError as exc:
            raise errors.TIMEOUT() from exc

    def _is_leader(self) -> bool:
        if self._driver.leader_id == 0:
            raise errors.NO_LEADER()
        return self._driver.role == Role.LEADER

    # -------------------------------------------------------------- RPCs
    async def member_add(self, req: Any) -> Any:
        urls = list(req.peerURLs)
        try:
            if not urls:
                raise ConfigError("no peer URLs")
            for url in urls:
                host_port(url)
        except ConfigError as exc:
            raise errors.MEMBER_BAD_URLS() from exc
        if not self._is_leader():
            return await self._forward(MEMBER_ADD, req)
        # etcd checks quorum safety first, then (when applying) the URLs.
        strict_reconfig.check_add(
            self._members.all(), self._driver.raft_status(), self._driver.member_id, req.isLearner
        )
        known = {u for m in self._members.all() for u in m.peer_urls}
        if known & set(urls):
            raise errors.PEER_URL_EXIST()
        if req.isLearner and sum(m.is_learner for m in self._members.all()) >= 1:
            raise errors.TOO_MANY_LEARNERS()
        # A fresh id each time, as etcd's NewMember(..., now): re-adding the
        # peer URLs of a removed member must not bring its id back. The new
        # member learns it from the member list (kvstore.server.join).
        new_id = new_member_id(self._members, urls, self._token, time.time_ns())
        member = Member(new_id, "", urls, is_learner=bool(req.isLearner))
        kind = ConfChangeType.ADD_LEARNER_NODE if req.isLearner else ConfChangeType.ADD_NODE
        await self._change(ConfChange(kind, new_id, encode_member_context(member)))
        pb = _pb()
        return pb.MemberAddResponse(
            header=self._header(0),
            member=pb.Member(ID=new_id, peerURLs=urls, isLearner=bool(req.isLearner)),
            members=self._pb_members(),
        )

    async def member_remove(self, req: Any) -> Any:
        if req.ID not in self._members:
            raise errors.MEMBER_NOT_FOUND()
        if not self._is_leader():
            return await self._forward(MEMBER_REMOVE, req)
        strict_reconfig.check_remove(
            self._members.all(), self._driver.raft_status(), self._driver.member_id, req.ID
        )
        await self._change(ConfChange(ConfChangeType.REMOVE_NODE, req.ID))
        return _pb().MemberRemoveResponse(header=self._header(0), members=self._pb_members())

    async def member_update(self, req: Any) -> Any:
        current = self._members.get(req.ID)
        if current is None:
            raise errors.MEMBER_NOT_FOUND()
        urls = list(req.peerURLs)
        try:
            for url in urls:
                host_port(url)
        except ConfigError as exc:
            raise errors.MEMBER_BAD_URLS() from exc
        others = {u for m in self._members.all() if m.id != req.ID for u in m.peer_urls}
        if others & set(urls):
            raise errors.PEER_URL_EXIST()
        if not self._is_leader():
            return await self._forward(MEMBER_UPDATE, req)
        member = Member(req.ID, current.name, urls, is_learner=current.is_learner)
        await self._change(
            ConfChange(ConfChangeType.UPDATE_NODE, req.ID, encode_member_context(member))
        )
        return _pb().MemberUpdateResponse(header=self._header(0), members=self._pb_members())

    async def member_promote(self, req: Any) -> Any:
        current = self._members.get(req.ID)
        if current is None:
            raise errors.MEMBER_NOT_FOUND()
        if not current.is_learner:
            raise errors.MEMBER_NOT_LEARNER()
        if not self._is_leader():
            return await self._forward(MEMBER_PROMOTE, req)
        status = self._driver.raft_status()
        progress = status.progress.get(req.ID)
        if progress is None or progress.match < LEARNER_READY_FRACTION * status.commit:
            raise errors.LEARNER_NOT_READY()
        strict_reconfig.check_promote(self._members.all())
        member = Member(req.ID, current.name, current.peer_urls, is_learner=False)
        await self._change(
            ConfChange(ConfChangeType.ADD_NODE, req.ID, encode_member_context(member))
        )
        return _pb().MemberPromoteResponse(header=self._header(0), members=self._pb_members())

    async def move_leader(self, req: Any) -> Any:
        if not self._is_leader():
            raise errors.NOT_LEADER()
        target = self._members.get(req.targetID)
        if target is None or target.is_learner:
            raise errors.BAD_LEADER_TRANSFEREE()
        if req.targetID != self._driver.member_id:
            self._driver.transfer_leadership(req.targetID)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._driver.request_timeout_s
            while self._driver.leader_id != req.targetID:
                if loop.time() >= deadline:
                    raise errors.TIMEOUT()
                await asyncio.sleep(0.01)
        return _pb().MoveLeaderResponse()  # no header, as etcd 3.4
