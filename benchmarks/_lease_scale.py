"""lease_bench.py `scale` mode: 100,000 leases on one node.

Owns: the scale run — client worker processes that grant leases (many
unary calls in flight) and renew them over pipelined LeaseKeepAlive
streams, and the expiry-accuracy probe: short-TTL leases with one key
each (kept alive while the others are set up), renewed once more and
then abandoned, whose keys' DELETE events are watched; lateness =
event time - (keepalive ack + TTL), and a key is "early" if its DELETE
arrived before keepalive *send* + TTL (the server cannot have started the
TTL earlier than that).
Never: asserts timings (prints figures; exits 1 only if a lease expired
early, a keepalive found no lease, or expiry events were missing).
Times are time.perf_counter() = CLOCK_MONOTONIC, comparable across processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import time
from typing import Any

from kvstore.testing.bench_cluster import BenchTarget, cpu_seconds, fmt_mib, rss_kib

EXPIRY_PREFIX = b"lexp/"


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


# ------------------------------------------------------------------ worker
def worker_main(conn: Any, endpoint: str) -> None:
    """Client process: runs ("grant", n, ttl, inflight) and ("keepalive",
    ids, streams, window) commands until ("quit",)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_worker(conn, endpoint))


async def _worker(conn: Any, endpoint: str) -> None:
    import grpc

    from kvstore.pb import rpc_pb2_grpc

    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(endpoint) as ch:
        stub = rpc_pb2_grpc.LeaseStub(ch)
        conn.send(("ready",))
        while True:
            cmd = await loop.run_in_executor(None, conn.recv)
            if cmd[0] == "quit":
                break
            t0 = time.perf_counter()
            if cmd[0] == "grant":
                result: Any = await _grant(stub, *cmd[1:])
            else:
                result = await _keepalive(stub, *cmd[1:])
            conn.send((cmd[0], result, time.perf_counter() - t0))


async def _grant(stub: Any, n: int, ttl: int, inflight: int) -> tuple[list[int], int]:
    from kvstore.pb import rpc_pb2

    ids: list[int] = []
    failed = 0
    remaining = iter(range(n))

    async def caller() -> None:
        nonlocal failed
        for _ in remaining:
            try:
                resp = await stub.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl), timeout=30)
                ids.append(resp.ID)
            except Exception:  # noqa: BLE001 - counted, not retried
                failed += 1

    await asyncio.gather(*(caller() for _ in range(inflight)))
    return ids, failed


async def _keepalive(stub: Any, ids: list[int], streams: int, window: int) -> tuple[int, int]:
    """Renew every id once over `streams` pipelined streams; (renewed, not found)."""
    from kvstore.pb import rpc_pb2

    ok = 0
    missing = 0

    async def one_stream(mine: list[int]) -> None:
        nonlocal ok, missing
        call = stub.LeaseKeepAlive()
        sem = asyncio.Semaphore(window)

        async def writer() -> None:
            for lid in mine:
                await sem.acquire()
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))

        wtask = asyncio.create_task(writer())
        for _ in mine:
            resp = await call.read()
            if resp.TTL > 0:
                ok += 1
            else:
                missing += 1
            sem.release()
        await wtask
        call.cancel()

    await asyncio.gather(*(one_stream(ids[i::streams]) for i in range(streams)))
    return ok, missing


# ----------------------------------------------------------------- expiry
async def _expiry_probe(endpoint: str, n: int, ttl: int, timeout: float) -> dict[str, Any]:
    """Grant `n` leases of `ttl` s with one key each, renew each once, stop,
    and time each key's DELETE event against its TTL end."""
    import grpc

    from kvstore.pb import kv_pb2, rpc_pb2, rpc_pb2_grpc

    async with grpc.aio.insecure_channel(endpoint) as ch:
        lease = rpc_pb2_grpc.LeaseStub(ch)
        kv = rpc_pb2_grpc.KVStub(ch)
        watch = rpc_pb2_grpc.WatchStub(ch).Watch()
        prefix_end = EXPIRY_PREFIX[:-1] + bytes([EXPIRY_PREFIX[-1] + 1])
        await watch.write(
            rpc_pb2.WatchRequest(
                create_request=rpc_pb2.WatchCreateRequest(key=EXPIRY_PREFIX, range_end=prefix_end)
            )
        )
        assert (await watch.read()).created
        deleted: dict[bytes, float] = {}

        async def watch_reader() -> None:
            while True:
                resp = await watch.read()
                if resp is grpc.aio.EOF:
                    return
                t = time.perf_counter()
                for ev in resp.events:
                    if ev.type == kv_pb2.Event.DELETE:
                        deleted.setdefault(ev.kv.key, t)

        reader = asyncio.create_task(watch_reader())
        ids: list[int] = []
        sem = asyncio.Semaphore(64)

        async def grant_and_put(i: int) -> None:
            async with sem:
                resp = await lease.LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=ttl))
                await kv.Put(
                    rpc_pb2.PutRequest(key=EXPIRY_PREFIX + b"%016x" % resp.ID, lease=resp.ID)
                )
                ids.append(resp.ID)

        # Keep the leases granted so far alive while the rest are set up
        # (like a client's keepalive loop), so none expires before the probe.
        keeper = lease.LeaseKeepAlive()
        stop_keeping = asyncio.Event()

        async def keep() -> None:
            while not stop_keeping.is_set():
                for lid in list(ids):
                    await keeper.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_keeping.wait(), 1.0)

        async def drain() -> None:
            while await keeper.read() is not grpc.aio.EOF:
                pass

        keeping = [asyncio.create_task(keep()), asyncio.create_task(drain())]
        await asyncio.gather(*(grant_and_put(i) for i in range(n)))
        # One renewal each, pipelined on one stream; the TTL restarts there.
        call = lease.LeaseKeepAlive()
        sent: dict[int, float] = {}
        acked: dict[int, tuple[float, int]] = {}

        async def writer() -> None:
            for lid in ids:
                sent[lid] = time.perf_counter()
                await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lid))

        wtask = asyncio.create_task(writer())
        for _ in ids:
            resp = await call.read()
            acked[resp.ID] = (time.perf_counter(), resp.TTL)
        await wtask
        call.cancel()  # keepalives stop here
        stop_keeping.set()
        keeper.cancel()
        for task in keeping:
            task.cancel()
        await asyncio.gather(*keeping, return_exceptions=True)
        t_stop = time.perf_counter()
        deadline = t_stop + ttl + timeout
        while len(deleted) < n and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        reader.cancel()
        watch.cancel()

    late: list[float] = []
    early = 0
    early_vs_ack = 0
    missing = 0
    for lid in ids:
        t_ack, granted = acked.get(lid, (0.0, 0))
        t_event = deleted.get(EXPIRY_PREFIX + b"%016x" % lid)
        if t_event is None or granted <= 0:
            missing += 1
            continue
        late.append(t_event - (t_ack + granted))
        if t_event < sent[lid] + granted:
            early += 1
        if t_event < t_ack + granted:
            early_vs_ack += 1
    rtt = [acked[i][0] - sent[i] for i in ids if i in acked]
    return {
        "late": late,
        "early": early,
        "early_vs_ack": early_vs_ack,
        "missing": missing,
        "ka_rtt_max": max(rtt) if rtt else float("nan"),
        "spread": (max(acked.values())[0] - min(acked.values())[0]) if acked else 0.0,
    }


# -------------------------------------------------------------------- run
def run_scale(target: BenchTarget, args: Any, line: Any) -> int:
    endpoint = target.endpoints[0]
    pid = target.pid_of(0)
    ctx = mp.get_context("spawn")
    procs = max(1, args.procs)
    workers = []
    for _ in range(procs):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(child, endpoint), daemon=True)
        proc.start()
        workers.append((proc, parent))

    def command(cmds: list[tuple[Any, ...]]) -> tuple[list[Any], float]:
        t0 = time.perf_counter()
        for (_, conn), cmd in zip(workers, cmds, strict=True):
            conn.send(cmd)
        out = []
        for _, conn in workers:
            if not conn.poll(args.timeout):
                raise RuntimeError("a lease worker did not answer")
            out.append(conn.recv()[1])
        return out, time.perf_counter() - t0

    ok = True
    try:
        for _, conn in workers:
            if not conn.poll(60):
                raise RuntimeError("a lease worker did not start")
            conn.recv()
        rss0 = rss_kib(pid)
        cpu0 = cpu_seconds(pid)
        share = [args.leases // procs + (1 if i < args.leases % procs else 0) for i in range(procs)]
        per_inflight = max(1, args.inflight // procs)
        results, t_grant = command([("grant", n, args.ttl, per_inflight) for n in share])
        cpu1 = cpu_seconds(pid)
        ids_per = [r[0] for r in results]
        failed = sum(r[1] for r in results)
        granted = sum(len(x) for x in ids_per)
        rss1 = rss_kib(pid)
        per_streams = max(1, args.streams // procs)
        results, t_ka = command([("keepalive", ids, per_streams, args.window) for ids in ids_per])
        cpu2 = cpu_seconds(pid)
        renewed = sum(r[0] for r in results)
        not_found = sum(r[1] for r in results)
        rss2 = rss_kib(pid)
        for _, conn in workers:
            conn.send(("quit",))
    finally:
        for proc, _ in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()

    line("system", f"{target.name} (1 node, endpoint {endpoint}, pid {pid})")
    line(
        f"LeaseGrant x {args.leases:,} (TTL {args.ttl} s)",
        f"{granted / t_grant:>8,.0f} grants/s  ({t_grant:.1f} s, {args.inflight} in flight "
        f"over {procs} processes, {failed} failed)",
    )
    line(
        "keepalive (each lease once)",
        f"{renewed / t_ka:>8,.0f} renewals/s  ({t_ka:.1f} s, {per_streams * procs} streams, "
        f"window {args.window}/stream, {not_found} not found)",
    )
    line(
        f"server RSS: empty / {granted:,} leases / after keepalives",
        f"{fmt_mib(rss0)} / {fmt_mib(rss1)} / {fmt_mib(rss2)}"
        + (f"  (+{(rss1 - rss0) * 1024 / max(granted, 1):.0f} B per lease)" if rss0 and rss1
           else ""),
    )  # fmt: skip
    if cpu0 is not None and cpu1 is not None and cpu2 is not None:
        line(
            "server CPU: grants / keepalives",
            f"{(cpu1 - cpu0) / max(granted, 1) * 1e6:.0f} us per grant, "
            f"{(cpu2 - cpu1) / max(renewed, 1) * 1e6:.0f} us per renewal",
        )
    ok = failed == 0 and not_found == 0

    if args.expiry > 0:
        r = asyncio.run(_expiry_probe(endpoint, args.expiry, args.expiry_ttl, args.timeout))
        late = r["late"]
        line(
            f"expiry: {args.expiry:,} leases TTL {args.expiry_ttl} s, 1 key each",
            f"renewed once within {r['spread']:.2f} s (keepalive RTT max "
            f"{r['ka_rtt_max'] * 1e3:.0f} ms), then abandoned",
        )
        if late:
            line(
                "  key deleted after TTL end: p50 / p99 / max",
                f"{_pct(late, 50) * 1e3:.0f} / {_pct(late, 99) * 1e3:.0f} / "
                f"{max(late) * 1e3:.0f} ms  (min {min(late) * 1e3:.0f} ms)",
            )
        line(
            "  early (before keepalive send + TTL) / missing",
            f"{r['early']} / {r['missing']}  (before ack + TTL, within RTT: {r['early_vs_ack']})",
        )
        line("  server RSS at end", fmt_mib(rss_kib(pid)))
        ok = ok and r["early"] == 0 and r["missing"] == 0
    line("result", "OK" if ok else "WRONG (see above)")
    return 0 if ok else 1
