"""Watch benchmark: the WatchHub in-process, and watch latency over gRPC.

Run (from the repository root):

    python benchmarks/watch_bench.py hub [--watchers 1000] [--puts 20000] [--batch 100]
    python benchmarks/watch_bench.py grpc --endpoints H:P[,H:P...] [--streams 8] [--puts 2000]
    python benchmarks/watch_bench.py grpc --start-kvstore | --start-etcd   (3 local members)
    python benchmarks/watch_bench.py scale --start-kvstore | --start-etcd | --endpoints H:P
        [--watchers 10000] [--streams 100] [--procs 4] [--puts 5000] [--rate 500]

`hub` measures, single-threaded on RocksDB in a temp dir: live fan-out (apply
batches published to N single-key + N/10 prefix watchers, streams drained
like senders would), catch-up replay from history (one watcher from
revision 1), and a slow watcher (never drained) to show the bounded outbox.
`grpc` opens watch streams on every endpoint, writes keys through KV Put on
the first endpoint, and reports put-ack -> event latency (p50/p99) and the
events/s delivered. `scale` (benchmarks/_watch_scale.py) puts 10,000 watches
on one node over 100 streams, writes a bounded load and checks that every
watch got exactly its revisions, in order; reports server RSS, put -> event
latency and events/s. Prints figures; `scale` exits 1 if delivery was wrong.
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
from kvstore.testing.bench_cluster import add_target_args, open_target  # noqa: E402
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
    with open_target(args) as target:
        asyncio.run(_grpc_run(target.endpoints, args.streams, args.puts))


def bench_scale(args: argparse.Namespace) -> int:
    from _watch_scale import run_scale

    with open_target(args) as target:
        return run_scale(target, args, _line)


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
    add_target_args(g, default_size=3)
    g.add_argument("--streams", type=int, default=8)
    g.add_argument("--puts", type=int, default=2000)
    sc = sub.add_parser("scale", help="10k watchers on one node under a write load")
    add_target_args(sc, default_size=1)
    sc.add_argument("--watchers", type=int, default=10_000)
    sc.add_argument("--streams", type=int, default=100)
    sc.add_argument("--procs", type=int, default=4, help="client processes reading streams")
    sc.add_argument("--prefix-frac", type=float, default=0.1, help="share of prefix watches")
    sc.add_argument("--keys", type=int, default=1000, help="key space written and watched")
    sc.add_argument("--puts", type=int, default=5000)
    sc.add_argument("--rate", type=float, default=500, help="puts/s; 0 = closed loop")
    sc.add_argument("--clients", type=int, default=16, help="closed-loop writers")
    sc.add_argument("--value-size", type=int, default=64)
    sc.add_argument("--timeout", type=float, default=120, help="max wait for all events")
    args = parser.parse_args()
    if args.mode == "hub":
        bench_hub(args)
    elif args.mode == "grpc":
        bench_grpc(args)
    else:
        sys.exit(bench_scale(args))


if __name__ == "__main__":
    main()
