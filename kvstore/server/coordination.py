"""Coordination: wires leases and watches into one node.

Owns: creating the Lessor (loaded from the `lease` family and the store's
leased keys, installed as the MVCC store's lease hooks), registering the
lease apply handlers with the Applier, the WatchHub that receives every
applied batch's events, and the LeaseService (leader expiry loop,
keepalive forwarding through transport.forward); starting and stopping
their background tasks with the node.
Never: reads the clock in apply (LeaderLeases owns the clock, leader-side
only), or lets a watcher failure reach the apply loop (the hub never
blocks and the driver already isolates the hook).

Use from KvNode:

    coord = Coordination(data.store, data.backend)
    coord.register(applier)                 # before the driver applies anything
    ... NodeDriver(..., watch_hook=coord.publish) ... KvServer(...)
    coord.bind(kv, LeaseForwarding(forwarder), member_id, election_timeout_s)
    coord.follow_snapshots(node.maintenance); coord.start()
    ... await coord.stop()                  # before the driver stops
"""

from __future__ import annotations

from typing import Any

from kvstore.lease import (
    LeaderLeases,
    LeaseForwarder,
    LeaseService,
    Lessor,
    MonotonicClock,
    min_lease_ttl,
)
from kvstore.watch import WatchHub


class Coordination:
    def __init__(
        self, store: Any, backend: Any, *, watch_progress_interval_s: float | None = None
    ) -> None:
        self.lessor = Lessor()
        self.lessor.load(backend, store.leased_keys())
        store.lease_hooks = self.lessor
        self._kv: Any = None
        self.hub = WatchHub(store, self._header)
        if watch_progress_interval_s is not None:
            self.hub.progress_interval_s = watch_progress_interval_s
        self.leases: LeaseService | None = None

    def _header(self, revision: int | None = None) -> Any:
        return self._kv.header(revision)

    def register(self, applier: Any) -> None:
        applier.register("lease_grant", self.lessor.apply_grant)
        applier.register("lease_revoke", self.lessor.apply_revoke)
        applier.register("lease_checkpoint", self.lessor.apply_checkpoint)

    def publish(self, events: list[tuple[int, list[Any]]]) -> None:
        """The driver's watch hook: events of the batch just applied."""
        self.hub.publish(events)

    def bind(
        self, kv: Any, forwarder: LeaseForwarder, member_id: int, election_timeout_s: float
    ) -> None:
        """Create the lease facade over `kv` and expose both on it
        (`kv.watch_hub`, `kv.leases`) for the api servicers. A follower's
        keepalives and time-to-live go to the leader through `forwarder`."""
        self._kv = kv
        self.leases = LeaseService(
            self.lessor,
            LeaderLeases(self.lessor, MonotonicClock()),
            propose=kv.propose,
            header=kv.header,
            is_leader=lambda: kv.is_leader,
            forwarder=forwarder,
            member_id=member_id,
            min_ttl_s=min_lease_ttl(election_timeout_s),
        )
        kv.watch_hub = self.hub
        kv.leases = self.leases

    def follow_snapshots(self, maintenance: Any) -> None:
        """After a Raft snapshot install (maintenance reloads the store and
        the lessor), send every watcher through catch-up from what it saw."""
        listeners = getattr(maintenance, "installed_listeners", None)
        if listeners is not None:
            listeners.append(lambda index: self.hub.resync())

    def start(self) -> None:
        self.hub.start()
        if self.leases is not None:
            self.leases.start()

    async def stop(self) -> None:
        if self.leases is not None:
            await self.leases.stop()
        await self.hub.stop()
