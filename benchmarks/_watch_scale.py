"""watch_bench.py `scale` mode: many watchers on one node under a write load.

Owns: the scale run — worker processes that open the watch streams and
record every event (watch id, revision, receive time), the writer that
puts keys at a fixed rate (or closed loop) and records each revision's
send/ack times, and the checks and figures: events delivered vs expected
per watch (exact revision lists: no loss, no duplicate, revision order),
put -> event latency percentiles, events/s, and the server's RSS before
watchers, with watchers and at the end.
Never: asserts timings (prints figures; exits 1 only if delivery was wrong).

Workload (all keys `ws/kNNNN`, N < --keys):
  * single-key watches: watch j watches key j mod keys;
  * prefix watches: watch j watches the prefix `ws/kNNN` (10 keys) of key
    j mod keys, so `--prefix-frac` of the watches see 10x the key's events;
  * watches are spread round-robin over --streams streams, and the streams
    over --procs client processes (one grpc.aio loop each).
Times are time.perf_counter() = CLOCK_MONOTONIC, comparable across processes.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from kvstore.testing.bench_cluster import BenchTarget, cpu_seconds, fmt_mib, rss_kib

KEY_FMT = b"ws/k%04d"


@dataclass(frozen=True)
class WatchSpec:
    watch_id: int
    key: bytes
    range_end: bytes  # b"" for a single key


def plan_watches(total: int, keys: int, prefix_frac: float) -> list[WatchSpec]:
    n_prefix = int(total * prefix_frac)
    out: list[WatchSpec] = []
    for j in range(total):
        key = KEY_FMT % (j % keys)
        if j < n_prefix:
            prefix = key[:-1]
            out.append(WatchSpec(j, prefix, prefix[:-1] + bytes([prefix[-1] + 1])))
        else:
            out.append(WatchSpec(j, key, b""))
    return out


def matches(w: WatchSpec, key: bytes) -> bool:
    return key == w.key if not w.range_end else w.key <= key < w.range_end


# ------------------------------------------------------------------ worker
def worker_main(conn: Any, endpoint: str, streams: list[list[WatchSpec]]) -> None:
    """Client process: open `streams`, report ready, record events until told
    how many to expect, then send back {watch_id: [(rev, t), ...]}."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker(conn, endpoint, streams))


async def _worker(conn: Any, endpoint: str, streams: list[list[WatchSpec]]) -> None:
    import grpc

    from kvstore.pb import rpc_pb2, rpc_pb2_grpc

    loop = asyncio.get_running_loop()
    got: dict[int, list[tuple[int, float]]] = defaultdict(list)
    counter = {"events": 0, "other": 0}
    errors_seen: list[str] = []
    channel = grpc.aio.insecure_channel(endpoint)
    stub = rpc_pb2_grpc.WatchStub(channel)
    calls = []
    for specs in streams:
        call = stub.Watch()
        for w in specs:
            await call.write(
                rpc_pb2.WatchRequest(
                    create_request=rpc_pb2.WatchCreateRequest(
                        key=w.key, range_end=w.range_end, watch_id=w.watch_id
                    )
                )
            )
        for _ in specs:
            resp = await call.read()
            if not resp.created or resp.canceled:
                errors_seen.append(f"create failed: {resp}")
        calls.append(call)

    async def reader(call: Any) -> None:
        perf = time.perf_counter
        while True:
            resp = await call.read()
            if resp is grpc.aio.EOF:
                return
            t = perf()
            if not resp.events:
                counter["other"] += 1
                continue
            lst = got[resp.watch_id]
            for ev in resp.events:
                lst.append((ev.kv.mod_revision, t))
            counter["events"] += len(resp.events)

    tasks = [asyncio.create_task(reader(c)) for c in calls]
    conn.send(("ready", errors_seen))
    expect = await loop.run_in_executor(None, conn.recv)
    deadline = time.monotonic() + expect["timeout"]
    while counter["events"] < expect["events"] and time.monotonic() < deadline:
        if any(t.done() for t in tasks):
            break
        await asyncio.sleep(0.05)
    # A short grace so duplicates arriving after the last expected event count.
    await asyncio.sleep(expect["grace"])
    for t in tasks:
        if t.done() and t.exception() is not None:
            errors_seen.append(f"stream ended: {t.exception()!r}")
        t.cancel()
    for c in calls:
        c.cancel()
    await channel.close()
    conn.send(("done", dict(got), counter, errors_seen))
    conn.close()


# ------------------------------------------------------------------ writer
async def _write(
    endpoint: str, puts: int, keys: int, rate: float, clients: int, value_size: int
) -> dict[int, tuple[bytes, float, float]]:
    """Put `puts` keys; returns {revision: (key, t_send, t_ack)}."""
    import random

    import grpc

    from kvstore.pb import rpc_pb2, rpc_pb2_grpc

    rnd = random.Random(42)
    order = [KEY_FMT % rnd.randrange(keys) for _ in range(puts)]
    value = b"v" * value_size
    out: dict[int, tuple[bytes, float, float]] = {}
    async with grpc.aio.insecure_channel(endpoint) as ch:
        kv = rpc_pb2_grpc.KVStub(ch)

        async def one(key: bytes) -> None:
            t0 = time.perf_counter()
            resp = await kv.Put(rpc_pb2.PutRequest(key=key, value=value))
            out[resp.header.revision] = (key, t0, time.perf_counter())

        if rate <= 0:  # closed loop: `clients` callers, one put at a time each
            it = iter(order)

            async def client() -> None:
                for key in it:
                    await one(key)

            await asyncio.gather(*(client() for _ in range(clients)))
        else:  # open loop at a fixed rate (bounded in flight)
            sem = asyncio.Semaphore(max(clients, 1) * 8)
            start = time.perf_counter()
            tasks = []
            for i, key in enumerate(order):
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                await sem.acquire()
                task = asyncio.create_task(one(key))
                task.add_done_callback(lambda _t: sem.release())
                tasks.append(task)
            await asyncio.gather(*tasks)
    return out


# -------------------------------------------------------------------- run
def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def run_scale(target: BenchTarget, args: Any, line: Any) -> int:
    endpoint = target.endpoints[0]
    pid = target.pid_of(0)
    specs = plan_watches(args.watchers, args.keys, args.prefix_frac)
    per_stream: list[list[WatchSpec]] = [[] for _ in range(args.streams)]
    for w in specs:
        per_stream[w.watch_id % args.streams].append(w)
    procs = max(1, min(args.procs, args.streams))
    ctx = mp.get_context("spawn")
    rss0 = rss_kib(pid)
    workers = []
    t_create = time.perf_counter()
    for p in range(procs):
        parent, child = ctx.Pipe()
        mine = per_stream[p::procs]
        proc = ctx.Process(target=worker_main, args=(child, endpoint, mine), daemon=True)
        proc.start()
        workers.append((proc, parent))
    try:
        create_errors: list[str] = []
        for _proc, conn in workers:
            if not conn.poll(args.timeout):
                raise RuntimeError("a watch worker did not become ready")
            kind, errs = conn.recv()
            create_errors += errs
        t_create = time.perf_counter() - t_create
        rss1 = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        t0 = time.perf_counter()
        written = asyncio.run(
            _write(endpoint, args.puts, args.keys, args.rate, args.clients, args.value_size)
        )
        t_write = time.perf_counter() - t0
        # Expected revisions per watch, from the revisions the writer got back.
        by_key: dict[bytes, list[int]] = defaultdict(list)
        for rev in sorted(written):
            by_key[written[rev][0]].append(rev)
        expected: dict[int, list[int]] = {}
        for w in specs:
            if w.range_end:
                revs = sorted(r for k, rs in by_key.items() if matches(w, k) for r in rs)
            else:
                revs = by_key.get(w.key, [])
            expected[w.watch_id] = revs
        per_worker = [0] * procs
        for w in specs:
            per_worker[(w.watch_id % args.streams) % procs] += len(expected[w.watch_id])
        for (_proc, conn), n in zip(workers, per_worker, strict=True):
            conn.send({"events": n, "timeout": args.timeout, "grace": 1.0})
        got: dict[int, list[tuple[int, float]]] = {}
        other = 0
        stream_errors: list[str] = []
        for _proc, conn in workers:
            if not conn.poll(args.timeout + 30):
                raise RuntimeError("a watch worker did not report")
            _, g, counter, errs = conn.recv()
            got.update(g)
            other += counter["other"]
            stream_errors += errs
        t_deliver = time.perf_counter() - t0
        cpu1 = cpu_seconds(pid)
        rss2 = rss_kib(pid)
    finally:
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()

    # ---- checks: exact revision list per watch
    total_expected = sum(len(v) for v in expected.values())
    total_got = sum(len(v) for v in got.values())
    wrong = 0
    lat_send: list[float] = []
    lat_ack: list[float] = []
    last_event_t = 0.0
    for wid, exp in expected.items():
        rec = got.get(wid, [])
        if [r for r, _ in rec] != exp:
            wrong += 1
        for rev, t in rec:
            info = written.get(rev)
            if info is not None:
                lat_send.append(t - info[1])
                lat_ack.append(t - info[2])
            last_event_t = max(last_event_t, t)
    put_rtt = [a - s for _, s, a in written.values()]
    events_window = (last_event_t - t0) if last_event_t else float("nan")

    line("system", f"{target.name} (1 node, endpoint {endpoint}, pid {pid})")
    line(
        "watchers",
        f"{args.watchers:,} over {args.streams} streams in {procs} client processes "
        f"({int(args.watchers * args.prefix_frac):,} prefix, "
        f"{args.watchers - int(args.watchers * args.prefix_frac):,} single-key; "
        f"{args.keys} keys)",
    )
    line("create all watchers", f"{t_create:.2f} s (incl. client process start)")
    line(
        "server RSS: before / with watchers / end",
        f"{fmt_mib(rss0)} / {fmt_mib(rss1)} / {fmt_mib(rss2)}"
        + (f"  (+{(rss1 - rss0) / args.watchers:.2f} KiB per watcher)" if rss0 and rss1 else ""),
    )
    mode = f"{args.rate:,.0f} puts/s" if args.rate > 0 else f"closed loop, {args.clients} clients"
    line(
        "write load",
        f"{args.puts:,} puts ({mode}) in {t_write:.2f} s = {args.puts / t_write:,.0f} puts/s; "
        f"put RTT p50 {_pct(put_rtt, 50) * 1e3:.1f} ms p99 {_pct(put_rtt, 99) * 1e3:.1f} ms",
    )
    line(
        "events delivered / expected",
        f"{total_got:,} / {total_expected:,}; watches with a wrong revision list: {wrong}"
        f"; non-event responses: {other}",
    )
    line(
        "events/s delivered",
        f"{total_got / events_window:,.0f} (first put -> last event {events_window:.2f} s)",
    )
    if lat_send:
        line(
            "latency put sent -> event  p50 / p99 / max",
            f"{_pct(lat_send, 50) * 1e3:.1f} / {_pct(lat_send, 99) * 1e3:.1f} / "
            f"{max(lat_send) * 1e3:.1f} ms",
        )
        line(
            "latency put ack -> event   p50 / p99 / max",
            f"{_pct(lat_ack, 50) * 1e3:.1f} / {_pct(lat_ack, 99) * 1e3:.1f} / "
            f"{max(lat_ack) * 1e3:.1f} ms (negative: event before the ack)",
        )
        line("mean fan-out per put", f"{total_got / args.puts:.1f} events")
    if cpu0 is not None and cpu1 is not None:
        line("server CPU during writes+delivery", f"{cpu1 - cpu0:.2f} s over {t_deliver:.2f} s")
    for msg in (create_errors + stream_errors)[:5]:
        line("error", msg[:200])
    ok = total_got == total_expected and wrong == 0 and not create_errors and not stream_errors
    line("result", "OK: no loss, no duplicates, revision order" if ok else "DELIVERY WRONG")
    return 0 if ok else 1
