"""OpenTelemetry request spans: parent taken from the caller's gRPC metadata,
etcd 3.6's parent-based sampling, the gRPC status on the span, nothing at all
when tracing is off, and spans exported over OTLP by a real node."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kvstore import tracing
from kvstore.client import Client
from kvstore.devcluster import child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"  # W3C traceparent, sampled
UNSAMPLED = f"00-{TRACE_ID}-00f067aa0ba902b7-00"


class _KV(rpc_pb2_grpc.KVServicer):
    async def Put(self, request, context):
        return rpc_pb2.PutResponse()

    async def Range(self, request, context):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided")


async def _calls(rate: int, calls: list[tuple[str, tuple]]) -> list:
    exporter = InMemorySpanExporter()
    traced = tracing.setup(
        tracing.TracingConfig(enabled=True, sampling_rate_per_million=rate), exporter=exporter
    )
    assert traced is not None
    server = grpc.aio.server(interceptors=[traced.interceptor])
    rpc_pb2_grpc.add_KVServicer_to_server(_KV(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            kv = rpc_pb2_grpc.KVStub(ch)
            for method, metadata in calls:
                try:
                    if method == "Put":
                        await kv.Put(rpc_pb2.PutRequest(key=b"k"), metadata=metadata)
                    else:
                        await kv.Range(rpc_pb2.RangeRequest(), metadata=metadata)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        await server.stop(None)
        traced.provider.force_flush()
        traced.shutdown()
    return list(exporter.get_finished_spans())


def test_request_span_continues_the_callers_trace():
    spans = asyncio.run(_calls(0, [("Put", (("traceparent", PARENT),))]))
    assert len(spans) == 1
    span = spans[0]
    assert span.name == "etcdserverpb.KV/Put" and span.kind.name == "SERVER"
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert span.attributes["rpc.system"] == "grpc"
    assert span.attributes["rpc.method"] == "Put"
    assert span.attributes["rpc.grpc.status_code"] == 0
    assert span.status.is_ok


def test_sampling_is_parent_based_per_million():
    unsampled, sampled = (("traceparent", UNSAMPLED),), (("traceparent", PARENT),)
    calls = [("Put", ()), ("Put", unsampled), ("Put", sampled)]
    # Rate 0: only the request its caller sampled.
    assert [f"{s.context.trace_id:032x}" for s in asyncio.run(_calls(0, calls))] == [TRACE_ID]
    # A million per million: every root request too (not the caller's unsampled one).
    assert len(asyncio.run(_calls(1_000_000, calls))) == 2


def test_error_status_is_recorded():
    (span,) = asyncio.run(_calls(1_000_000, [("Range", ())]))
    assert span.name == "etcdserverpb.KV/Range"
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert not span.status.is_ok
    assert span.status.description == "etcdserver: key is not provided"


def test_off_means_no_interceptor_and_bad_rates_are_refused():
    assert tracing.setup(tracing.TracingConfig()) is None
    with pytest.raises(ValueError, match="between 0 and 1000000"):
        tracing.TracingConfig(enabled=True, sampling_rate_per_million=2_000_000).validate()


class _Collector(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.spans: list[tuple[str, str]] = []  # (service.name, span name)
        self._lock = threading.Lock()

    def Export(self, request, context):
        with self._lock:
            for rs in request.resource_spans:
                service = next(
                    (a.value.string_value for a in rs.resource.attributes
                     if a.key == "service.name"), "",
                )  # fmt: skip
                for ss in rs.scope_spans:
                    self.spans.extend((service, s.name) for s in ss.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.mark.e2e
def test_a_node_exports_request_spans_over_otlp(tmp_path):
    collector = _Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    otlp = server.add_insecure_port("127.0.0.1:0")
    server.start()
    client_port, peer = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "kvstore.cli.server_cmd", "--name", "t1",
        "--data-dir", str(tmp_path / "t1"),
        "--listen-client-urls", f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"t1=http://127.0.0.1:{peer}",
        "--enable-distributed-tracing",
        "--distributed-tracing-address", f"127.0.0.1:{otlp}",
        "--distributed-tracing-service-name", "kvstore-test",
        "--distributed-tracing-sampling-rate", "1000000",
    ]  # fmt: skip
    env = {**child_env(), "OTEL_BSP_SCHEDULE_DELAY": "100"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=env)  # fmt: skip
    try:
        assert proc.stdout is not None and "ready" in proc.stdout.readline()
        with Client([f"127.0.0.1:{client_port}"]) as c:
            c.put("traced", "1")
            c.get("traced")
        wanted = {("kvstore-test", f"etcdserverpb.KV/{m}") for m in ("Put", "Range")}
        wait_until(
            lambda: wanted <= set(collector.spans),
            timeout=30,
            what="spans at the collector",
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        server.stop(None)
    assert proc.returncode == 0
