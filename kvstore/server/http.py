"""A small HTTP/1.1 listener for /health, /version and /metrics.

Owns: the --listen-metrics-urls endpoints, answered from the node's
observable state at request time (etcd names where they exist:
etcd_server_has_leader, etcd_server_proposals_committed_total, ...).
Never: touches the Raft core or blocks the loop; one request per connection
(Connection: close), bounded header size, 5 s read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from kvstore.server.config import host_port
from kvstore.server.errors import StartupError
from kvstore.server.kv_server import CLUSTER_VERSION, SERVER_VERSION

MAX_HEADER_BYTES = 16 * 1024
_COMPACT = (",", ":")  # etcd's exact bodies: {"health":"true"}


class _NodeCollector:
    """prometheus_client collector reading the driver's counters at scrape time."""

    def __init__(self, node: Any) -> None:
        self._node = node

    def collect(self):  # noqa: ANN201 - prometheus collector protocol
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        d = self._node.driver
        if d is None:
            return
        kv = self._node.kv
        has_leader = int(bool(d.leader_id))
        gauges = {
            "etcd_server_has_leader": ("Whether a leader exists (1) or not (0).", has_leader),
            "etcd_server_is_leader": ("Whether this member is the leader.", int(kv.is_leader)),
            "kvstore_raft_term": ("Current Raft term.", d.term),
            "kvstore_raft_commit_index": ("Commit index known here.", d.commit_index),
            "kvstore_raft_applied_index": ("Applied index.", d.applied_index),
            "etcd_server_proposals_pending": ("Proposals waiting to be applied.", len(d.waiters)),
            "etcd_mvcc_db_total_size_in_bytes": ("Database size.", kv.status().dbSize),
        }  # fmt: skip
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "etcd_server_proposals_committed": ("Proposals applied.", d.stats.proposals_committed),
            "etcd_server_proposals_failed": ("Proposals failed.", d.stats.proposals_failed),
            "etcd_server_leader_changes_seen": ("Leader changes seen.", d.stats.leader_changes),
            "kvstore_raft_ready_batches": ("Ready batches handled.", d.stats.ready_batches),
            "kvstore_raft_entries_persisted": ("Log entries persisted.", d.stats.entries_persisted),
        }  # fmt: skip
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


class MetricsServer:
    def __init__(self, node: Any) -> None:
        from prometheus_client import CollectorRegistry

        self._node = node
        self._registry = CollectorRegistry()
        self._registry.register(_NodeCollector(node))
        self._servers: list[asyncio.base_events.Server] = []
        self.ports: list[int] = []

    async def start(self, urls: tuple[str, ...] | list[str]) -> None:
        for url in urls:
            host, port = host_port(url, "--listen-metrics-urls")
            try:
                server = await asyncio.start_server(self._handle, host, port)
            except OSError as exc:
                raise StartupError(
                    f"cannot listen on {url} (--listen-metrics-urls): {exc}"
                ) from exc
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), timeout=2)
        self._servers.clear()

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for GET `path`."""
        path = path.split("?", 1)[0]
        if path == "/health":
            kv = self._node.kv
            # etcd: unhealthy without a leader or with any active alarm (NOSPACE...).
            maintenance = getattr(kv, "maintenance", None)
            healthy = (
                kv is not None
                and kv.has_leader
                and not (maintenance is not None and maintenance.status_errors())
            )
            body = json.dumps({"health": "true" if healthy else "false"}, separators=_COMPACT)
            body = body.encode()
            return (200 if healthy else 503), "application/json", body
        if path == "/version":
            body = json.dumps(
                {"etcdserver": SERVER_VERSION, "etcdcluster": CLUSTER_VERSION}, separators=_COMPACT
            )
            return 200, "application/json", body.encode()
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        return 404, "text/plain", b"404 page not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            if len(head) > MAX_HEADER_BYTES:
                return
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) < 2:
                return
            method, path = parts[0], parts[1]
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            else:
                status, ctype, body = self.respond(path)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(
                status, "Service Unavailable"
            )
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
