"""Distributed tracing of client requests with OpenTelemetry (off by default).

Owns: the process's TracerProvider when tracing is on (etcd 3.6's flags:
--enable-distributed-tracing, --distributed-tracing-address (OTLP/gRPC
collector), --distributed-tracing-service-name, --distributed-tracing-
instance-id, --distributed-tracing-sampling-rate in samples per million,
parent-based as in etcd: a request whose caller sampled it is always traced),
and `TracingInterceptor`, which gives every unary client RPC a SERVER span
named "etcdserverpb.KV/Put" (and so on) whose parent is the trace context the
caller sent in the gRPC metadata (W3C traceparent/tracestate), with the
rpc.* attributes and the gRPC status.

Zero cost when off: `setup()` returns no interceptor, so the server is built
exactly as without this module and the request path runs no tracing code at
all (nothing to measure in an A/B).

Not yet (TODO(config)): child spans for propose -> commit -> apply and the
ReadIndex barrier. They need timestamps from inside the Raft driver, which is
being reorganised (composition root); the request span's context is current
while the servicer runs, so those spans will nest under it once the driver
records them.

Must never: fail a request because tracing failed, or block the event loop
on export (BatchSpanProcessor exports from its own thread).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = "localhost:4317"
DEFAULT_SERVICE_NAME = "kvstore"
SAMPLES_PER_MILLION = 1_000_000


@dataclass(frozen=True)
class TracingConfig:
    enabled: bool = False
    address: str = DEFAULT_ADDRESS
    service_name: str = DEFAULT_SERVICE_NAME
    instance_id: str = ""
    sampling_rate_per_million: int = 0

    def validate(self) -> TracingConfig:
        if not 0 <= self.sampling_rate_per_million <= SAMPLES_PER_MILLION:
            raise ValueError(
                "--distributed-tracing-sampling-rate must be between 0 and 1000000 "
                f"(samples per million), got {self.sampling_rate_per_million}"
            )
        if self.enabled and not self.address:
            raise ValueError("--distributed-tracing-address is empty")
        return self


class Tracing:
    """A started tracer provider and the interceptor that uses it."""

    def __init__(self, provider: Any, interceptor: TracingInterceptor) -> None:
        self.provider = provider
        self.interceptor = interceptor

    def shutdown(self) -> None:
        """Flush spans not yet exported (bounded by the exporter's timeout)."""
        try:
            self.provider.shutdown()
        except Exception:  # noqa: BLE001 - never fail the server's exit
            log.warning("tracing: flushing spans at shutdown failed", exc_info=True)


def setup(cfg: TracingConfig, *, exporter: Any = None) -> Tracing | None:
    """Start tracing per `cfg`; None when disabled. `exporter` replaces the
    OTLP exporter (tests pass an in-memory one)."""
    if not cfg.enabled:
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased

    rate = cfg.sampling_rate_per_million
    root = TraceIdRatioBased(rate / SAMPLES_PER_MILLION) if rate else ALWAYS_OFF
    attributes = {"service.name": cfg.service_name}
    if cfg.instance_id:
        attributes["service.instance.id"] = cfg.instance_id
    provider = TracerProvider(resource=Resource.create(attributes), sampler=ParentBased(root))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=cfg.address, insecure=True)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info(
        "distributed tracing on: exporting to %s as %s, %d samples per million",
        cfg.address, cfg.service_name, rate,
    )  # fmt: skip
    return Tracing(provider, TracingInterceptor(provider.get_tracer("kvstore")))


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span around each unary-unary RPC (streams pass through)."""

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._extract = propagate.extract
        self._kind = trace.SpanKind.SERVER
        self._status = trace.Status
        self._error = trace.StatusCode.ERROR

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        name = handler_call_details.method.lstrip("/")
        service, _, method = name.partition("/")
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if
                   isinstance(v, str)}  # fmt: skip
        # The aio server runs coroutine behaviours; grpc's stubs type the sync one.
        behavior: Any = handler.unary_unary
        tracer, extract, kind = self._tracer, self._extract, self._kind
        status, error = self._status, self._error

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method}
            with tracer.start_as_current_span(
                name, context=extract(carrier), kind=kind, attributes=attributes,
                record_exception=False, set_status_on_exception=False,
            ) as span:  # fmt: skip
                try:
                    response = await behavior(request, context)
                except BaseException as exc:
                    failed = _code(context) or grpc.StatusCode.UNKNOWN
                    span.set_attribute("rpc.grpc.status_code", failed.value[0])
                    span.set_status(status(error, _details(context) or type(exc).__name__))
                    raise
                code = _code(context)
                span.set_attribute("rpc.grpc.status_code", (code or grpc.StatusCode.OK).value[0])
                if code not in (None, grpc.StatusCode.OK):
                    span.set_status(status(error, _details(context) or code.name))
                return response

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _code(context: Any) -> grpc.StatusCode | None:
    try:
        return context.code()
    except Exception:  # noqa: BLE001 - tracing must not fail the call
        return None


def _details(context: Any) -> str | None:
    try:
        return context.details()
    except Exception:  # noqa: BLE001
        return None
