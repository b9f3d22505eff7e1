"""The composition root: every part of one member, built through constructors.

Owns: `NodeParts`, whose constructor builds a member's components in
dependency order, each handed the parts (or the `kvstore.seams` callables) it
needs, and nothing set on any object afterwards:

    peers       PeerChannels (every channel to another member; the one choice
                of peer credentials, server.tls_parts), the peer listener's
                reloading credentials, and PeerClient over it — made first by
                `NodeParts.open`, since a joiner asks the running members who
                it is before its data dir exists
    storage     data dir: RocksDB backend, Raft log, MVCC store (with the
                lessor as its lease hooks), member table, alarm table
    snapshots   installer (maintenance/snapshot_install.py, + what reloads
                after an install), receiver and sender (transport/)
    transport   GrpcTransport (Raft streams over the pool; MSG_SNAP to the
                sender)
    auth        NodeAuth (server.auth_parts): auth store loaded from the
                data dir, permission checker, token provider, hasher
    raft        `build_raft_member`: Applier (permission stage NodeAuth.check
                -> gate stages: NOSPACE quota -> handlers: MVCC, lease,
                alarm, auth writes; timings to the metrics observer)
                -> RaftCore -> NodeDriver -> Proposer
    forwarding  LeaderForwarder over LeaderResolver (followers run lease
                keepalive/TTL and membership changes on the leader)
    facades     WatchHub, LeaseService, MaintenanceService, AutoCompactor
                -> KvServer (what the api servicers call)

and `start()` / `stop()` of their background tasks, in that order and in
reverse (the forwarder and the channel pool close last). A cycle in "who
calls whom" (the transport delivers to the driver, which sends through the
transport; the installer reloads parts built after it; the resolver asks the
driver who leads) goes through a method of this class, so each constructor
still receives everything it needs.
Never: binds a listener or registers gRPC services (KvNode and the `kvstore`
command do), reads the clock except to seed randomness and the compactor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.auth.caller import CALLER
from kvstore.lease import (
    LeaderLeases,
    LeaseService,
    Lessor,
    MonotonicClock,
    min_lease_ttl,
)
from kvstore.maintenance.backup import verify_file
from kvstore.maintenance.compaction import AutoCompactor, parse_retention
from kvstore.maintenance.quota import AlarmTable, effective_quota
from kvstore.maintenance.service import MaintenanceService
from kvstore.maintenance.snapshot_install import BackupSnapshotSource, SnapshotInstaller
from kvstore.mvcc import MvccStore
from kvstore.pb import kv_pb2, rpc_pb2
from kvstore.raft.core import RaftConfig, RaftCore
from kvstore.raft.types import Message, MessageType, Snapshot
from kvstore.seams import (
    ApplyGate,
    ApplyHandler,
    Clock,
    DurableLog,
    MessageSink,
    NodeObserver,
    WatchHook,
)
from kvstore.seams import (
    SnapshotInstaller as Installer,
)
from kvstore.server.applier import Applier, ApplyResult, apply_handlers
from kvstore.server.auth_parts import NodeAuth
from kvstore.server.config import NodeConfig
from kvstore.server.datadir import OpenedDataDir, needs_join, open_data_dir
from kvstore.server.join import fetch_join_info, member_list_fetcher
from kvstore.server.kv_server import KvServer
from kvstore.server.membership import MEMBERS_META_KEY, JoinInfo, MemberTable
from kvstore.server.metrics import NodeMetrics
from kvstore.server.node import NodeDriver
from kvstore.server.proposer import Proposer
from kvstore.server.tls_parts import (
    forward_channel_credentials,
    peer_channel_credentials,
    peer_server_credentials,
)
from kvstore.storage.snapshot_spool import SPOOL_DIRNAME, clean_spool
from kvstore.transport import GrpcTransport
from kvstore.transport.forward import LeaderForwarder, LeaderResolver, LeaseForwarding
from kvstore.transport.peer_client import PeerChannels, PeerClient
from kvstore.transport.snapshot_recv import SnapshotReceiver
from kvstore.transport.snapshot_send import SnapshotSender
from kvstore.watch import WatchHub

log = logging.getLogger(__name__)

# Appends in flight per follower before the leader waits for an ack. Small on
# purpose: entries proposed meanwhile leave in ONE larger append, so followers
# fsync and answer far less often. Put at 64 clients, 3 members on loopback
# (benchmarks/kv_bench.py, interleaved A/B runs): 4 gave +10-30 % ops/s over
# 256 (etcd's order of magnitude) and over 8, and matched 1 and 2; a 1 MiB
# append per slot still keeps a catching-up follower's pipe full.
MAX_INFLIGHT_APPENDS = 4


@dataclass
class RaftMember:
    """The Raft half of a member (see build_raft_member)."""

    applier: Applier
    core: RaftCore
    driver: NodeDriver
    proposer: Proposer


def build_raft_member(
    raft: RaftConfig,
    *,
    cluster_id: int,
    store: MvccStore,
    members: MemberTable,
    log_storage: DurableLog,
    transport: MessageSink,
    rng: random.Random,
    tick_interval_s: float,
    election_timeout_s: float,
    handlers: Mapping[str, ApplyHandler] | None = None,
    gates: Sequence[ApplyGate] = (),
    auth: NodeAuth | None = None,
    observer: NodeObserver | None = None,
    watch_hook: WatchHook | None = None,
    on_apply: Callable[[ApplyResult], None] | None = None,
    snapshot_installer: Installer | None = None,
    persist_in_thread: bool = True,
    snapshot_count: int = 100_000,
    request_timeout_s: float | None = None,
) -> RaftMember:
    """Apply pipeline -> Raft core -> driver -> proposer, in that order.

    NodeParts builds every member's Raft half here; the driver tests build
    theirs here too, with in-memory storage and a loopback transport."""
    applier = Applier(
        store, members, raft.applied, handlers=handlers, gates=gates, observer=observer,
        auth=auth,
    )  # fmt: skip
    core = RaftCore(raft, log_storage, rng)
    driver = NodeDriver(
        core,
        log_storage,
        applier,
        transport,
        member_id=raft.id,
        tick_interval_s=tick_interval_s,
        election_timeout_s=election_timeout_s,
        request_timeout_s=request_timeout_s,
        watch_hook=watch_hook,
        on_apply=on_apply,
        persist_in_thread=persist_in_thread,
        snapshot_count=snapshot_count,
        snapshot_installer=snapshot_installer,
        observer=observer,
    )
    proposer = Proposer(
        driver, store, cluster_id=cluster_id, member_id=raft.id,
        system_caller=auth.system_caller if auth is not None else None,
    )  # fmt: skip
    return RaftMember(applier, core, driver, proposer)


class NodeEvents:
    """What the parts tell their owner (KvNode); no-ops by default."""

    def applied(self, result: ApplyResult) -> None:
        """A batch of committed entries was applied."""

    def members_changed(self) -> None:
        """The member table may have changed (apply or snapshot install)."""

    def told_removed(self) -> None:
        """A peer refused our stream: this member was removed."""

    def published(self, events: list[tuple[int, list[kv_pb2.Event]]]) -> None:
        """Events of an applied batch, after the watch hub had them."""


class NodeParts:
    """One member's components (see the module docstring for the order).

    Built by `await NodeParts.open(cfg, ...)`. Raises what `open_data_dir`
    raises (DataDirError), or StartupError when a joiner cannot learn its
    ids, without leaving anything open."""

    @classmethod
    async def open(
        cls,
        cfg: NodeConfig,
        *,
        metrics: NodeMetrics,
        events: NodeEvents,
        persist_in_thread: bool = True,
        lease_clock: Clock | None = None,
    ) -> NodeParts:
        """The channel pool first: a joiner (`--initial-cluster-state
        existing`, no data dir yet) asks the running members through it who
        it is (ids are not derivable from the flags once members were added
        and removed); then every other part."""
        # Peer TLS is chosen here and only here (None: plaintext).
        channels = PeerChannels(credentials=peer_channel_credentials(cfg))
        try:
            join = None
            if needs_join(cfg):
                join = await fetch_join_info(cfg, member_list_fetcher(PeerClient(channels)))
            return cls(
                cfg, join, channels, metrics=metrics, events=events,
                persist_in_thread=persist_in_thread, lease_clock=lease_clock,
            )  # fmt: skip
        except BaseException:
            await channels.close()
            raise

    def __init__(
        self,
        cfg: NodeConfig,
        join: JoinInfo | None,
        channels: PeerChannels,
        *,
        metrics: NodeMetrics,
        events: NodeEvents,
        persist_in_thread: bool = True,
        lease_clock: Clock | None = None,
    ) -> None:
        """`channels`: the pool every peer connection comes from; owned from
        here on (closed by `stop()`), not closed if this raises."""
        self.cfg = cfg
        self._events = events
        # The leader's lease deadlines (tests pass a FakeClock).
        self._lease_clock: Clock = lease_clock or MonotonicClock()
        # --- peers: every channel to another member comes from this pool ----
        self.channels = channels
        # The peer listener's reloading credentials (KvNode binds it); None: plaintext.
        self.peer_tls = peer_server_credentials(cfg)
        self.peer_client = PeerClient(channels)
        # --- storage (the lessor first: the MVCC store's lease hooks) -------
        self.lessor = Lessor()
        self.data: OpenedDataDir = open_data_dir(cfg, join, lease_hooks=self.lessor)
        data = self.data
        try:
            self._build(cfg, data, metrics, persist_in_thread)
        except BaseException:
            data.close()
            raise

    def _build(
        self, cfg: NodeConfig, data: OpenedDataDir, metrics: NodeMetrics, persist_in_thread: bool
    ) -> None:
        member_id, cluster_id = data.member_id, data.cluster_id
        backend, store = data.backend, data.store
        self.lessor.recover(backend, store.leased_keys())
        self.alarms = AlarmTable.load(backend)
        self.spool = Path(data.path) / SPOOL_DIRNAME
        clean_spool(self.spool)

        # --- snapshots: install (reloading every view), receive, send -------
        self.installer = SnapshotInstaller(backend, [self._snapshot_installed])
        # The receiver has the installer stage the state off the loop before
        # Raft gets the message; the driver's install then only switches.
        self.receiver = SnapshotReceiver(
            self.spool, cluster_id=cluster_id, deliver=self._deliver,
            verify=verify_file, prepare=self.installer.prepare,
        )  # fmt: skip
        self.sender = SnapshotSender(
            self.channels,
            BackupSnapshotSource(backend),
            self.spool,
            cluster_id=cluster_id,
            self_id=member_id,
            peer_address=self._peer_address,
            report=self._snapshot_sent,
        )

        # --- transport -----------------------------------------------------------
        self.transport = GrpcTransport(
            member_id,
            cluster_id,
            self._deliver,
            channels=self.channels,
            on_unreachable=self._unreachable,
            on_removed=self._events.told_removed,
            snapshot_sender=self.sender.send,
            snapshot_receiver=self.receiver.handle,
        )
        # --- auth: the replicated store as the data dir has it --------------
        self.auth = NodeAuth(
            backend,
            self.lessor.keys_of,
            auth_token=cfg.auth_token,
            token_ttl_s=cfg.auth_token_ttl_s,
            client_cert_auth=cfg.client_cert_auth,
        )
        handlers = dict(apply_handlers(lessor=self.lessor, alarms=self.alarms))
        handlers.update(self.auth.store.handlers())

        # --- raft: apply pipeline (permissions, NOSPACE stage, then MVCC /
        # lease / alarm / auth), core, driver, proposer ------------------------
        raft = build_raft_member(
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
            cluster_id=cluster_id,
            store=store,
            members=data.members,
            log_storage=data.log_storage,
            transport=self.transport,
            rng=random.Random(member_id ^ time.time_ns()),
            tick_interval_s=cfg.tick_interval_s,
            election_timeout_s=cfg.election_timeout_s,
            handlers=handlers,
            gates=(self.alarms,),
            auth=self.auth,
            observer=metrics,
            watch_hook=self._publish,
            on_apply=self._events.applied,
            snapshot_installer=self.installer,
            persist_in_thread=persist_in_thread,
            snapshot_count=cfg.snapshot_count,
        )
        self.applier, self.core = raft.applier, raft.core
        self.driver, self.proposer = raft.driver, raft.proposer

        # --- forwarding: a follower runs leader-only calls on the leader -------
        # They go to the leader's CLIENT URL: over TLS when that is https.
        forward_tls = forward_channel_credentials(cfg)
        self.forward_channels: PeerChannels | None = (
            PeerChannels(credentials=forward_tls) if forward_tls is not None else None
        )
        self.forwarder = LeaderForwarder(
            PeerClient(self.forward_channels) if self.forward_channels else self.peer_client,
            LeaderResolver(self._leader_id, data.members),
        )

        # --- facades ------------------------------------------------------------
        self.hub = WatchHub(
            store,
            self.proposer.header,
            progress_interval_s=cfg.watch_progress_notify_interval_s,
            max_response_bytes=cfg.max_request_bytes,  # etcd's watch fragment threshold
        )
        self.leases = LeaseService(
            self.lessor,
            LeaderLeases(self.lessor, self._lease_clock),
            propose=self._lease_propose,
            header=self.proposer.header,
            is_leader=self._is_leader,
            forwarder=LeaseForwarding(self.forwarder),
            member_id=member_id,
            min_ttl_s=min_lease_ttl(cfg.election_timeout_s),
        )
        self.maintenance = MaintenanceService(
            self.proposer,
            backend,
            self.alarms,
            quota_bytes=effective_quota(cfg.quota_backend_bytes),
            spool=self.spool,
        )
        retention = parse_retention(cfg.auto_compaction_mode, cfg.auto_compaction_retention)
        self.auto_compactor: AutoCompactor | None = None
        if retention > 0:
            self.auto_compactor = AutoCompactor(
                cfg.auto_compaction_mode,
                retention,
                lambda: store.current_revision,
                start_time=time.monotonic(),
            )
        self._compactor_task: asyncio.Task[None] | None = None
        self.kv = KvServer(
            self.driver,
            store,
            data.members,
            cluster_id=cluster_id,
            member_id=member_id,
            db_size=backend.size_bytes,
            db_size_in_use=backend.size_in_use_bytes,
            cluster_token=cfg.initial_cluster_token,
            proposer=self.proposer,
            watch_hub=self.hub,
            leases=self.leases,
            maintenance=self.maintenance,
            metrics=metrics,
            forwarder=self.forwarder,
            auth=self.auth,
        )

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Transport, driver, then the tasks that propose through it."""
        await self.transport.start()
        self.driver.start()
        self.hub.start()
        self.leases.start()
        if self.auto_compactor is not None:
            self._compactor_task = asyncio.get_running_loop().create_task(
                self.auto_compactor.run(self._compact, self._is_leader, time.monotonic),
                name="auto-compaction",
            )

    async def stop(self) -> None:
        """Reverse order, then the forwarder and the channel pool; the backend
        closes last (KvNode closes `data`)."""
        if self._compactor_task is not None:
            self._compactor_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._compactor_task
            self._compactor_task = None
        await _quietly("snapshot sender stop", self.sender.stop())
        # Before the backend closes: no staging thread left.
        await _quietly("snapshot installer stop", self.installer.stop())
        await _quietly("maintenance stop", self.maintenance.stop())
        await self.leases.stop()
        await self.hub.stop()
        await self.driver.stop()
        await _quietly("transport stop", self.transport.stop())
        await _quietly("forwarder close", self.forwarder.close())
        if self.forward_channels is not None:
            await _quietly("forward channels close", self.forward_channels.close())
        await _quietly("peer channels close", self.channels.close())

    # ------------------------------------------------ calls between the parts
    def _deliver(self, messages: list[Message]) -> None:
        self.driver.deliver(messages)

    def _unreachable(self, peer_id: int) -> None:
        self.driver.report_unreachable(peer_id)

    def _peer_address(self, peer_id: int) -> str | None:
        return self.transport.peers().get(peer_id)

    def _snapshot_sent(self, peer_id: int, ok: bool) -> None:
        self.driver.deliver([Message(MessageType.SNAP_STATUS, sender=peer_id, reject=not ok)])

    def _publish(self, events: list[tuple[int, list[kv_pb2.Event]]]) -> None:
        """The driver's watch hook: the watch hub, then the owner."""
        self.hub.publish(events)
        self._events.published(events)

    def _is_leader(self) -> bool:
        return self.kv.is_leader

    def _leader_id(self) -> int:
        return self.driver.leader_id

    async def _compact(self, revision: int) -> None:
        await self.kv.compact(rpc_pb2.CompactionRequest(revision=revision))

    async def _lease_propose(self, kind: str, request: Any) -> Any:
        """The lease service's proposals: for the RPC's caller when one is
        bound (LeaseRevoke), else for the member itself (expiry revokes and
        checkpoints from the lease loop, root while auth is on)."""
        if CALLER.get() is None:
            return await self.proposer.propose_as_member(kind, request)
        return await self.proposer.propose(kind, request)

    def _snapshot_installed(self, snapshot: Snapshot) -> None:
        """After an install swapped the backend's state: every component
        rebuilds its in-memory view through its own recovery method (driver
        task, between apply batches: no staged batch exists)."""
        data = self.data
        index = snapshot.metadata.index
        data.store.restore()
        raw = data.backend.get("meta", MEMBERS_META_KEY)
        if raw:
            data.members.replace(MemberTable.decode(bytes(raw)))
        self.alarms.reload(data.backend)
        self.auth.reload(data.backend)
        try:
            self.lessor.recover(data.backend, data.store.leased_keys())
        except Exception:  # noqa: BLE001 - leases are rebuilt best-effort
            log.exception("reloading leases after snapshot install failed")
        self.applier.restore(index)
        self.driver.on_snapshot_installed(index)
        self._events.members_changed()
        # Watchers go through catch-up from what they saw.
        try:
            self.hub.resync()
        except Exception:  # noqa: BLE001 - a watcher bug must not stop raft
            log.exception("watch resync after snapshot install failed")


async def _quietly(what: str, stopping: Awaitable[object]) -> None:
    try:
        await stopping
    except Exception:  # noqa: BLE001
        log.exception("%s failed", what)
