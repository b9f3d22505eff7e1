"""Wiring: attach the maintenance features to a started KvNode.

Owns: `attach_maintenance(node, settings)`, called once by KvNode.start()
after the driver, transport and KvServer exist and before the driver runs:

- apply path: the "alarm" handler and NOSPACE capping of put/txn/lease_grant
  (applier.register); (Raft log snapshot points + compaction are the
  driver's own job, every --snapshot-count entries);
- KvServer: `kv.maintenance` (Hash, HashKV, Snapshot, Defragment, Alarm,
  quota check, Status errors);
- transport: outgoing MSG_SNAP -> SnapshotSender, inbound SendSnapshot ->
  SnapshotReceiver; driver: `snapshot_installer` (atomic state swap, staged
  in bounded batches as the backend's next state generation);
- auto-compaction task (leader only).

Never: requires a part to use its hook: the hooks are plain attributes
(`transport.snapshot_sender`, `driver.snapshot_installer`, `kv.maintenance`),
so a part that does not read one just leaves that feature off. Handlers are
wrapped as registered at attach time: a kind registered later (e.g. a
lease_grant handler added after this runs) is not capped by NOSPACE.

The reloaders after a snapshot install reach into MvccStore / MemberTable /
Lessor internals on purpose: they are the one place that must rebuild those
in-memory views from a swapped backend, and they run in the driver task
between apply batches (no staged batch exists at that point).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvstore.maintenance.backup import verify_file
from kvstore.maintenance.compaction import AutoCompactor, parse_retention
from kvstore.maintenance.quota import AlarmTable, capped, effective_quota
from kvstore.maintenance.service import MaintenanceService
from kvstore.maintenance.snapshot_install import BackupSnapshotSource, SnapshotInstaller
from kvstore.raft.types import Message, MessageType, Snapshot
from kvstore.storage.snapshot_spool import SPOOL_DIRNAME, clean_spool
from kvstore.transport.snapshot_recv import SnapshotReceiver
from kvstore.transport.snapshot_send import SnapshotSender

log = logging.getLogger(__name__)

_DEFAULT_HANDLERS = {
    "put": lambda b, r: b.put(r),
    "txn": lambda b, r: b.txn(r),
}


@dataclass
class MaintenanceSettings:
    quota_backend_bytes: int = 0
    auto_compaction_mode: str = "periodic"
    auto_compaction_retention: str = "0"

    @classmethod
    def from_config(cls, cfg: Any) -> MaintenanceSettings:
        return cls(
            quota_backend_bytes=int(getattr(cfg, "quota_backend_bytes", 0) or 0),
            auto_compaction_mode=getattr(cfg, "auto_compaction_mode", "periodic") or "periodic",
            auto_compaction_retention=str(getattr(cfg, "auto_compaction_retention", "0") or "0"),
        )


class Maintenance:
    """Everything attached to one node; `await stop()` before the node stops."""

    def __init__(self) -> None:
        self.service: MaintenanceService | None = None
        self.sender: SnapshotSender | None = None
        self.receiver: SnapshotReceiver | None = None
        self.installer: SnapshotInstaller | None = None
        self.auto_compactor: AutoCompactor | None = None
        self._task: asyncio.Task[None] | None = None
        # fn(snapshot_index) after a leader's snapshot replaced the state (the
        # watch hub should move its synced watchers back to catch-up here).
        self.installed_listeners: list[Callable[[int], None]] = []

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.sender is not None:
            await self.sender.stop()
        if self.installer is not None:
            await self.installer.stop()  # before the backend closes: no staging thread left
        if self.service is not None:
            await self.service.stop()


def _handler(applier: Any, kind: str) -> Any:
    handlers = getattr(applier, "_handlers", {})
    return handlers.get(kind) or _DEFAULT_HANDLERS.get(kind)


def attach_maintenance(node: Any, settings: MaintenanceSettings | None = None) -> Maintenance:
    """Hook maintenance into `node` (a KvNode whose parts exist, driver not running yet)."""
    settings = settings or MaintenanceSettings.from_config(node.cfg)
    data, kv, driver, applier, transport = (
        node.data, node.kv, node.driver, node.applier, node.transport,
    )  # fmt: skip
    m = Maintenance()
    backend = data.backend
    spool = Path(data.path) / SPOOL_DIRNAME
    clean_spool(spool)

    # --- alarms + quota (apply path first: replay after restart needs it) ---
    alarms = AlarmTable.load(backend)
    applier.register("alarm", alarms.apply_alarm)
    for kind in ("put", "txn", "lease_grant"):
        handler = _handler(applier, kind)
        if handler is not None:
            applier.register(kind, capped(kind, handler, alarms))
    m.service = MaintenanceService(
        kv,
        backend,
        alarms,
        quota_bytes=effective_quota(settings.quota_backend_bytes),
        spool=spool,
    )
    kv.maintenance = m.service

    # --- snapshot transfer (network: transport/snapshot_send|recv.py) ---
    def report(peer: int, ok: bool) -> None:
        driver.deliver([Message(MessageType.SNAP_STATUS, sender=peer, reject=not ok)])

    m.sender = SnapshotSender(
        node.peer_channels,
        BackupSnapshotSource(backend),
        spool,
        cluster_id=data.cluster_id,
        self_id=data.member_id,
        peer_address=lambda pid: transport.peers().get(pid),
        report=report,
    )
    m.installer = SnapshotInstaller(backend, [_reloader(node, alarms), _notify(m)])
    # The receiver has the installer stage the state off the loop before Raft
    # gets the message; the driver's install then only switches.
    m.receiver = SnapshotReceiver(
        spool,
        cluster_id=data.cluster_id,
        deliver=driver.deliver,
        verify=verify_file,
        prepare=m.installer.prepare,
    )
    transport.snapshot_sender = m.sender.send
    transport.snapshot_receiver = m.receiver.handle
    driver.snapshot_installer = m.installer.install

    # --- auto-compaction ---
    retention = parse_retention(settings.auto_compaction_mode, settings.auto_compaction_retention)
    if retention > 0:
        store = data.store
        auto = AutoCompactor(
            settings.auto_compaction_mode,
            retention,
            lambda: store.current_revision,
            start_time=time.monotonic(),
        )
        m.auto_compactor = auto

        async def compact(rev: int) -> None:
            from kvstore.pb import rpc_pb2

            await kv.compact(rpc_pb2.CompactionRequest(revision=rev))

        m._task = asyncio.get_running_loop().create_task(
            auto.run(compact, lambda: kv.is_leader, time.monotonic), name="auto-compaction"
        )
    return m


def _reloader(node: Any, alarms: AlarmTable) -> Any:
    """Rebuild every in-memory view of the state after a snapshot install."""

    def reload(snapshot: Snapshot) -> None:
        from kvstore.server.membership import MEMBERS_META_KEY, MemberTable

        data, driver, applier = node.data, node.driver, node.applier
        index = snapshot.metadata.index
        store = data.store
        store._pending.clear()
        store._compact = -1
        store._rebuild()
        raw = data.backend.get("meta", MEMBERS_META_KEY)
        if raw:
            fresh = MemberTable.decode(bytes(raw))
            data.members._members = fresh._members
            data.members.removed = fresh.removed
        alarms.reload(data.backend)
        lessor = _find_lessor(node)
        if lessor is not None:
            try:
                lessor.load(data.backend, store.leased_keys())
            except Exception:  # noqa: BLE001 - leases are rebuilt best-effort
                log.exception("reloading leases after snapshot install failed")
        applier.applied_index = index
        driver.applied_index = index
        driver.commit_index = max(driver.commit_index, index)
        driver.applied_waiter.advance(index)
        if hasattr(driver, "_snapshot_index"):
            driver._snapshot_index = index  # the driver's log compaction restarts here
        update = getattr(node, "_update_peers", None)
        if update is not None:
            update()

    return reload


def _notify(m: Maintenance) -> Callable[[Snapshot], None]:
    def notify(snapshot: Snapshot) -> None:
        for fn in list(m.installed_listeners):
            try:
                fn(snapshot.metadata.index)
            except Exception:  # noqa: BLE001 - a listener bug must not stop raft
                log.exception("snapshot-installed listener failed")

    return notify


def _find_lessor(node: Any) -> Any:
    hooks = getattr(node.data.store, "lease_hooks", None)  # the lessor, when wired
    if hooks is not None and hasattr(hooks, "load"):
        return hooks
    for name in ("lessor", "leases", "lease_service"):
        obj = getattr(node, name, None)
        if obj is None:
            continue
        if hasattr(obj, "load"):
            return obj
        inner = getattr(obj, "lessor", None) or getattr(obj, "_lessor", None)
        if inner is not None and hasattr(inner, "load"):
            return inner
    return None
