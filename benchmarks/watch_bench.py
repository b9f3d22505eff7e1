"""Watch benchmark: the WatchHub in-process, and watch latency over gRPC.

Run (from the repository root):

    python benchmarks/watch_bench.py hub [--watchers 1000] [--puts 20000] [--batch 100]
    python benchmarks/watch_bench.py grpc --endpoints H:P[,H:P...] [--streams 8] [--puts 2000]
    python benchmarks/watch_bench.py grpc --start-kvstore | --start-etcd   (3 local members)

`hub` measures, single-threaded on RocksDB in a temp dir: live fan-out (apply
batches published to N single-key + N/10 prefix watchers, streams drained
like senders would), catch-up replay from history (one watcher from
revision 1), and a slow watcher (never drained) to show the bounded outbox.
`grpc` opens watch streams on every endpoint, writes keys through KV Put on
the first endpoint, and reports put-ack -> event latency (p50/p99) and the
events/s delivered. Prints figures only; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run uninstalled

from kvstore.mvcc import MvccStore  # noqa: E402
from kvstore.pb import rpc_pb2  # noqa: E402
from kvstore.storage.backend import Backend  # noqa: E402
from kvstore.watch import WatchHub  # noqa: E402


def _line(label: str, value: str) -> None:
    print(f"{label:<52} {value}")


def _drain(streams: list[Any]) -> int:
    n = 0
    for s in streams:
        while (resp := s.pop_nowait()) is not None:
            n += len(resp.events)
    return n


def bench_hub(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        backend = Backend.open(f"{tmp}/db")
        store = MvccStore(backend)
        hub = WatchHub(store, max_stream_events=args.stream_events)
        streams = [hub.new_stream() for _ in range(max(1, args.watchers // 100))]
        for i in range(args.watchers):
            streams[i % len(streams)].create(rpc_pb2.WatchCreateRequest(key=b"k%06d" % i))
        for i in range(max(1, args.watchers // 10)):
            streams[i % len(streams)].create(
                rpc_pb2.WatchCreateRequest(key=b"k%03d" % i, range_end=b"k%03d\xff" % i)
            )
        _drain(streams)
        publish_s = 0.0
        delivered = 0
        t0 = time.perf_counter()
        for start in range(0, args.puts, args.batch):
            batch = store.begin_batch()
            for i in range(start, min(start + args.batch, args.puts)):
                batch.put(rpc_pb2.PutRequest(key=b"k%06d" % (i % args.watchers), value=b"v" * 64))
            events = batch.commit()
            p0 = time.perf_counter()
            hub.publish(events)
            publish_s += time.perf_counter() - p0
            delivered += _drain(streams)
        total = time.perf_counter() - t0
        nbatches = -(-args.puts // args.batch)
        _line(
            f"live fan-out ({args.watchers} key + {args.watchers // 10} prefix watchers)",
            f"{delivered / total:>10,.0f} events/s delivered, "
            f"publish {publish_s / nbatches * 1e6:,.0f} us per batch of {args.batch}",
        )

        # Catch-up: one watcher from revision 1 replays the whole history.
        replay = hub.new_stream(max_events=10**9)
        replay.create(rpc_pb2.WatchCreateRequest(key=b"k", range_end=b"l", start_revision=1))
        _drain([replay])
        got = 0
        t0 = time.perf_counter()
        while hub.sync_unsynced():
            got += _drain([replay])
        got += _drain([replay])
        dt = time.perf_counter() - t0
        _line(
            "catch-up replay from history (1 watcher)",
            f"{got / dt:>10,.0f} events/s ({got} events)",
        )

        # A slow watcher: never drained; the outbox stays bounded.
        slow = hub.new_stream()
        slow.create(rpc_pb2.WatchCreateRequest(key=b"k", range_end=b"l"))
        peak = 0
        for start in range(0, 5000, args.batch):
            batch = store.begin_batch()
            for i in range(start, start + args.batch):
                batch.put(rpc_pb2.PutRequest(key=b"k%06d" % (i % args.watchers), value=b"v"))
            hub.publish(batch.commit())
            _drain(streams + [replay])
            hub.sync_unsynced()
            peak = max(peak, slow.queued_events)
        _line(
            "slow watcher: 5000 events, never drained",
            f"peak queued events {peak} (limit {args.stream_events}); "
            f"unsynced watchers {hub.watcher_counts()[1]}",
        )
        backend.close()


async def _grpc_run(endpoints: list[str], streams_n: int, puts: int) -> None:
    import grpc

    from kvstore.pb import rpc_pb2_grpc

    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    sent: dict[bytes, float] = {}
    latencies: list[float] = []
    expected = puts * streams_n
    received = 0
    done = asyncio.Event()

    async def reader(call: Any) -> None:
        nonlocal received
        while True:  # read(), not `async for`: grpc.aio forbids mixing the two
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            now = time.perf_counter()
            for ev in resp.events:
                t = sent.get(ev.kv.key)
                if t is not None:
                    latencies.append(now - t)
                received += 1
            if received >= expected:
                done.set()

    calls = []
    for i in range(streams_n):
        call = rpc_pb2_grpc.WatchStub(channels[i % len(channels)]).Watch()
        await call.write(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(key=b"wb/", range_end=b"wb0")
            )
        )
        assert (await call.read()).created
        calls.append(call)
    tasks = [asyncio.create_task(reader(c)) for c in calls]
    kv = rpc_pb2_grpc.KVStub(channels[0])
    t0 = time.perf_counter()
    sem = asyncio.Semaphore(32)

    async def put(i: int) -> None:
        async with sem:
            key = b"wb/%08d" % i
            sent[key] = time.perf_counter()
            await kv.Put(rpc_pb2.PutRequest(key=key, value=b"v" * 64))

    await asyncio.gather(*(put(i) for i in range(puts)))
    try:
        await asyncio.wait_for(done.wait(), 60)
    except TimeoutError:
        print(f"timed out: {received}/{expected} events")
    dt = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    for c in calls:
        c.cancel()
    for ch in channels:
        await ch.close()
    if latencies:
        q = statistics.quantiles(latencies, n=100)
        _line(
            f"put -> event ({streams_n} streams over {len(endpoints)} endpoints)",
            f"p50 {q[49] * 1e3:.1f} ms  p99 {q[98] * 1e3:.1f} ms  "
            f"{received / dt:,.0f} events/s delivered",
        )


def bench_grpc(args: argparse.Namespace) -> None:
    if args.start_kvstore or args.start_etcd:
        if args.start_kvstore:
            from kvstore.devcluster import LocalCluster as Cluster
        else:
            from kvstore.testing.etcd_cluster import EtcdCluster as Cluster  # type: ignore
        with Cluster(size=3) as cluster:
            if hasattr(cluster, "wait_leader"):
                cluster.wait_leader(timeout=30)
            asyncio.run(_grpc_run(list(cluster.endpoints), args.streams, args.puts))
        return
    asyncio.run(_grpc_run(args.endpoints.split(","), args.streams, args.puts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    hub = sub.add_parser("hub")
    hub.add_argument("--watchers", type=int, default=1000)
    hub.add_argument("--puts", type=int, default=20000)
    hub.add_argument("--batch", type=int, default=100)
    hub.add_argument("--stream-events", type=int, default=4096)
    hub.add_argument("--dir", default=None)
    g = sub.add_parser("grpc")
    g.add_argument("--endpoints", default="127.0.0.1:2379")
    g.add_argument("--start-kvstore", action="store_true")
    g.add_argument("--start-etcd", action="store_true")
    g.add_argument("--streams", type=int, default=8)
    g.add_argument("--puts", type=int, default=2000)
    args = parser.parse_args()
    if args.mode == "hub":
        bench_hub(args)
    else:
        bench_grpc(args)


if __name__ == "__main__":
    main()
