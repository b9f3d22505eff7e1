"""KvNode: one running member — data dir, Raft core, transport, driver, facade.

Owns: wiring the parts together in the right order and tearing them down in
the reverse order; the peer gRPC server (unless one is passed in, e.g. bound
to port 0 by a test) with the member-list RPC joiners ask (kvstore.server.join);
on a first start with `--initial-cluster-state existing`, fetching this
member's ids from the running cluster before the data dir is created;
publishing this member's name and client URLs through Raft once a leader
exists (etcd's `publish`), until the member table shows them; setting
`removed` once this member is out of the cluster — it applied its own
removal (or a snapshot/member table saying so), or a peer's transport refused
it as removed (a removed follower never receives its removal entry) — and
keeping the transport's removed-id set equal to the member table's.
Never: serves clients (the caller adds the api servicers to its own client
server around `node.kv`); never reads the clock except to seed randomness.

Start: `node = KvNode(cfg); await node.start()`; stop: `await node.stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Callable
from typing import Any

import grpc

from kvstore import errors
from kvstore.server.applier import Applier, ApplyResult
from kvstore.server.config import NodeConfig, host_port
from kvstore.server.coordination import Coordination
from kvstore.server.datadir import OpenedDataDir, needs_join, open_data_dir
from kvstore.server.errors import StartupError
from kvstore.server.join import (
    add_members_service,
    fetch_join_info,
    member_list_fetcher,
    serve_snapshot,
)
from kvstore.server.kv_server import KvServer
from kvstore.server.metrics import NodeMetrics
from kvstore.server.node import NodeDriver, WatchHook
from kvstore.transport.forward import LeaderForwarder, LeaderResolver, LeaseForwarding
from kvstore.transport.peer_client import PeerChannels, PeerClient

log = logging.getLogger(__name__)

# A publish proposal not applied within this many election timeouts is
# proposed again (it was lost: dropped by a leader change, or applied as part
# of a snapshot, where its waiter never fires). Its success is seen in the
# member table, so a retry costs one duplicate, idempotent entry at most.
PUBLISH_ATTEMPT_ELECTIONS = 3
# Appends in flight per follower before the leader waits for an ack. Small on
# purpose: entries proposed meanwhile leave in ONE larger append, so followers
# fsync and answer far less often. Put at 64 clients, 3 members on loopback
# (benchmarks/kv_bench.py, interleaved A/B runs): 4 gave +10-30 % ops/s over
# 256 (etcd's order of magnitude) and over 8, and matched 1 and 2; a 1 MiB
# append per slot still keeps a catching-up follower's pipe full.
MAX_INFLIGHT_APPENDS = 4


def listen_address(url: str, flag: str) -> str:
    host, port = host_port(url, flag)
    return f"{host}:{port}"


def bind(server: grpc.aio.Server, url: str, flag: str) -> int:
    """Bind `server` to `url` (insecure); StartupError with one line on failure."""
    addr = listen_address(url, flag)
    host, port = host_port(url, flag)
    if port and not _can_bind(host, port):
        # Checked first so gRPC core does not log its own multi-line error.
        raise StartupError(f"cannot listen on {url} ({flag}): address already in use")
    try:
        port = server.add_insecure_port(addr)
    except RuntimeError as exc:
        raise StartupError(f"cannot listen on {url} ({flag}): address in use?") from exc
    if port == 0:
        raise StartupError(f"cannot listen on {url} ({flag}): address in use?")
    return port


def _can_bind(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def attach_peer_service(server: grpc.aio.Server, transport: Any) -> None:
    """Register the transport's inbound RaftPeer service on `server`."""
    add = getattr(transport, "add_to_server", None)
    if add is not None:
        add(server)
        return
    from kvstore.pb import raftpb_pb2_grpc

    raftpb_pb2_grpc.add_RaftPeerServicer_to_server(transport.servicer(), server)


class KvNode:
    def __init__(
        self,
        cfg: NodeConfig,
        *,
        peer_server: grpc.aio.Server | None = None,
        watch_hook: WatchHook | None = None,
        persist_in_thread: bool = True,
    ) -> None:
        self.cfg = cfg
        self._peer_server = peer_server
        self._watch_hook = watch_hook
        self._persist_in_thread = persist_in_thread
        self.data: OpenedDataDir | None = None
        self.driver: NodeDriver | None = None
        self.transport: Any = None
        self.kv: KvServer | None = None
        self.applier: Applier | None = None
        self._publish_task: asyncio.Task[None] | None = None
        # Set whenever the member table may have changed (apply or snapshot).
        self._members_changed = asyncio.Event()
        # Set once this member is removed from the cluster: it applied its own
        # removal, or a peer refused its stream as removed. The process owner
        # (kvstore.cli.server_cmd) waits on it and exits, like etcd.
        self.removed = asyncio.Event()
        self.maintenance: Any = None  # kvstore.maintenance.wiring.Maintenance
        self._apply_listeners: list[Callable[[ApplyResult], None]] = []
        self.coordination: Coordination | None = None
        # Every channel to another member comes from this pool (Raft streams,
        # snapshots, forwarding to the leader, the joiner's member list).
        # credentials=None: plaintext; peer TLS is chosen here and only here.
        self.peer_channels = PeerChannels(credentials=None)
        self.forwarder: LeaderForwarder | None = None
        # Read at scrape time; the api counts RPCs in it through `kv.metrics`.
        self.metrics = NodeMetrics(self)

    def add_apply_listener(self, fn: Callable[[ApplyResult], None]) -> None:
        self._apply_listeners.append(fn)

    async def start(self) -> None:
        """Open the data dir, start transport and driver. Raises DataDirError /
        StartupError (one-line messages) without leaving tasks behind."""
        from kvstore.raft.core import RaftConfig, RaftCore
        from kvstore.transport import GrpcTransport

        cfg = self.cfg
        # A joiner asks the running members who it is (ids are not derivable
        # from the flags once members were added and removed).
        client = PeerClient(self.peer_channels)
        join = await fetch_join_info(cfg, member_list_fetcher(client)) if needs_join(cfg) else None
        self.data = data = open_data_dir(cfg, join)
        try:
            member_id = data.member_id
            self.applier = Applier(data.store, data.members, data.applied_index)
            # Timing wrappers on the instances, before the driver holds them.
            self.metrics.instrument_applier(self.applier)
            self.metrics.instrument_storage(data.log_storage)
            # Leases + watches: lease hooks and apply handlers before any apply.
            self.coordination = coord = Coordination(
                data.store,
                data.backend,
                watch_progress_interval_s=cfg.watch_progress_notify_interval_s,
            )
            coord.register(self.applier)
            core = RaftCore(
                RaftConfig(
                    id=member_id,
                    election_ticks=cfg.election_ticks,
                    heartbeat_ticks=cfg.heartbeat_ticks,
                    pre_vote=True,
                    check_quorum=True,
                    max_size_per_msg=1 << 20,
                    max_inflight_msgs=MAX_INFLIGHT_APPENDS,
                    applied=data.applied_index,
                ),
                data.log_storage,
                random.Random(member_id ^ time.time_ns()),
            )
            self.transport = GrpcTransport(
                member_id, data.cluster_id, self._deliver, channels=self.peer_channels
            )
            # Followers run leader-only calls (lease keepalive/TTL, membership
            # changes) on the leader through this one forwarder.
            self.forwarder = LeaderForwarder(
                client, LeaderResolver(self._leader_id, data.members)
            )
            if hasattr(self.transport, "on_unreachable"):
                self.transport.on_unreachable = self._unreachable
            if hasattr(self.transport, "on_removed"):
                self.transport.on_removed = self._told_removed
            self.driver = NodeDriver(
                core,
                data.log_storage,
                self.applier,
                self.transport,
                member_id=member_id,
                tick_interval_s=cfg.tick_interval_s,
                election_timeout_s=cfg.election_timeout_s,
                watch_hook=self._publish_events,
                on_apply=self._on_apply,
                persist_in_thread=self._persist_in_thread,
                snapshot_count=cfg.snapshot_count,
            )
            self.kv = KvServer(
                self.driver,
                data.store,
                data.members,
                cluster_id=data.cluster_id,
                member_id=member_id,
                db_size=lambda: self._backend_size("size_bytes"),
                db_size_in_use=lambda: self._backend_size("size_in_use_bytes"),
                cluster_token=cfg.initial_cluster_token,
                forwarder=self.forwarder,
            )
            self.kv.metrics = self.metrics  # add_servicers counts RPCs in it
            coord.bind(self.kv, LeaseForwarding(self.forwarder), member_id,
                       cfg.election_timeout_s)  # fmt: skip
            self._update_peers()
            if self._peer_server is None:
                from kvstore.transport import SERVER_OPTIONS

                # so_reuseport=0: fail loudly when the peer port is taken.
                self._peer_server = grpc.aio.server(
                    options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 0)]
                )
                for url in cfg.listen_peer_urls:
                    bind(self._peer_server, url, "--listen-peer-urls")
            attach_peer_service(self._peer_server, self.transport)
            add_members_service(self._peer_server, serve_snapshot(self))
            await self._peer_server.start()
            self.maintenance = _attach_maintenance(self)
            await _maybe_await(self.transport.start())
            coord.follow_snapshots(getattr(self, "maintenance", None))
            self.driver.start()
            coord.start()
            voters = getattr(core.conf_state, "voters", ())
            if tuple(voters) == (member_id,) and core.leader_id == 0:
                self.driver.campaign()  # single voter: no reason to wait a timeout
            self._publish_task = asyncio.create_task(self._publish(), name="publish-attributes")
        except BaseException:
            await self.stop()
            raise

    def _publish_events(self, events: list) -> None:
        """Driver watch hook: the node's watch hub, then an extra hook if given."""
        if self.coordination is not None:
            self.coordination.publish(events)
        if self._watch_hook is not None:
            self._watch_hook(events)

    def _deliver(self, messages: list) -> None:
        if self.driver is not None:
            self.driver.deliver(messages)

    def _leader_id(self) -> int:
        return self.driver.leader_id if self.driver is not None else 0

    def _unreachable(self, peer_id: int) -> None:
        if self.driver is not None:
            self.driver.report_unreachable(peer_id)

    def _told_removed(self) -> None:
        """Transport callback: a peer refused our stream as a removed member."""
        self._mark_removed("a peer reports it")

    def _mark_removed(self, how: str) -> None:
        if self.removed.is_set():
            return
        member_id = self.data.member_id if self.data is not None else 0
        # etcd's stop reason, word for word (server_cmd logs it again on exit).
        log.warning("member %x has been permanently removed from the cluster (%s)",
                    member_id, how)  # fmt: skip
        self.removed.set()

    def _backend_size(self, method: str) -> int:
        backend = self.data.backend if self.data else None
        size = getattr(backend, method, None)
        try:
            return int(size()) if size else 0
        except Exception:  # noqa: BLE001
            return 0

    def _update_peers(self) -> None:
        """Sync the transport with the member table (start, apply, snapshot)."""
        assert self.data is not None
        members = self.data.members
        me = self.data.member_id
        peers = {mid: url for mid, url in members.peer_urls().items() if mid != me}
        self.transport.set_peers(peers)
        set_removed = getattr(self.transport, "set_removed", None)
        if set_removed is not None:
            set_removed(members.removed)
        self._members_changed.set()
        if members.is_removed(me):
            # Also on a restart after the removal was applied, or when a
            # snapshot carries it: a removed member has nothing left to do.
            self._mark_removed("in the member table")

    def _on_apply(self, result: ApplyResult) -> None:
        if self.data is not None and self.data.member_id in result.removed:
            # etcd stops a member that applies its own removal.
            self._mark_removed("applied its own removal")
        if result.members_changed:
            self._update_peers()
        for fn in self._apply_listeners:
            fn(result)

    def _attributes_published(self) -> bool:
        assert self.data is not None
        current = self.data.members.get(self.data.member_id)
        return (
            current is not None
            and current.name == self.cfg.name
            and list(current.client_urls) == list(self.cfg.advertise_client_urls)
        )

    async def _publish(self) -> None:
        """Propose our name + client URLs until the member table shows them
        (etcd's publish).

        Success is read from the member table, not only from the proposal's
        answer: a joiner that catches up by snapshot applies its own publish
        entry inside the snapshot, where no waiter fires, and a proposal lost
        to a leader change is never answered; both used to cost a full request
        timeout. Each attempt first waits for a leader (proposing earlier only
        fails), and ends early as soon as the table shows the attributes."""
        from kvstore.pb import internal_pb2

        assert self.kv is not None and self.data is not None and self.driver is not None
        kv, driver = self.kv, self.driver
        attrs = internal_pb2.MemberAttributes(
            member_id=self.data.member_id,
            name=self.cfg.name,
            client_urls=list(self.cfg.advertise_client_urls),
        )
        attempt_s = PUBLISH_ATTEMPT_ELECTIONS * self.cfg.election_timeout_s
        loop = asyncio.get_running_loop()
        while not self._attributes_published():
            if self.data.members.is_removed(self.data.member_id):
                return  # removed from the cluster: nothing to publish to
            try:
                await driver.wait_leader()
            except errors.EtcdError:
                if driver.stopped:
                    return
                continue  # still no leader: keep waiting (wait_leader is bounded)
            proposal = asyncio.ensure_future(kv.propose("member_attributes", attrs))
            proposal.add_done_callback(_consume_exception)
            deadline = loop.time() + attempt_s
            while not proposal.done() and not self._attributes_published():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    log.info("publishing member attributes: no answer yet, proposing again")
                    break
                self._members_changed.clear()
                changed = asyncio.ensure_future(self._members_changed.wait())
                try:
                    await asyncio.wait({proposal, changed}, timeout=remaining,
                                       return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                finally:
                    changed.cancel()
            if proposal.done() and not proposal.cancelled():
                exc = proposal.exception()
                if exc is None:
                    return
                if driver.stopped or exc == errors.STOPPED():
                    return
                # NO_LEADER / TIMEOUT / TOO_MANY_REQUESTS: try again after a
                # tick (wait_leader() above paces it while there is no leader).
                await asyncio.sleep(self.cfg.tick_interval_s)

    async def stop(self) -> None:
        """Stop driver, transport and peer server; close the database."""
        if self._publish_task is not None:
            self._publish_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._publish_task
            self._publish_task = None
        if self.maintenance is not None:
            try:
                await self.maintenance.stop()
            except Exception:  # noqa: BLE001
                log.exception("maintenance stop failed")
            self.maintenance = None
        if self.coordination is not None:
            await self.coordination.stop()
        if self.driver is not None:
            await self.driver.stop()
        if self.transport is not None:
            try:
                await _maybe_await(self.transport.stop())
            except Exception:  # noqa: BLE001
                log.exception("transport stop failed")
        if self.forwarder is not None:
            await self.forwarder.close()
        await self.peer_channels.close()
        if self._peer_server is not None:
            # A pre-bound server passed in is handed over: we start and stop it.
            await self._peer_server.stop(grace=0.5)
        if self.data is not None:
            self.data.close()
            self.data = None


def _attach_maintenance(node: KvNode) -> Any:
    """Quota/alarms, hash, snapshot send/install, auto-compaction (if installed)."""
    try:
        from kvstore.maintenance.wiring import attach_maintenance
    except ImportError:
        return None
    return attach_maintenance(node)


def _consume_exception(fut: asyncio.Future[Any]) -> None:
    """Retrieve a dropped proposal's outcome so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()


async def _maybe_await(value: Any) -> Any:
    if asyncio.iscoroutine(value) or isinstance(value, asyncio.Future):
        return await value
    return value
