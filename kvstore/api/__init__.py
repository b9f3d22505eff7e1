"""kvstore's client-facing gRPC API: etcd v3 KV, Watch, Lease, Maintenance,
Cluster, Lock, Election, Health.

Owns: registering the servicers on a `grpc.aio.Server` (`add_servicers`,
through one `MethodTable`: see api.method_table for why)
and the server options clients depend on (`grpc_server_options`,
`GRPC_SERVER_OPTIONS`: receive limit = max-request-bytes + 512 KiB,
keepalive policy for Go clients).
Also: when a `metrics` object is given (default: the facade's `kv.metrics`,
a `kvstore.server.metrics.NodeMetrics`, or None), every servicer is
instrumented before registration (`metrics.grpc.instrument`) so each RPC is
counted in grpc_server_started_total / grpc_server_handled_total.
Never: creates or binds the server (the `kvstore` command does), never
touches Raft/MVCC (everything goes through the KvServer facade).

Usage::

    server = grpc.aio.server(options=grpc_server_options(cfg.max_request_bytes))
    add_servicers(server, node.kv, max_request_bytes=cfg.max_request_bytes)
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from kvstore.api.auth_gate import RequestAuth
from kvstore.api.cluster import ClusterServicer
from kvstore.api.election import ElectionServicer
from kvstore.api.kv import KvServicer
from kvstore.api.lease import LeaseServicer
from kvstore.api.lock import LockServicer
from kvstore.api.maintenance import MaintenanceServicer
from kvstore.api.method_table import MethodTable
from kvstore.api.options import (
    DEFAULT_MAX_REQUEST_BYTES,
    GRPC_SERVER_OPTIONS,
    MAX_TXN_OPS,
    grpc_server_options,
)
from kvstore.api.watch import WatchServicer
from kvstore.pb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc
from kvstore.seams import KvFacade, RpcMetrics
from kvstore.server.auth_parts import NodeAuth
from kvstore.server.rpc_stats import counted

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "GRPC_SERVER_OPTIONS",
    "MAX_TXN_OPS",
    "add_servicers",
    "grpc_server_options",
]


def add_servicers(
    server: grpc.aio.Server,
    kv: KvFacade,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    max_txn_ops: int = MAX_TXN_OPS,
    metrics: RpcMetrics | None = None,
) -> None:
    """Register KV, Maintenance, Cluster, Auth (when the facade carries the
    member's auth parts) and grpc.health.v1 (overall status
    SERVING, like etcd) for the KvServer facade `kv`. Call before start().
    `metrics` defaults to `kv.metrics` (absent: RPCs are not counted)."""
    if metrics is None:
        metrics = kv.metrics
    # The member's auth parts (KvServer.auth, built by server.assembly); a
    # facade without them serves no Auth API and checks nothing.
    parts: NodeAuth | None = getattr(kv, "auth", None)
    auth = RequestAuth(parts) if parts is not None else None
    table = MethodTable()
    add = _Registrar(table, metrics)
    add(
        rpc_pb2_grpc.add_KVServicer_to_server,
        KvServicer(kv, max_request_bytes=max_request_bytes, max_txn_ops=max_txn_ops, auth=auth),
        "etcdserverpb.KV",
    )
    add(rpc_pb2_grpc.add_MaintenanceServicer_to_server, MaintenanceServicer(kv, auth),
        "etcdserverpb.Maintenance")  # fmt: skip
    add(rpc_pb2_grpc.add_ClusterServicer_to_server, ClusterServicer(kv, auth),
        "etcdserverpb.Cluster")  # fmt: skip
    if auth is not None:
        add(rpc_pb2_grpc.add_AuthServicer_to_server, auth.servicer(kv), "etcdserverpb.Auth")
    _add_coordination_servicers(add, kv, auth)
    # The aio HealthServicer starts with the overall service ("") SERVING.
    add(health_pb2_grpc.add_HealthServicer_to_server, _HealthServicer(),
        "grpc.health.v1.Health")  # fmt: skip
    table.install(server)


class _HealthServicer(health_aio.HealthServicer):
    """grpc's aio health service, its calls counted like every other RPC."""

    @counted
    async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await super().Check(request, context)

    @counted
    async def Watch(self, request: Any, context: Any) -> None:  # noqa: N802
        await super().Watch(request, context)


class _Registrar:
    """Instrument a servicer (when metrics are on), then register it."""

    def __init__(self, server: MethodTable, metrics: RpcMetrics | None) -> None:
        self.server = server
        self._metrics = metrics

    def __call__(self, add_fn: Any, servicer: Any, service: str) -> None:
        if self._metrics is not None:
            descriptor = descriptor_pool.Default().FindServiceByName(service)
            self._metrics.grpc.instrument(servicer, descriptor)
        add_fn(servicer, self.server)


def _add_coordination_servicers(add: _Registrar, kv: KvFacade, auth: RequestAuth | None) -> None:
    """Watch, Lease, Lock and Election, when the facade carries a watch hub
    and a lease service (given to KvServer by server.assembly)."""
    hub = kv.watch_hub
    leases = kv.leases
    if hub is not None:
        # The hub's watch fragment threshold is the node's --max-request-bytes
        # (given to WatchHub by server.assembly), as in etcd.
        add(rpc_pb2_grpc.add_WatchServicer_to_server, WatchServicer(kv, hub, auth=auth),
            "etcdserverpb.Watch")  # fmt: skip
    if leases is not None:
        add(rpc_pb2_grpc.add_LeaseServicer_to_server, LeaseServicer(kv, leases, auth=auth),
            "etcdserverpb.Lease")  # fmt: skip
    if hub is not None and leases is not None:
        add(v3lock_pb2_grpc.add_LockServicer_to_server, LockServicer(kv, leases, hub, auth),
            "v3lockpb.Lock")  # fmt: skip
        add(v3election_pb2_grpc.add_ElectionServicer_to_server,
            ElectionServicer(kv, leases, hub, auth), "v3electionpb.Election")  # fmt: skip
