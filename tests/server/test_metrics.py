"""/metrics and /health of a real in-process node (RocksDB, gRPC on 127.0.0.1
port 0), plus unit tests of the RPC counting the api wrappers do."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from node_harness import member_config, peer_server
from prometheus_client.parser import text_string_to_metric_families
from server_fakes import DictStore, SavingMemoryLog

from kvstore import errors
from kvstore.api import add_servicers
from kvstore.api.errors import grpc_errors
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.raft.core import RaftConfig, RaftCore
from kvstore.raft.types import Entry, EntryType, Message
from kvstore.server.applier import Applier
from kvstore.server.http import MetricsServer
from kvstore.server.membership import MemberTable
from kvstore.server.metrics import NodeMetrics
from kvstore.server.node import NodeDriver
from kvstore.server.rpc_stats import GrpcStats, RpcCounter, counted
from kvstore.server.runtime import KvNode
from kvstore.testing.waiting import async_wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """{(sample name, labels): value} of a Prometheus text exposition."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def handled(samples: Samples, service: str, method: str, code: str, rpc_type: str) -> float:
    return value(
        samples, "grpc_server_handled_total",
        grpc_code=code, grpc_method=method, grpc_service=service, grpc_type=rpc_type,
    )  # fmt: skip


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


class OneNode:
    """A single-member cluster with the client API and the metrics listener."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.node: KvNode | None = None
        self.client: grpc.aio.Server | None = None
        self.http: MetricsServer | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> None:
        peer, peer_port = peer_server()
        self.client = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        client_port = self.client.add_insecure_port("127.0.0.1:0")
        cfg = member_config(
            self.base / "m0", "m0", peer_port, f"m0=http://127.0.0.1:{peer_port}",
            client_port=client_port, initial_cluster_token="metrics-test",
        )  # fmt: skip
        self.node = KvNode(cfg, peer_server=peer)
        await self.node.start()
        add_servicers(self.client, self.node.kv)
        await self.client.start()
        self.http = MetricsServer(self.node, self.node.metrics)
        await self.http.start(["http://127.0.0.1:0"])
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{client_port}")
        kv = self.node.kv
        await async_wait_until(lambda: kv.has_leader, timeout=20, what="leader")

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.http is not None:
            await self.http.stop()
        if self.client is not None:
            await self.client.stop(grace=0)
        if self.node is not None:
            await self.node.stop()

    async def scrape(self) -> Samples:
        assert self.http is not None
        status, body = await http_get(self.http.ports[0], "/metrics")
        assert status == 200
        return parse(body.decode())

    async def health(self) -> tuple[int, bytes]:
        assert self.http is not None
        return await http_get(self.http.ports[0], "/health")


def run(body: Any, tmp_path: Path, timeout: float = 60) -> None:
    async def main() -> None:
        cluster = OneNode(tmp_path)
        try:
            await cluster.start()
            await body(cluster)
        finally:
            await cluster.stop()

    asyncio.run(asyncio.wait_for(main(), timeout))


@pytest.mark.integration
def test_metrics_move_with_puts_errors_watches_and_leases(tmp_path: Path) -> None:
    async def body(c: OneNode) -> None:
        assert c.channel is not None
        kv = rpc_pb2_grpc.KVStub(c.channel)
        before = await c.scrape()
        # Every registered method is listed from the start, at 0 (as etcd does).
        assert value(
            before, "grpc_server_started_total",
            grpc_method="Put", grpc_service="etcdserverpb.KV", grpc_type="unary",
        ) == 0  # fmt: skip
        assert handled(before, "etcdserverpb.KV", "Put", "OK", "unary") == 0
        fsync_before = value(before, "etcd_disk_wal_fsync_duration_seconds_count")

        puts = 7
        for i in range(puts):
            await kv.Put(rpc_pb2.PutRequest(key=f"k{i}".encode(), value=b"v"))
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await kv.Put(rpc_pb2.PutRequest(key=b"", value=b"v"))  # empty key
        assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as future:
            await kv.Range(rpc_pb2.RangeRequest(key=b"k0", revision=10_000))
        assert future.value.code() == grpc.StatusCode.OUT_OF_RANGE
        lease = await rpc_pb2_grpc.LeaseStub(c.channel).LeaseGrant(
            rpc_pb2.LeaseGrantRequest(TTL=60)
        )
        assert lease.ID != 0

        after = await c.scrape()
        assert handled(after, "etcdserverpb.KV", "Put", "OK", "unary") == puts
        assert handled(after, "etcdserverpb.KV", "Put", "InvalidArgument", "unary") == 1
        assert handled(after, "etcdserverpb.KV", "Range", "OutOfRange", "unary") == 1
        assert handled(after, "etcdserverpb.Lease", "LeaseGrant", "OK", "unary") == 1
        assert value(
            after, "grpc_server_started_total",
            grpc_method="Put", grpc_service="etcdserverpb.KV", grpc_type="unary",
        ) == puts + 1  # fmt: skip
        assert value(after, "etcd_disk_wal_fsync_duration_seconds_count") > fsync_before
        assert value(after, "etcd_disk_backend_commit_duration_seconds_count") >= 1
        assert value(after, "kvstore_server_apply_duration_seconds_count") >= 1
        assert value(after, "kvstore_lease_active") == 1
        assert value(after, "etcd_server_has_leader") == 1
        assert value(after, "etcd_server_proposals_committed_total") >= puts + 1
        assert value(after, "etcd_mvcc_db_total_size_in_bytes") > 0
        assert value(after, "kvstore_raft_term") >= 1
        assert value(after, "etcd_debugging_mvcc_watcher_total") == 0

        # One watch on a stream: watcher 0 -> 1 -> 0 after cancel; the stream
        # is counted once, when it ends (the client cancels it: Canceled).
        requests: asyncio.Queue[Any] = asyncio.Queue()

        async def request_iter() -> Any:
            while (req := await requests.get()) is not None:
                yield req

        call = rpc_pb2_grpc.WatchStub(c.channel).Watch(request_iter())
        await requests.put(
            rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(key=b"k0"))
        )
        created = await asyncio.wait_for(call.read(), 10)
        assert created.created
        during = await c.scrape()
        assert value(during, "etcd_debugging_mvcc_watcher_total") == 1
        assert value(during, "etcd_debugging_mvcc_watch_stream_total") == 1
        await requests.put(
            rpc_pb2.WatchRequest(
                cancel_request=rpc_pb2.WatchCancelRequest(watch_id=created.watch_id)
            )
        )
        canceled = await asyncio.wait_for(call.read(), 10)
        assert canceled.canceled
        no_watcher = await c.scrape()
        assert value(no_watcher, "etcd_debugging_mvcc_watcher_total") == 0
        call.cancel()

        async def stream_counted() -> Samples | None:
            s = await c.scrape()
            return (
                s if handled(s, "etcdserverpb.Watch", "Watch", "Canceled", "bidi_stream") else None
            )

        closed = await async_wait_until(stream_counted, timeout=10, what="watch stream counted")
        assert value(closed, "etcd_debugging_mvcc_watch_stream_total") == 0
        assert handled(closed, "etcdserverpb.Watch", "Watch", "OK", "bidi_stream") == 0

    run(body, tmp_path)


@pytest.mark.integration
def test_health_is_503_while_an_alarm_is_active(tmp_path: Path) -> None:
    async def body(c: OneNode) -> None:
        assert c.channel is not None and c.node is not None and c.node.kv is not None
        assert await c.health() == (200, b'{"health":"true"}')
        maintenance = rpc_pb2_grpc.MaintenanceStub(c.channel)
        alarm = rpc_pb2.AlarmRequest(
            action=rpc_pb2.AlarmRequest.ACTIVATE, memberID=c.node.kv.member_id,
            alarm=rpc_pb2.NOSPACE,
        )  # fmt: skip
        await maintenance.Alarm(alarm)
        assert await c.health() == (503, b'{"health":"false"}')
        alarm.action = rpc_pb2.AlarmRequest.DEACTIVATE
        await maintenance.Alarm(alarm)
        assert await c.health() == (200, b'{"health":"true"}')
        samples = await c.scrape()
        assert value(samples, "etcd_server_health_success_total") == 2
        assert value(samples, "etcd_server_health_failures_total") == 1

    run(body, tmp_path)


def test_health_needs_a_quorum_read() -> None:
    """A leader known but the ReadIndex barrier failing or stuck: 503."""

    async def main() -> None:
        never = asyncio.Event()

        async def stuck() -> None:
            await never.wait()

        async def no_leader() -> None:
            raise errors.NO_LEADER()

        async def fine() -> None:
            return None

        kv = SimpleNamespace(has_leader=True, read_barrier=fine, maintenance=None)
        server = MetricsServer(SimpleNamespace(kv=kv, driver=None, watch_hub=None, lessor=None))
        assert await server.healthy()
        kv.read_barrier = no_leader
        assert not await server.healthy()
        kv.read_barrier = stuck
        assert await server.respond("/health") == (
            503, "application/json", b'{"health":"false"}',
        )  # fmt: skip

    asyncio.run(asyncio.wait_for(main(), 10))


# ------------------------------------------------------------ unit: counting
class FakeContext:
    def __init__(self) -> None:
        self._code: grpc.StatusCode | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self._code = code
        raise grpc.aio.AbortError()

    def code(self) -> grpc.StatusCode | None:
        return self._code


class Servicer:
    def __init__(self, outcome: BaseException | None) -> None:
        self.outcome = outcome

    @grpc_errors
    async def Put(self, request: Any, context: Any) -> str:  # noqa: N802
        if self.outcome is not None:
            raise self.outcome
        return "ok"


def put_service() -> Any:
    method = SimpleNamespace(name="Put", client_streaming=False, server_streaming=False)
    return SimpleNamespace(full_name="etcdserverpb.KV", methods=[method])


def test_grpc_errors_counts_each_outcome_with_its_code() -> None:
    async def main() -> None:
        outcomes: list[BaseException | None] = [
            None, None, errors.COMPACTED(), ValueError("bug"), asyncio.CancelledError(),
        ]  # fmt: skip
        stats = GrpcStats()
        servicer = Servicer(None)
        stats.instrument(servicer, put_service())
        for outcome in outcomes:
            servicer.outcome = outcome
            with contextlib.suppress(grpc.aio.AbortError, asyncio.CancelledError):
                await servicer.Put(None, FakeContext())
        # A second servicer of the same service on the node shares the counter.
        other = Servicer(None)
        stats.instrument(other, put_service())
        await other.Put(None, FakeContext())
        counter = stats.counter("etcdserverpb.KV", "Put")
        assert counter is not None
        assert (counter.started, counter.ok, counter.in_flight) == (6, 3, 0)
        assert counter.codes == {
            errors.COMPACTED().code: 1,
            grpc.StatusCode.INTERNAL: 1,
            grpc.StatusCode.CANCELLED: 1,
        }

    asyncio.run(asyncio.wait_for(main(), 10))


def test_uninstrumented_servicer_is_not_counted_and_still_maps_errors() -> None:
    async def main() -> None:
        ctx = FakeContext()
        with pytest.raises(grpc.aio.AbortError):
            await Servicer(errors.COMPACTED()).Put(None, ctx)
        assert ctx.code() == errors.COMPACTED().code

    asyncio.run(asyncio.wait_for(main(), 10))


def test_counting_wrapper_keeps_stream_kind_and_counts_final_code() -> None:
    import inspect

    class Streams:
        """A servicer whose stream and unary methods count themselves."""

        @counted
        async def Stream(self, request: Any, context: Any) -> Any:  # noqa: N802
            for i in range(request):
                yield i
            if request == 2:
                await context.abort(grpc.StatusCode.NOT_FOUND, "gone")

        @counted
        async def Check(self, request: Any, context: Any) -> int:  # noqa: N802
            return request

    async def main() -> None:
        counter = RpcCounter("s", "Stream", "server_stream")
        unary_counter = RpcCounter("s", "Check", "unary")
        servicer = Streams()
        # What GrpcStats.instrument gives a servicer: its counters.
        servicer._kvstore_rpc_Stream = counter  # type: ignore[attr-defined]
        servicer._kvstore_rpc_Check = unary_counter  # type: ignore[attr-defined]

        wrapped = servicer.Stream
        assert inspect.isasyncgenfunction(Streams.Stream)
        assert [i async for i in wrapped(3, FakeContext())] == [0, 1, 2]
        with pytest.raises(grpc.aio.AbortError):
            [i async for i in wrapped(2, FakeContext())]
        gen = wrapped(5, FakeContext())
        assert await gen.__anext__() == 0
        await gen.aclose()  # the consumer stopped reading: a canceled stream
        assert (counter.started, counter.ok) == (3, 1)
        assert counter.codes == {grpc.StatusCode.NOT_FOUND: 1, grpc.StatusCode.CANCELLED: 1}

        wrapped_unary = servicer.Check
        assert inspect.iscoroutinefunction(Streams.Check)
        assert await wrapped_unary(4, FakeContext()) == 4
        assert (unary_counter.started, unary_counter.ok) == (1, 1)

        def unimplemented_stub(request: Any, context: Any) -> None:
            raise NotImplementedError

        assert counted(unimplemented_stub) is unimplemented_stub

    asyncio.run(asyncio.wait_for(main(), 10))


class _NoNetwork:
    def send(self, messages: list[Message]) -> None:
        pass


def test_timing_observers_observe_only_writes() -> None:
    metrics = NodeMetrics(SimpleNamespace(driver=None, kv=None, watch_hub=None, lessor=None))
    saved: list[bool] = []
    storage = SavingMemoryLog()
    storage.save = lambda hs, ents, snap, sync=True: saved.append(sync)  # type: ignore[method-assign]
    core = RaftCore(RaftConfig(id=1), storage, random.Random(1))
    driver = NodeDriver(
        core, storage, Applier(DictStore(), MemberTable()), _NoNetwork(),
        member_id=1, tick_interval_s=1, election_timeout_s=10, observer=metrics,
    )  # fmt: skip
    driver._save(None, [1], None, True)  # the driver's Raft-log write (writer thread)
    driver._save(None, [], None, False)
    assert saved == [True, False]

    applier = Applier(DictStore(), MemberTable(), observer=metrics)
    applier.commit(applier.stage([Entry(1, 1, EntryType.NORMAL, b"")]))
    applier.commit(applier.stage([]))
    samples = parse(metrics.scrape().decode())
    assert value(samples, "etcd_disk_wal_fsync_duration_seconds_count") == 1
    assert value(samples, "kvstore_server_apply_duration_seconds_count") == 1
    assert value(samples, "etcd_disk_backend_commit_duration_seconds_count") == 1
    # A node without driver/kv (starting or stopped) still scrapes.
    assert ("etcd_server_has_leader", frozenset()) not in samples
