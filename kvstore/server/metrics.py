"""NodeMetrics: one member's Prometheus metrics (served on /metrics by http.py).

Owns: a per-node `CollectorRegistry` (never the global default one: tests run
several nodes in one process) holding
- histograms observed on the write paths, installed at wiring time by
  wrapping instance methods (`instrument_storage`, `instrument_applier`), so
  the driver is not edited: `etcd_disk_wal_fsync_duration_seconds` (each
  synced Raft-log write), `etcd_disk_backend_commit_duration_seconds` (each
  apply batch written to RocksDB), `kvstore_server_apply_duration_seconds`
  (executing one batch of committed entries against MVCC, before its write);
- gRPC counters with go-grpc-prometheus' names, as etcd exposes them:
  `grpc_server_started_total` / `grpc_server_handled_total` labelled
  grpc_type, grpc_service, grpc_method (+ grpc_code). The hot path only bumps
  plain ints in an `RpcCounter` per method (`GrpcStats.instrument` installs
  them on a servicer; `api.errors.grpc_errors` bumps them); the labelled
  families are built at scrape time;
- gauges and counters read from the node at scrape time (Raft term/indexes,
  proposals, leader, db size, watchers, watch streams, leases);
- `etcd_server_health_success_total` / `_failures_total` (the /health handler
  counts), and the standard `process_*` collector (etcdctl check datascale
  reads process_resident_memory_bytes).
Never: touches the Raft core, blocks or takes a lock on the event loop's hot
path (prometheus histograms lock internally, a few µs, off the RPC path),
or lets a scrape fail because one part of the node is missing or stopped.
Invariants: an instrumented call behaves exactly as the wrapped one (same
arguments, result and exceptions); a timing is observed only for calls that
write (sync Raft-log saves, non-empty apply batches).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from kvstore.api.errors import COUNTER_ATTR_PREFIX, COUNTS_ITSELF_ATTR

# etcd's Go client library emits no `*_created` series; neither do we (a
# process-wide prometheus_client switch: kvstore has no other registry user).
disable_created_metrics()


def _exponential(start: float, factor: float, count: int) -> list[float]:
    """prometheus.ExponentialBuckets, as etcd declares its histograms."""
    return [start * factor**i for i in range(count)]


# grpc-go's codes.Code.String(): the grpc_code label values etcd exposes.
GO_CODE_NAMES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}


class RpcCounter:
    """Plain-int counts for one gRPC method (cheap to bump: no lock, no labels).

    `ok` is kept apart from `codes` so the common case is one attribute add."""

    __slots__ = ("codes", "method", "ok", "rpc_type", "service", "started")

    def __init__(self, service: str, method: str, rpc_type: str) -> None:
        self.service = service
        self.method = method
        self.rpc_type = rpc_type
        self.started = 0
        self.ok = 0
        self.codes: dict[grpc.StatusCode, int] = {}

    def done(self, code: grpc.StatusCode | None) -> None:
        """Count one finished call with its final status code."""
        if code is None or code is grpc.StatusCode.OK:
            self.ok += 1
        else:
            self.codes[code] = self.codes.get(code, 0) + 1

    @property
    def handled(self) -> int:
        return self.ok + sum(self.codes.values())

    @property
    def in_flight(self) -> int:
        return self.started - self.handled


def _rpc_type(method: Any) -> str:
    if method.client_streaming:
        return "bidi_stream" if method.server_streaming else "client_stream"
    return "server_stream" if method.server_streaming else "unary"


class GrpcStats:
    """Every instrumented method's RpcCounter, by (service, method)."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, str], RpcCounter] = {}

    def counter(self, service: str, method: str) -> RpcCounter | None:
        return self.counters.get((service, method))

    def instrument(self, servicer: Any, service: Any) -> None:
        """Count every RPC of `service` (a protobuf ServiceDescriptor) on
        `servicer`. Call before `add_XServicer_to_server(servicer, ...)`: those
        read the bound methods at registration time.

        Methods decorated with `grpc_errors` count themselves through the
        counter set on the instance (api.errors.COUNTER_ATTR_PREFIX); the
        others (streams, health) are replaced on the instance by a counting
        wrapper (one extra frame per call or stream)."""
        for method in service.methods:
            fn = getattr(servicer, method.name, None)
            if fn is None:
                continue
            key = (service.full_name, method.name)
            counter = self.counters.get(key)
            if counter is None:  # shared when a node registers a service twice
                counter = self.counters[key] = RpcCounter(*key, _rpc_type(method))
            if getattr(fn, COUNTS_ITSELF_ATTR, False):
                setattr(servicer, COUNTER_ATTR_PREFIX + method.name, counter)
            else:
                setattr(servicer, method.name, counting(fn, counter))

    def collect(self) -> Iterator[Metric]:
        started = CounterMetricFamily(
            "grpc_server_started_total",
            "Total number of RPCs started on the server.",
            labels=["grpc_method", "grpc_service", "grpc_type"],
        )
        handled = CounterMetricFamily(
            "grpc_server_handled_total",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            labels=["grpc_code", "grpc_method", "grpc_service", "grpc_type"],
        )
        for c in list(self.counters.values()):
            started.add_metric([c.method, c.service, c.rpc_type], c.started)
            codes = dict(c.codes)
            codes[grpc.StatusCode.OK] = c.ok
            # Every code pre-initialised at 0, as go-grpc-prometheus does.
            for code, name in GO_CODE_NAMES.items():
                handled.add_metric([name, c.method, c.service, c.rpc_type], codes.get(code, 0))
        yield started
        yield handled


def counting(fn: Callable[..., Any], counter: RpcCounter) -> Callable[..., Any]:
    """Wrap a bound servicer method (coroutine or async generator) so the call
    or stream is counted once, with its final code. Keeps the function kind:
    grpc.aio picks the streaming API by inspecting it. A plain function (a
    generated base class's UNIMPLEMENTED stub) is returned as is: not counted."""
    if not inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn):
        return fn
    if inspect.isasyncgenfunction(fn):

        async def gen_wrapper(request: Any, context: Any) -> Any:
            counter.started += 1
            code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
            responses = fn(request, context)
            try:
                async for item in responses:
                    yield item
                code = _code_of(context)
            except grpc.aio.AbortError:
                code = _code_of(context) or grpc.StatusCode.UNKNOWN
                raise
            except (asyncio.CancelledError, GeneratorExit):
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                counter.done(code)
                await responses.aclose()  # now, not at garbage collection

        return gen_wrapper

    async def wrapper(request: Any, context: Any) -> Any:
        counter.started += 1
        code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
        try:
            result = await fn(request, context)
            code = _code_of(context)
            return result
        except grpc.aio.AbortError:
            code = _code_of(context) or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            counter.done(code)

    return wrapper


def _code_of(context: Any) -> grpc.StatusCode | None:
    """The status the handler set (None: not set, i.e. OK)."""
    code = getattr(context, "code", None)
    try:
        return code() if code is not None else None
    except Exception:  # noqa: BLE001 - a counter must never fail the call
        return None


class NodeMetrics:
    """Everything /metrics shows for one node. `node` is a KvNode (or any
    object with `driver`, `kv`, optionally `coordination`); it is read only at
    scrape time, so it may still be starting or already stopped."""

    def __init__(self, node: Any) -> None:
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

    # ------------------------------------------------------ write-path timing
    def instrument_storage(self, storage: Any) -> None:
        """Time every synced `storage.save(hard_state, entries, snapshot, sync)`
        (the Raft log's WAL write; may run in a worker thread)."""
        save = storage.save
        observe = self.wal_fsync.observe
        clock = time.perf_counter

        def timed_save(hard_state: Any, entries: Any, snapshot: Any, sync: bool = True) -> Any:
            if not sync:
                return save(hard_state, entries, snapshot, sync)
            t0 = clock()
            result = save(hard_state, entries, snapshot, sync)
            observe(clock() - t0)
            return result

        storage.save = timed_save

    def instrument_applier(self, applier: Any) -> None:
        """Time `applier.stage` (MVCC execution) and `applier.commit` (the
        batch write) when they have a batch. `apply` calls both through the
        instance, so it is covered too."""
        stage, commit = applier.stage, applier.commit
        observe_apply, observe_commit = self.apply.observe, self.backend_commit.observe
        clock = time.perf_counter

        def timed_stage(entries: Any) -> Any:
            t0 = clock()
            result = stage(entries)
            if getattr(result, "batch", None) is not None:
                observe_apply(clock() - t0)
            return result

        def timed_commit(result: Any) -> Any:
            if getattr(result, "batch", None) is None:
                return commit(result)
            t0 = clock()
            out = commit(result)
            observe_commit(clock() - t0)
            return out

        applier.stage = timed_stage
        applier.commit = timed_commit

    def scrape(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


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
        coord = getattr(node, "coordination", None)
        if coord is not None:
            synced, unsynced = coord.hub.watcher_counts()
            yield _gauge(
                "etcd_debugging_mvcc_watcher_total", "Total number of watchers.", synced + unsynced
            )
            yield _gauge(
                "etcd_debugging_mvcc_slow_watcher_total",
                "Total number of unsynced slow watchers.", unsynced,
            )  # fmt: skip
            yield _gauge("kvstore_lease_active", "Number of leases held.", len(coord.lessor))
        d = getattr(node, "driver", None)
        kv = getattr(node, "kv", None)
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


def _db_size(kv: Any) -> int:
    try:
        return int(kv.status().dbSize)
    except Exception:  # noqa: BLE001 - a closed backend must not fail the scrape
        return 0
