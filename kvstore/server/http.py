"""A small HTTP/1.1 listener for /health, /version and /metrics.

Owns: the --listen-metrics-urls endpoints, answered from the node's
observable state at request time: /metrics renders the node's
`kvstore.server.metrics.NodeMetrics` registry (`node.metrics`; one is made
for a node without it), /health is etcd 3.4's check (503 and
{"health":"false"} with any active alarm, without a leader, or when a
quorum read does not complete within 1 s).
Never: touches the Raft core or blocks the loop; one request per connection
(Connection: close), bounded header size, 5 s read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl

from kvstore.server.config import host_port
from kvstore.server.errors import StartupError
from kvstore.server.kv_server import CLUSTER_VERSION, SERVER_VERSION
from kvstore.server.metrics import NodeMetrics, ScrapeSource

MAX_HEADER_BYTES = 16 * 1024
HEALTH_READ_TIMEOUT_S = 1.0  # etcd's /health quorum-read deadline
_COMPACT = (",", ":")  # etcd's exact bodies: {"health":"true"}


class MetricsServer:
    def __init__(self, node: ScrapeSource, metrics: NodeMetrics | None = None) -> None:
        """`node` is read per request (None parts: starting or stopped);
        `metrics` is the node's (a KvNode's `metrics`), else a new one over it."""
        self._node = node
        self._metrics = metrics if metrics is not None else NodeMetrics(node)
        self._servers: list[asyncio.base_events.Server] = []
        self.ports: list[int] = []

    async def start(
        self, urls: tuple[str, ...] | list[str], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Listen on every URL; an https:// one with `ssl_context`."""
        for url in urls:
            host, port = host_port(url, "--listen-metrics-urls")
            tls = ssl_context if url.startswith("https://") else None
            if url.startswith("https://") and tls is None:
                raise StartupError(f"cannot listen on {url} (--listen-metrics-urls): no TLS")
            try:
                server = await asyncio.start_server(self._handle, host, port, ssl=tls)
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

    async def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for GET `path`."""
        path = path.split("?", 1)[0]
        if path == "/health":
            healthy = await self.healthy()
            (self._metrics.health_success if healthy else self._metrics.health_failures).inc()
            body = json.dumps({"health": "true" if healthy else "false"}, separators=_COMPACT)
            return (200 if healthy else 503), "application/json", body.encode()
        if path == "/version":
            body = json.dumps(
                {"etcdserver": SERVER_VERSION, "etcdcluster": CLUSTER_VERSION}, separators=_COMPACT
            )
            return 200, "application/json", body.encode()
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST

            return 200, CONTENT_TYPE_LATEST, self._metrics.scrape()
        return 404, "text/plain", b"404 page not found\n"

    async def healthy(self) -> bool:
        """etcd 3.4's checkHealth: no active alarm (NOSPACE...), a known
        leader, and a quorum read done within 1 s (etcd: a QGET through Raft;
        here the ReadIndex barrier linearizable reads use, which also proves
        the leader still has a quorum)."""
        kv = self._node.kv
        if kv is None or not kv.has_leader:
            return False
        maintenance = kv.maintenance
        if maintenance is not None and maintenance.status_errors():
            return False
        try:
            await asyncio.wait_for(kv.read_barrier(), HEALTH_READ_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - timeout, no leader, stopped: unhealthy
            return False
        return True

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
                status, ctype, body = await self.respond(path)
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
