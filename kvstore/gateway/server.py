"""The gateway's HTTP/1.1 listeners.

Owns: `GatewayServer`, the aiohttp runner and its sites on the node's loop:
the JSON gateway with the probes on `--listen-client-http-urls` (etcd 3.5's
flag) and on `--listen-metrics-urls` (there it replaces the older
`server.http.MetricsServer` listener: same /metrics, /health, /version,
plus /livez, /readyz and the gateway).
Never: binds a port it was not given; starts before the node (the gateway
needs `node.kv`); leaves a site open after `stop()`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
from typing import Any

from aiohttp import web

from kvstore.api.options import DEFAULT_MAX_REQUEST_BYTES
from kvstore.gateway.app import Gateway, make_app
from kvstore.gateway.probes import Probes
from kvstore.server.config import host_port
from kvstore.server.errors import StartupError

STOP_GRACE_S = 2.0


class GatewayServer:
    def __init__(self, node: Any, *, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self._node = node
        self._max_request_bytes = max_request_bytes
        self._runner: web.AppRunner | None = None
        self._shared: Any = None
        self._gateway: Gateway | None = None
        self._shared_dir = ""
        self.ports: list[int] = []

    def app(self) -> web.Application:
        def gateway() -> Gateway | None:
            kv = getattr(self._node, "kv", None)
            if kv is not None:
                self._gateway = Gateway(kv, max_request_bytes=self._max_request_bytes)
            return self._gateway

        return make_app(gateway, Probes(self._node))

    async def _setup(self) -> web.AppRunner:
        if self._runner is None:
            # handler_cancellation: a client that goes away ends its handler
            # (a watch with no events would otherwise run until the next write).
            self._runner = web.AppRunner(
                self.app(),
                handler_cancellation=True,
                access_log=None,
                shutdown_timeout=STOP_GRACE_S,
            )
            await self._runner.setup()
        return self._runner

    def ready_note(self, client_http_urls: tuple[str, ...] | list[str]) -> str:
        """What the ready line adds: where the JSON gateway is (it does not
        share the gRPC port unless the experimental switch is on)."""
        if self._shared is not None:
            return " (gRPC and HTTP/JSON gateway, shared port: experimental)"
        http = ", ".join(u.split("://", 1)[-1] for u in client_http_urls)
        if http:
            return f" (gRPC; HTTP/JSON gateway on {http})"
        return " (gRPC; HTTP/JSON gateway: --listen-client-http-urls)"

    async def start(
        self, urls: list[tuple[str, str]], ssl_context: ssl.SSLContext | None = None
    ) -> None:
        """Listen on every (url, flag) given, an https:// one with
        `ssl_context`; the flag names errors."""
        if not urls:
            return
        runner = await self._setup()
        for url, flag in urls:
            host, port = host_port(url, flag)
            tls = ssl_context if url.startswith("https://") else None
            if url.startswith("https://") and tls is None:
                raise StartupError(f"cannot listen on {url} ({flag}): no TLS")
            site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=tls)
            try:
                await site.start()
            except OSError as exc:
                raise StartupError(f"cannot listen on {url} ({flag}): {exc}") from exc
            server = site._server  # noqa: SLF001 - aiohttp exposes no bound port
            sockets = getattr(server, "sockets", None) or ()
            self.ports.extend(s.getsockname()[1] for s in sockets[:1])

    async def share(self, urls: tuple[str, ...] | list[str], grpc_unix_path: str) -> None:
        """EXPERIMENTAL (gateway.portshare): serve the gateway on the client
        URLs too, piping HTTP/2 connections to the gRPC server at
        `grpc_unix_path`."""
        from kvstore.gateway.portshare import SharedPortListener

        runner = await self._setup()
        assert runner.server is not None
        self._shared = SharedPortListener(grpc_unix_path, runner.server)
        self._shared_dir = os.path.dirname(grpc_unix_path)
        for url in urls:
            host, port = host_port(url, "--listen-client-urls")
            try:
                await self._shared.start(host, port)
            except OSError as exc:
                raise StartupError(f"cannot listen on {url} (--listen-client-urls): {exc}") from exc

    async def stop(self) -> None:
        """Stop listening; unary requests in flight get STOP_GRACE_S, streams
        (endless by nature) end at once."""
        if self._gateway is not None:
            self._gateway.close_streams()
        if self._shared is not None:
            await self._shared.stop()
            self._shared = None
            shutil.rmtree(self._shared_dir, ignore_errors=True)
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner.cleanup()
            self._runner = None
