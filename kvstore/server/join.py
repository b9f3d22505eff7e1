"""Joining a running cluster: the member list over the peer port, and its use.

Owns: the small peer-port RPC `/kvstore.peer.Membership/Members` (etcd serves
the same on its peer URLs as GET /members), which answers the responder's
cluster id and member table as JSON; and the joiner's side: ask the members
listed in `--initial-cluster` (never itself) until one answers, then find this
member in the answer by its peer URLs (etcd's GetClusterFromRemotePeers +
ValidateClusterAndAssignIDs). The joiner so learns the cluster id and the id
MemberAdd gave it, whatever adds and removes happened before.
Never: writes to disk or proposes anything; never trusts a flag-derived id;
opens connections itself (the RPC's wire side is transport/members_rpc.py,
over the node's peer client).

The RPC carries raw bytes (this module's JSON), so no generated protobuf
module is needed on either side.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from kvstore.server.config import NodeConfig
from kvstore.server.datadir import OpenedDataDir
from kvstore.server.errors import StartupError
from kvstore.server.membership import JoinInfo, MemberTable
from kvstore.transport import members_rpc
from kvstore.transport.peer_client import PeerCallError, PeerClient

if TYPE_CHECKING:
    import grpc

log = logging.getLogger(__name__)

SERVICE = members_rpc.SERVICE
METHOD = members_rpc.METHOD
# Per-peer RPC deadline, and how long a joiner keeps asking before giving up
# (the members may be busy: under load an answer can take a while).
FETCH_RPC_TIMEOUT_S = 3.0
FETCH_TOTAL_TIMEOUT_S = 30.0
FETCH_RETRY_S = 0.25
# A peer that answers without this member may only lag behind the MemberAdd
# (a follower applies it after the leader answered etcdctl): ask again for
# this long before calling the member unknown.
NOT_LISTED_GRACE_S = 5.0


class NotListedError(StartupError):
    """The fetched member table does not list this member's peer URLs."""


def encode_cluster(cluster_id: int, member_id: int, members: MemberTable) -> bytes:
    """Answer of the Members RPC: who answers, of which cluster, with what table."""
    return json.dumps(
        {
            "cluster_id": f"{cluster_id:x}",
            "member_id": f"{member_id:x}",
            "table": json.loads(members.encode()),
        },
        separators=(",", ":"),
    ).encode()


def decode_cluster(data: bytes) -> tuple[int, int, MemberTable]:
    """-> (cluster id, responder id, member table); ValueError if malformed."""
    try:
        obj = json.loads(data)
        table = MemberTable.decode(json.dumps(obj["table"]).encode())
        return int(obj["cluster_id"], 16), int(obj["member_id"], 16), table
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"malformed member list: {exc}") from exc


def add_members_service(
    server: grpc.aio.Server, snapshot: Callable[[], tuple[int, int, MemberTable] | None]
) -> None:
    """Serve the Members RPC on the peer server (before it starts).

    `snapshot()` -> (cluster id, own member id, member table), or None while
    the node is not open yet (answered UNAVAILABLE)."""

    def answer() -> bytes | None:
        current = snapshot()
        return None if current is None else encode_cluster(*current)

    members_rpc.add_members_service(server, answer)


def find_self(cfg: NodeConfig, cluster_id: int, table: MemberTable) -> JoinInfo:
    """Pick this member out of a fetched table by its advertised peer URLs.

    StartupError (one line) when it is not there (not added yet, or removed:
    a removed id never comes back, add the member again for a new id), or
    when it has already run with another data dir."""
    me = table.find_by_peer_urls(cfg.initial_advertise_peer_urls)
    if me is None:
        raise NotListedError(
            f"cluster {cluster_id:x} has no member with peer URLs "
            f"{','.join(cfg.initial_advertise_peer_urls)}; add it first "
            "(etcdctl member add) and start it with the URLs given there"
        )
    if me.client_urls:
        # It published its client URLs, so it ran before and had a data dir
        # (etcd: isMemberBootstrapped): rejoining with an empty log would let
        # a voter forget its votes.
        raise StartupError(
            f"member {me.id:x} of cluster {cluster_id:x} has already been bootstrapped "
            "(its data dir was lost?): remove it and add it again"
        )
    return JoinInfo(member_id=me.id, cluster_id=cluster_id, members=table)


def remote_peer_urls(cfg: NodeConfig) -> list[str]:
    """Peer URLs in --initial-cluster other than this member's own."""
    own = set(cfg.initial_advertise_peer_urls)
    return [
        url
        for peer in cfg.peers.values()
        if peer.name != cfg.name
        for url in peer.peer_urls
        if url not in own
    ]


# Asks one member (by peer URL) for (cluster id, responder id, member table).
FetchMembers = Callable[[str], Awaitable[tuple[int, int, MemberTable]]]


def member_list_fetcher(
    client: PeerClient, timeout_s: float = FETCH_RPC_TIMEOUT_S
) -> FetchMembers:
    """`fetch` for fetch_join_info: the Members RPC over the node's peer client."""

    async def fetch(url: str) -> tuple[int, int, MemberTable]:
        return decode_cluster(await members_rpc.fetch_members(client, url, timeout_s))

    return fetch


async def fetch_join_info(
    cfg: NodeConfig, fetch: FetchMembers, total_timeout_s: float = FETCH_TOTAL_TIMEOUT_S
) -> JoinInfo:
    """Learn ids and members from the running cluster (first start with
    `--initial-cluster-state existing`), asking members with `fetch`
    (member_list_fetcher). StartupError if nobody answers, or if the answer
    does not list this member."""
    urls = remote_peer_urls(cfg)
    if not urls:
        raise StartupError("--initial-cluster lists no other member to join through")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total_timeout_s
    failures: dict[str, str] = {}
    not_listed_since: float | None = None
    while True:
        for url in urls:
            try:
                cid, responder, table = await fetch(url)
            except (PeerCallError, ValueError, OSError) as exc:
                why = exc.details if isinstance(exc, PeerCallError) else str(exc)
                failures[url] = why or type(exc).__name__
                continue
            if not cid:
                failures[url] = "answered without a cluster id"
                continue
            try:
                info = find_self(cfg, cid, table)
            except NotListedError:
                now = loop.time()
                if not_listed_since is None:
                    not_listed_since = now
                if now - not_listed_since >= NOT_LISTED_GRACE_S or now >= deadline:
                    raise
                continue
            log.info(
                "joining cluster %x as member %x (member list from %x at %s)",
                cid, info.member_id, responder, url,
            )  # fmt: skip
            return info
        if loop.time() >= deadline:
            detail = "; ".join(f"{u}: {e}" for u, e in failures.items())
            raise StartupError(
                f"cannot fetch the member list from any peer in --initial-cluster ({detail})"
            )
        await asyncio.sleep(FETCH_RETRY_S)


class _HasDataDir(Protocol):
    """A KvNode as the member-list answer reads it (None: not open yet)."""

    @property
    def data(self) -> OpenedDataDir | None: ...


def serve_snapshot(node: _HasDataDir) -> Callable[[], tuple[int, int, MemberTable] | None]:
    """`snapshot` callable for add_members_service over a KvNode."""

    def snapshot() -> tuple[int, int, MemberTable] | None:
        data = node.data
        if data is None:
            return None
        return data.cluster_id, data.member_id, data.members

    return snapshot
