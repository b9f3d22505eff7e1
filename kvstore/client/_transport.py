"""Endpoints, grpc.aio channels, deadlines and the retry/failover policy.

Owns: one lazily created `grpc.aio` channel per endpoint, the "pinned"
endpoint (like clientv3, one endpoint is used until it fails), and `unary()`,
the single function every unary RPC goes through.

Retry rule (ETCD_API §0.2, clientv3 `retry.go`):
  * idempotent RPCs (Range, LeaseTimeToLive, MemberList, Status, ...) are
    retried on another endpoint after UNAVAILABLE;
  * mutating RPCs (Put, DeleteRange, Txn, Compact, LeaseGrant's siblings that
    change state, Member*, Defragment) are retried only when the request was
    certainly never sent: the channel could not be connected within the dial
    timeout, or grpc reported that it failed to connect. A write is never
    resent after it may have reached a server, so it is never applied twice.

Security (kvstore/client/auth.py): with `tls`, channels are TLS channels;
with `auth`, every call carries the token as metadata (`call_metadata`) and a
call refused with `invalid auth token` / `revision of auth store is old` is
sent once more with a fresh token. That resend is safe for writes too: the
server refused the request before it could apply it.

Must never: be used from two event loops (grpc.aio channels belong to the loop
that created them), or sleep other than as a bounded retry backoff.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import grpc

from kvstore.client.errors import (
    ClientClosedError,
    ClientError,
    ConnectionFailedError,
    from_rpc_error,
    from_status,
)
from kvstore.pb import rpc_pb2_grpc, v3election_pb2_grpc, v3lock_pb2_grpc

if TYPE_CHECKING:
    from kvstore.client.auth import ClientTLS, TokenAuth

ENV_ENDPOINTS = "KVSTORE_ENDPOINTS"
DEFAULT_ENDPOINT = "127.0.0.1:2379"
# clientv3 WithRequireLeader: the server cancels streams when it loses its leader.
REQUIRE_LEADER = (("hasleader", "true"),)

_CHANNEL_OPTIONS = (
    # Notice dead peers on idle streams (watch, keepalive). etcd tolerates
    # pings every >= 5 s (--grpc-keepalive-min-time).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly to a restarted member.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    ("grpc.max_receive_message_length", -1),
    # Transparent retries are safe (request never left the client) but would
    # hide connection failures from the failover logic.
    ("grpc.enable_retries", 0),
)

_STUBS = {
    "KV": rpc_pb2_grpc.KVStub,
    "Watch": rpc_pb2_grpc.WatchStub,
    "Lease": rpc_pb2_grpc.LeaseStub,
    "Cluster": rpc_pb2_grpc.ClusterStub,
    "Maintenance": rpc_pb2_grpc.MaintenanceStub,
    "Auth": rpc_pb2_grpc.AuthStub,
    "Lock": v3lock_pb2_grpc.LockStub,
    "Election": v3election_pb2_grpc.ElectionStub,
}


async def stream_write(call: Any, message: Any) -> None:
    """Write to a stream; a stream that already ended raises its ClientError
    (grpc.aio raises a bare InvalidStateError there)."""
    try:
        await call.write(message)
    except asyncio.InvalidStateError:
        code = await call.code()
        details = await call.details()
        if code == grpc.StatusCode.OK:
            code, details = grpc.StatusCode.UNAVAILABLE, "stream closed by the server"
        raise from_status(code, details or "stream closed") from None
    except grpc.aio.AioRpcError as exc:
        raise from_rpc_error(exc) from None


async def _tls_hints(endpoints: list[str], tls: ClientTLS | None) -> str:
    """The reasons a TLS mismatch kept `endpoints` out, as ": ep: reason; ...",
    or "" when that is not why; at most 2 s in all."""
    from kvstore.client.auth import diagnose_tls

    if not endpoints:
        return ""
    try:
        reasons = await asyncio.wait_for(
            asyncio.gather(*(diagnose_tls(ep, tls) for ep in endpoints), return_exceptions=True),
            2.0,
        )
    except TimeoutError:
        return ""
    found = [
        f"{ep}: {r}" for ep, r in zip(endpoints, reasons, strict=True) if isinstance(r, str) and r
    ]
    return ": " + "; ".join(found) if found else ""


def _auth_expired(err: ClientError) -> bool:
    from kvstore.client.auth import auth_expired

    return auth_expired(err)


def parse_endpoints(endpoints: str | Sequence[str] | None) -> list[str]:
    """Normalise endpoints to "host:port" strings.

    Accepts a list or a comma-separated string; None reads KVSTORE_ENDPOINTS
    (falling back to 127.0.0.1:2379). "http://" / "https://" prefixes and
    trailing slashes are stripped."""
    if endpoints is None:
        endpoints = os.environ.get(ENV_ENDPOINTS) or DEFAULT_ENDPOINT
    if isinstance(endpoints, str):
        endpoints = endpoints.split(",")
    out = []
    for ep in endpoints:
        ep = ep.strip()
        for scheme in ("http://", "https://", "grpc://"):
            if ep.startswith(scheme):
                ep = ep[len(scheme) :]
        ep = ep.rstrip("/")
        if ep:
            out.append(ep)
    if not out:
        raise ValueError("no endpoints given")
    return out


class Transport:
    """Channels to every endpoint and the retry policy. One per AsyncClient."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        dial_timeout: float = 2.0,
        command_timeout: float = 5.0,
        max_attempts: int | None = None,
        tls: ClientTLS | None = None,
        auth: TokenAuth | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.tls = tls
        self.auth = auth
        self.dial_timeout = dial_timeout
        self.command_timeout = command_timeout
        self.max_attempts = max_attempts or 2 * len(self.endpoints) + 1
        self._pinned = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, str], Any] = {}
        self.closed = False

    # --- channels ------------------------------------------------------------

    def channel(self, endpoint: str) -> grpc.aio.Channel:
        if self.closed:
            raise ClientClosedError("client is closed")
        ch = self._channels.get(endpoint)
        if ch is None:
            if self.tls is not None:
                creds, extra = self.tls.channel_args(endpoint, self.dial_timeout)
                ch = grpc.aio.secure_channel(endpoint, creds, options=_CHANNEL_OPTIONS + extra)
            else:
                ch = grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
            self._channels[endpoint] = ch
        return ch

    def stub(self, endpoint: str, service: str) -> Any:
        key = (endpoint, service)
        stub = self._stubs.get(key)
        if stub is None:
            stub = _STUBS[service](self.channel(endpoint))
            self._stubs[key] = stub
        return stub

    @property
    def pinned(self) -> str:
        return self.endpoints[self._pinned]

    def endpoint_failed(self, endpoint: str) -> None:
        """Move the pin away from an endpoint that just failed."""
        if self.endpoints[self._pinned] == endpoint:
            self._pinned = (self._pinned + 1) % len(self.endpoints)

    async def connect(self, deadline: float | None = None, exclude: str | None = None) -> str:
        """Return an endpoint whose channel is READY, starting at the pinned one.

        Tries each endpoint for up to `dial_timeout` (bounded by `deadline`).
        Raises ConnectionFailedError when none connects: nothing was sent."""
        errors: list[str] = []
        timed_out: list[str] = []
        n = len(self.endpoints)
        for i in range(n):
            ep = self.endpoints[(self._pinned + i) % n]
            if ep == exclude and n > 1:
                continue
            ch = self.channel(ep)
            if ch.get_state(try_to_connect=True) != grpc.ChannelConnectivity.READY:
                budget = self.dial_timeout
                if deadline is not None:
                    budget = min(budget, deadline - time.monotonic())
                if budget <= 0:
                    errors.append(f"{ep}: deadline exceeded")
                    break
                try:
                    await asyncio.wait_for(ch.channel_ready(), budget)
                except TimeoutError:
                    errors.append(f"{ep}: no connection within {budget:.1f}s")
                    timed_out.append(ep)
                    continue
            self._pinned = self.endpoints.index(ep)
            return ep
        # Nothing connected: say so in one line, with the TLS mismatch if that
        # is the reason (only now, so failing over costs nothing extra).
        hints = await _tls_hints(timed_out, self.tls)
        raise ConnectionFailedError(
            "could not connect to any endpoint (" + "; ".join(errors) + ")" + hints,
            grpc.StatusCode.UNAVAILABLE,
        )

    # --- auth ------------------------------------------------------------------

    async def call_metadata(
        self, extra: Sequence[tuple[str, str]] | None = None
    ) -> tuple[tuple[str, str], ...]:
        """Metadata for a call or stream: `extra` plus the token (authenticating
        first if the client has credentials and no token yet)."""
        if self.auth is None:
            return tuple(extra or ())
        await self.auth.ensure(self)
        return (*(extra or ()), *self.auth.metadata())

    async def refresh_token(self, stale_metadata: Sequence[tuple[str, str]]) -> bool:
        """After `invalid auth token`: get a new token unless another call did
        already. False when the client has no credentials (nothing to refresh)."""
        if self.auth is None:
            return False
        stale = next((v for k, v in stale_metadata if k == "token"), None)
        await self.auth.refresh(self, stale)
        return True

    # --- unary calls -----------------------------------------------------------

    async def unary(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        idempotent: bool,
        timeout: float | None = None,
        endpoint: str | None = None,
        metadata: Sequence[tuple[str, str]] | None = None,
        authenticated: bool = True,
    ) -> tuple[str, Any]:
        """Call `service.method(request)`; return (endpoint that answered, response).

        `endpoint` pins the call to one member (no failover; used for
        member-local maintenance calls). `authenticated=False` sends no token
        (Authenticate itself). Raises ClientError subclasses."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.command_timeout)
        attempt = 0
        refreshed = False
        base_metadata = metadata
        while True:
            if authenticated and self.auth is not None:
                metadata = await self.call_metadata(base_metadata)
            attempt += 1
            if endpoint is not None:
                ep = endpoint
                await self._connect_one(ep, deadline)
            else:
                ep = await self.connect(deadline)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ClientError(
                    "deadline exceeded before the request was sent",
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
            call = getattr(self.stub(ep, service), method)
            try:
                return ep, await call(request, timeout=remaining, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                err = from_rpc_error(exc)
            if authenticated and not refreshed and _auth_expired(err):
                # Refused before it could apply: resend once with a new token.
                refreshed = True
                if await self.refresh_token(metadata or ()):
                    continue
            never_sent = isinstance(err, ConnectionFailedError)
            if err.retryable or never_sent:
                self.endpoint_failed(ep)  # the next call starts elsewhere
            if not (never_sent or (idempotent and err.retryable)) or endpoint is not None:
                raise err
            if attempt >= self.max_attempts or time.monotonic() >= deadline:
                raise err
            # Bounded backoff so an election (~1 s) can finish between attempts.
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5, max(0.0, deadline - time.monotonic())))

    async def _connect_one(self, ep: str, deadline: float) -> None:
        ch = self.channel(ep)
        if ch.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return
        budget = min(self.dial_timeout, deadline - time.monotonic())
        try:
            await asyncio.wait_for(ch.channel_ready(), max(budget, 0.001))
        except TimeoutError:
            raise ConnectionFailedError(
                f"could not connect to {ep} within {budget:.1f}s", grpc.StatusCode.UNAVAILABLE
            ) from None

    async def close(self) -> None:
        self.closed = True
        channels, self._channels, self._stubs = self._channels, {}, {}
        for ch in channels.values():
            await ch.close(grace=None)
