"""Per-method gRPC call counters (go-grpc-prometheus' names, as etcd exposes them).

Owns: `RpcCounter` (plain ints per method, bumped on the hot path with no lock
and no labels), `GrpcStats` (every method's counter, by service and method;
yields `grpc_server_started_total` / `grpc_server_handled_total` at scrape
time) and the per-call counting protocol api.errors.grpc_errors follows
(COUNTER_ATTR_PREFIX / COUNTS_ITSELF_ATTR).
Never: imports api/ (the api layer imports this), blocks or fails a call.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client.core import CounterMetricFamily, Metric

# The per-call counting protocol (GrpcStats.instrument sets it up): a servicer
# instance may carry, for a decorated method `Put`, the attribute
# `_kvstore_rpc_Put` = an RpcCounter; api.errors.grpc_errors bumps it. Absent:
# nothing is counted. (Read from the instance __dict__, the cheapest lookup:
# servicers must not use __slots__.)
COUNTER_ATTR_PREFIX = "_kvstore_rpc_"
# Set on every such wrapper: "this method counts its own calls, do not wrap it again".
COUNTS_ITSELF_ATTR = "__kvstore_counts_rpcs__"


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

        Methods decorated with `api.errors.grpc_errors` or `counted` count
        themselves through the counter set here on the instance
        (COUNTER_ATTR_PREFIX); other methods (generated UNIMPLEMENTED stubs)
        are not counted. No method is replaced."""
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


def counted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorate a servicer method that api.errors.grpc_errors does not wrap
    (streams, health) so each call or stream is counted once, with its final
    code, in the RpcCounter GrpcStats.instrument gave the instance (none: not
    counted). Applied where the class is defined: nothing replaces a method
    at run time. Keeps the function kind (grpc.aio picks the streaming API by
    it); a plain function (a generated UNIMPLEMENTED stub) is returned as is."""
    key = COUNTER_ATTR_PREFIX + fn.__name__
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        async def stream(self: Any, request: Any, context: Any) -> Any:
            counter: RpcCounter | None = self.__dict__.get(key)
            responses = fn(self, request, context)
            if counter is None:
                try:
                    async for item in responses:
                        yield item
                finally:
                    await responses.aclose()
                return
            counter.started += 1
            code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
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

        setattr(stream, COUNTS_ITSELF_ATTR, True)
        return stream
    if not inspect.iscoroutinefunction(fn):
        return fn

    @functools.wraps(fn)
    async def call(self: Any, request: Any, context: Any) -> Any:
        counter: RpcCounter | None = self.__dict__.get(key)
        if counter is None:
            return await fn(self, request, context)
        counter.started += 1
        code: grpc.StatusCode | None = grpc.StatusCode.UNKNOWN
        try:
            result = await fn(self, request, context)
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

    setattr(call, COUNTS_ITSELF_ATTR, True)
    return call


def _code_of(context: Any) -> grpc.StatusCode | None:
    """The status the handler set (None: not set, i.e. OK)."""
    code = getattr(context, "code", None)
    try:
        return code() if code is not None else None
    except Exception:  # noqa: BLE001 - a counter must never fail the call
        return None
