"""Peer client layer: every gRPC channel this member opens to another member.

Owns: `PeerChannels`, the ONE place where channels to other members are made
(and so the one place that chooses their credentials: insecure when
`credentials` is None, TLS otherwise), with a cache of shared channels per
target; `PeerClient`, unary calls over those channels with a per-call deadline,
retries on UNAVAILABLE for idempotent methods only, and the mapping of gRPC
failures to the transport's own errors (`PeerUnavailable`,
`PeerDeadlineExceeded`, `PeerCallError`).

Never: interprets what a member answered (forward.py maps answers to etcd
errors); retries a call that may have changed state on the remote member (a
non-idempotent call is tried once: its outcome after a failure is unknown);
creates grpc.aio objects outside the running event loop (channels are made on
first use, in the loop).

Who owns which channel: `channel(target)` returns a channel shared by every
caller and closed by `close()` (forwarding to the leader, member list);
`open(target, options)` returns a new channel the caller owns and closes (a
Raft stream per peer, which needs its own keepalive/back-off options and is
torn down when the peer's address changes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar, cast

import grpc

log = logging.getLogger(__name__)

ChannelOption = tuple[str, int | str]

# Options of the shared channels. gRPC's own reconnect back-off grows to two
# minutes by default: a leader that restarts at the same address would then
# stay unreachable for forwarding long after it is back. Kept as short as the
# Raft streams' (peer.py). No keepalive pings: client ports do not accept them.
SHARED_CHANNEL_OPTIONS: tuple[ChannelOption, ...] = (
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.min_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 250),
)

# A peer call whose target is a function is re-resolved before every attempt
# (the leader may have changed between two attempts).
Target = str | Callable[[], str]


class _Serializable(Protocol):
    def SerializeToString(self) -> bytes: ...  # noqa: N802 - protobuf's name


# A request is a protobuf message, or bytes for a raw-bytes method.
Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True, slots=True)
class UnaryMethod(Generic[Req, Resp]):
    """One unary RPC as the peer client calls it.

    `decode` turns the answer's bytes into `Resp` (protobuf's `FromString`, or
    `None` for a raw-bytes method). `idempotent`: calling it twice has the
    effect of calling it once, so a call that failed with UNAVAILABLE may be
    sent again."""

    path: str  # "/package.Service/Method"
    decode: Callable[[bytes], Resp] | None
    idempotent: bool


@dataclass(frozen=True, slots=True)
class StreamMethod(Generic[Req, Resp]):
    """One bidirectional streaming RPC (never retried: a stream is not a call)."""

    path: str
    decode: Callable[[bytes], Resp]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Attempts of an idempotent call that fails with UNAVAILABLE, and the pause
    between them (doubling, never past the call's deadline)."""

    attempts: int = 3
    backoff_s: float = 0.05
    max_backoff_s: float = 0.5


# --- errors ------------------------------------------------------------------------------


class PeerCallError(Exception):
    """A call to another member failed with a gRPC status.

    `code`/`details` are what gRPC reported: the remote member's own answer
    (for example an etcd error it raised), or a local failure to reach it."""

    def __init__(self, target: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{target}: {code.name}: {details}")
        self.target = target
        self.code = code
        self.details = details


class PeerUnavailable(PeerCallError):
    """UNAVAILABLE: not reached (connect failure, connection lost) or the
    member said it cannot serve now. Safe to retry for idempotent calls."""


class PeerDeadlineExceeded(PeerCallError):
    """The call's deadline passed before an answer came."""


def map_rpc_error(target: str, exc: grpc.aio.AioRpcError) -> PeerCallError:
    """The transport error for a failed gRPC call (the one mapping)."""
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return PeerUnavailable(target, code, details)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PeerDeadlineExceeded(target, code, details)
    return PeerCallError(target, code, details)


# --- channels ----------------------------------------------------------------------------


class PeerChannels:
    """The pool of gRPC channels to other members; every method runs in the loop.

    `credentials` is the single choice of channel security for member-to-member
    traffic: None means plaintext (today), `grpc.ssl_channel_credentials(...)`
    means TLS. `options` apply to the shared channels of `channel()`."""

    def __init__(
        self,
        *,
        credentials: grpc.ChannelCredentials | None,
        options: Sequence[ChannelOption] = SHARED_CHANNEL_OPTIONS,
    ) -> None:
        self._credentials = credentials
        self._options = tuple(options)
        self._shared: dict[str, grpc.aio.Channel] = {}
        self._closed = False

    @property
    def secure(self) -> bool:
        return self._credentials is not None

    def open(self, target: str, options: Sequence[ChannelOption] = ()) -> grpc.aio.Channel:
        """A new channel to `target` ("host:port"); the caller closes it."""
        if self._credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        return grpc.aio.secure_channel(target, self._credentials, options=list(options))

    def channel(self, target: str) -> grpc.aio.Channel:
        """The shared channel to `target`, made on first use; closed by `close()`."""
        if self._closed:
            raise RuntimeError("peer channels are closed")
        ch = self._shared.get(target)
        if ch is None:
            ch = self._shared[target] = self.open(target, self._options)
        return ch

    async def close(self) -> None:
        """Close every shared channel (their calls in flight fail with CANCELLED)."""
        self._closed = True
        shared, self._shared = list(self._shared.values()), {}
        for ch in shared:
            with contextlib.suppress(Exception):
                await ch.close(grace=None)


# --- calls -------------------------------------------------------------------------------


class PeerClient:
    """Unary calls to other members over `PeerChannels` (deadline, retry, errors)."""

    def __init__(self, channels: PeerChannels, *, retry: RetryPolicy | None = None) -> None:
        self.channels = channels
        self._retry = retry or RetryPolicy()

    async def unary(
        self,
        target: Target,
        method: UnaryMethod[Req, Resp],
        request: Req,
        *,
        timeout_s: float,
        metadata: Sequence[tuple[str, str]] = (),
    ) -> Resp:
        """Call `method` on `target` and return its decoded answer.

        `timeout_s` bounds the whole call, retries included. Raises
        PeerUnavailable / PeerDeadlineExceeded / PeerCallError; whatever
        `target()` raises (e.g. "no leader") propagates unchanged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        attempts = self._retry.attempts if method.idempotent else 1
        pause = self._retry.backoff_s
        for attempt in range(1, attempts + 1):
            address = target() if callable(target) else target
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PeerDeadlineExceeded(address, grpc.StatusCode.DEADLINE_EXCEEDED,
                                           "Deadline Exceeded")  # fmt: skip
            call = self.channels.channel(address).unary_unary(
                method.path,
                request_serializer=_serializer(request),
                response_deserializer=method.decode,
            )
            try:
                answer: Resp = await call(request, timeout=remaining, metadata=tuple(metadata))
                return answer
            except grpc.aio.AioRpcError as exc:
                error = map_rpc_error(address, exc)
            if not isinstance(error, PeerUnavailable) or attempt == attempts:
                raise error
            sleep_s = min(pause, deadline - loop.time())
            if sleep_s <= 0:
                raise error
            log.debug("peer call %s to %s unavailable (%s); retrying", method.path, address,
                      error.details)  # fmt: skip
            await asyncio.sleep(sleep_s)
            pause = min(pause * 2, self._retry.max_backoff_s)
        raise AssertionError("unreachable")  # the loop always returns or raises


def _serializer(request: Req) -> Callable[[Req], bytes] | None:
    # Raw-bytes methods (the member-list RPC) go out as they are.
    return None if isinstance(request, bytes) else cast(Callable[[Req], bytes], serialize)


def serialize(message: _Serializable) -> bytes:
    """A protobuf request's wire bytes."""
    return message.SerializeToString()


__all__ = [
    "ChannelOption",
    "PeerCallError",
    "PeerChannels",
    "PeerClient",
    "PeerDeadlineExceeded",
    "PeerUnavailable",
    "RetryPolicy",
    "SHARED_CHANNEL_OPTIONS",
    "StreamMethod",
    "Target",
    "UnaryMethod",
    "map_rpc_error",
    "serialize",
]
