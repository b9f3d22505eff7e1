"""NodeMetrics: one member's Prometheus metrics (served on /metrics by http.py).

Owns: a per-node `CollectorRegistry` (never the global default one: tests run
several nodes in one process) holding
- histograms observed on the write paths through the `seams.NodeObserver`
  calls the driver and the applier make (this object is passed to them at
  construction): `etcd_disk_wal_fsync_duration_seconds` (each synced
  Raft-log write), `etcd_disk_backend_commit_duration_seconds` (each apply
  batch written to RocksDB), `kvstore_server_apply_duration_seconds`
  (executing one batch of committed entries against MVCC, before its write);
- gRPC counters (server.rpc_stats.GrpcStats) with go-grpc-prometheus' names,
  labelled families built at scrape time;
- gauges and counters read from the node at scrape time (Raft term/indexes,
  proposals, leader, db size, watchers, watch streams, leases);
- `etcd_server_health_success_total` / `_failures_total` (the /health handler
  counts), and the standard `process_*` collector (etcdctl check datascale
  reads process_resident_memory_bytes).
Never: touches the Raft core, blocks or takes a lock on the event loop's hot
path (prometheus histograms lock internally, a few µs, off the RPC path),
or lets a scrape fail because one part of the node is missing or stopped.
Invariants: a timing is observed only for calls that write (sync Raft-log
saves, non-empty apply batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvstore.server.rpc_stats import GrpcStats

if TYPE_CHECKING:
    from kvstore.lease import Lessor
    from kvstore.server.kv_server import KvServer
    from kvstore.server.node import NodeDriver
    from kvstore.watch import WatchHub

# etcd's Go client library emits no `*_created` series; neither do we (a
# process-wide prometheus_client switch: kvstore has no other registry user).
disable_created_metrics()


def _exponential(start: float, factor: float, count: int) -> list[float]:
    """prometheus.ExponentialBuckets, as etcd declares its histograms."""
    return [start * factor**i for i in range(count)]


class ScrapeSource(Protocol):
    """The node parts read at scrape time (None: starting or stopped)."""

    @property
    def driver(self) -> NodeDriver | None: ...
    @property
    def kv(self) -> KvServer | None: ...
    @property
    def watch_hub(self) -> WatchHub | None: ...
    @property
    def lessor(self) -> Lessor | None: ...


class NodeMetrics:
    """Everything /metrics shows for one node (implements seams.NodeObserver).
    `node` is read only at scrape time, so it may still be starting or
    already stopped."""

    def __init__(self, node: ScrapeSource) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.wal_fsync = Histogram(
            "etcd_disk_wal_fsync_duration_seconds",
            "The latency distributions of fsync called by WAL (synced Raft-log writes).",
            buckets=_exponential(0.001, 2, 14), registry=r,
        )  # fmt: skip
        self.backend_commit = Histogram(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend (apply batch writes).",
            buckets=_exponential(0.001, 2, 14), registry=r,
        )  # fmt: skip
        self.apply = Histogram(
            "kvstore_server_apply_duration_seconds",
            "Time to execute one batch of committed entries against MVCC (before its write).",
            buckets=_exponential(0.0001, 2, 20), registry=r,
        )  # fmt: skip
        self.health_success = Counter(
            "etcd_server_health_success", "The total number of successful health checks",
            registry=r,
        )  # fmt: skip
        self.health_failures = Counter(
            "etcd_server_health_failures", "The total number of failed health checks",
            registry=r,
        )  # fmt: skip
        self.grpc = GrpcStats()
        r.register(_NodeCollector(self))
        ProcessCollector(registry=r)  # yields nothing where /proc is missing

    # ------------------------------------------------ write-path timing (NodeObserver)
    def observe_wal_fsync(self, seconds: float) -> None:
        """One synced Raft-log write (may be called from the writer thread)."""
        self.wal_fsync.observe(seconds)

    def observe_apply(self, seconds: float) -> None:
        """One batch of committed entries executed against MVCC."""
        self.apply.observe(seconds)

    def observe_backend_commit(self, seconds: float) -> None:
        """One apply batch written to RocksDB."""
        self.backend_commit.observe(seconds)

    def scrape(self) -> bytes:
        return bytes(generate_latest(self.registry))


class _NodeCollector:
    """Gauges and counters read from the node and the gRPC stats at scrape time."""

    def __init__(self, metrics: NodeMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        node = self._metrics.node
        yield from self._metrics.grpc.collect()
        watch = self._metrics.grpc.counter("etcdserverpb.Watch", "Watch")
        if watch is not None:
            yield _gauge(
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.", watch.in_flight,
            )  # fmt: skip
        hub = node.watch_hub
        if hub is not None:
            synced, unsynced = hub.watcher_counts()
            yield _gauge(
                "etcd_debugging_mvcc_watcher_total", "Total number of watchers.", synced + unsynced
            )
            yield _gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.", unsynced,
            )  # fmt: skip
        lessor = node.lessor
        if lessor is not None:
            yield _gauge("kvstore_lease_active", "Number of leases held.", len(lessor))
        d = node.driver
        kv = node.kv
        if d is None or kv is None:
            return
        has_leader = int(bool(d.leader_id))
        gauges = {
            "etcd_server_has_leader": ("Whether a leader exists (1) or not (0).", has_leader),
            "etcd_server_is_leader": ("Whether this member is the leader.", int(kv.is_leader)),
            "kvstore_raft_term": ("Current Raft term.", d.term),
            "kvstore_raft_commit_index": ("Commit index known here.", d.commit_index),
            "kvstore_raft_applied_index": ("Applied index.", d.applied_index),
            "etcd_server_proposals_pending": ("Proposals waiting to be applied.", len(d.waiters)),
            "etcd_mvcc_db_total_size_in_bytes": ("Database size.", _db_size(kv)),
        }  # fmt: skip
        for name, (doc, value) in gauges.items():
            yield _gauge(name, doc, value)
        stats = d.stats
        counters = {
            "etcd_server_proposals_committed": ("Proposals applied.", stats.proposals_committed),
            "etcd_server_proposals_failed": ("Proposals failed.", stats.proposals_failed),
            "etcd_server_leader_changes_seen": ("Leader changes seen.", stats.leader_changes),
            "kvstore_raft_ready_batches": ("Ready batches handled.", stats.ready_batches),
            "kvstore_raft_entries_persisted": ("Log entries persisted.", stats.entries_persisted),
        }  # fmt: skip
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _db_size(kv: KvServer) -> int:
    try:
        return int(kv.status().dbSize)
    except Exception:  # noqa: BLE001 - a closed backend must not fail the scrape
        return 0
