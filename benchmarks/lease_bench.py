"""Lease benchmark: the lessor in-process, and lease RPCs over gRPC.

Run (from the repository root):

    python benchmarks/lease_bench.py lessor [--leases 10000] [--keys-per-lease 4]
    python benchmarks/lease_bench.py grpc --endpoints H:P[,H:P...] [--grants N] [--keepalives N]
    python benchmarks/lease_bench.py grpc --start-kvstore | --start-etcd    (3 local members)
    python benchmarks/lease_bench.py scale --start-kvstore | --start-etcd | --endpoints H:P
        [--leases 100000] [--procs 2] [--inflight 256] [--expiry 2000 --expiry-ttl 5]

`lessor` measures, single-threaded on RocksDB in a temp dir: applying grants,
attaching keys, the leader's expiry scan and checkpoint round over N leases,
and revoking (one revision per lease, its keys deleted). `grpc` measures
LeaseGrant calls/s (32 in flight), keepalive round trips/s on one stream to
the leader and to a follower (forwarded), and LeaseRevoke calls/s.
`scale` (benchmarks/_lease_scale.py) grants 100,000 leases on one node,
renews each over pipelined keepalive streams, reports both rates and the
server's RSS, then measures expiry accuracy: how late (at worst) the keys of
abandoned short-TTL leases disappear, and that none disappears early.
Prints figures; `scale` exits 1 on an early expiry or a lost lease.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run uninstalled

from kvstore.lease import FakeClock, LeaderLeases, Lessor  # noqa: E402
from kvstore.mvcc import MvccStore  # noqa: E402
from kvstore.pb import rpc_pb2  # noqa: E402
from kvstore.storage.backend import Backend  # noqa: E402
from kvstore.testing.bench_cluster import add_target_args, open_target  # noqa: E402


def _line(label: str, n: int, seconds: float) -> None:
    print(f"{label:<52} {n / seconds:>10,.0f} ops/s  ({seconds * 1e6 / n:8.1f} us/op)")


def bench_lessor(args: argparse.Namespace) -> None:
    n, per = args.leases, args.keys_per_lease
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        backend = Backend.open(f"{tmp}/db")
        lessor = Lessor()
        store = MvccStore(backend, lessor)
        t0 = time.perf_counter()
        for start in range(1, n + 1, 100):
            batch = store.begin_batch()
            for i in range(start, min(start + 100, n + 1)):
                lessor.apply_grant(batch, rpc_pb2.LeaseGrantRequest(ID=i, TTL=60))
            batch.commit()
        _line("apply grant (batches of 100)", n, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for start in range(1, n + 1, 100):
            batch = store.begin_batch()
            for i in range(start, min(start + 100, n + 1)):
                for k in range(per):
                    batch.put(rpc_pb2.PutRequest(key=b"lease/%08d/%d" % (i, k), lease=i))
            batch.commit()
        _line(f"put with lease ({per} keys per lease)", n * per, time.perf_counter() - t0)

        clock = FakeClock()
        leader = LeaderLeases(lessor, clock)
        t0 = time.perf_counter()
        leader.promote()
        _line("promote (deadline for every lease)", n, time.perf_counter() - t0)
        clock.advance(10)
        t0 = time.perf_counter()
        due = leader.checkpoints_due()
        _line(
            f"checkpoint round ({len(due)} leases due)", max(1, len(due)), time.perf_counter() - t0
        )
        t0 = time.perf_counter()
        expired = leader.expired()
        _line(f"expiry scan, nothing expired ({len(expired)})", n, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(1, n + 1):
            leader.renew(i)
        _line("renew (leader-local part of a keepalive)", n, time.perf_counter() - t0)

        t0 = time.perf_counter()
        for start in range(1, n + 1, 100):
            batch = store.begin_batch()
            for i in range(start, min(start + 100, n + 1)):
                lessor.apply_revoke(batch, rpc_pb2.LeaseRevokeRequest(ID=i))
            batch.commit()
        _line(f"apply revoke ({per} keys deleted in one revision)", n, time.perf_counter() - t0)
        backend.close()


async def _timed(label: str, n: int, make: Callable[[int], Awaitable[Any]], inflight: int) -> None:
    sem = asyncio.Semaphore(inflight)

    async def one(i: int) -> None:
        async with sem:
            await make(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    _line(label, n, time.perf_counter() - t0)


async def _keepalives(label: str, stub: Any, lease_id: int, n: int) -> None:
    call = stub.LeaseKeepAlive()
    t0 = time.perf_counter()
    for _ in range(n):
        await call.write(rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
        resp = await call.read()
        assert resp.TTL > 0, "lease not found"
    _line(label, n, time.perf_counter() - t0)
    call.cancel()


async def _grpc_run(endpoints: list[str], grants: int, keepalives: int) -> None:
    import grpc

    from kvstore.pb import rpc_pb2_grpc

    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [rpc_pb2_grpc.LeaseStub(ch) for ch in channels]
    maint = [rpc_pb2_grpc.MaintenanceStub(ch) for ch in channels]
    statuses = [await m.Status(rpc_pb2.StatusRequest()) for m in maint]
    leader_i = next(i for i, s in enumerate(statuses) if s.leader == s.header.member_id)
    ids: list[int] = []

    async def grant(i: int) -> None:
        resp = await stubs[i % len(stubs)].LeaseGrant(rpc_pb2.LeaseGrantRequest(TTL=60))
        ids.append(resp.ID)

    await _timed("LeaseGrant (32 in flight, all endpoints)", grants, grant, 32)
    await _keepalives(
        "keepalive round trips, one stream, leader", stubs[leader_i], ids[0], keepalives
    )
    if len(stubs) > 1:
        follower = next(i for i in range(len(stubs)) if i != leader_i)
        await _keepalives(
            "keepalive round trips, one stream, follower",
            stubs[follower],
            ids[0],
            max(1, keepalives // 5),
        )

    async def revoke(i: int) -> None:
        await stubs[i % len(stubs)].LeaseRevoke(rpc_pb2.LeaseRevokeRequest(ID=ids[i]))

    await _timed("LeaseRevoke (32 in flight, all endpoints)", len(ids), revoke, 32)
    for ch in channels:
        await ch.close()


def bench_grpc(args: argparse.Namespace) -> None:
    with open_target(args) as target:
        asyncio.run(_grpc_run(target.endpoints, args.grants, args.keepalives))


def bench_scale(args: argparse.Namespace) -> int:
    from _lease_scale import run_scale

    with open_target(args) as target:
        return run_scale(target, args, lambda label, value: print(f"{label:<52} {value}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    les = sub.add_parser("lessor")
    les.add_argument("--leases", type=int, default=10000)
    les.add_argument("--keys-per-lease", type=int, default=4)
    les.add_argument("--dir", default=None)
    g = sub.add_parser("grpc")
    add_target_args(g, default_size=3)
    g.add_argument("--grants", type=int, default=2000)
    g.add_argument("--keepalives", type=int, default=5000)
    sc = sub.add_parser("scale", help="100k leases on one node, expiry accuracy")
    add_target_args(sc, default_size=1)
    sc.add_argument("--leases", type=int, default=100_000)
    sc.add_argument("--ttl", type=int, default=3600, help="TTL of the bulk leases (s)")
    sc.add_argument("--procs", type=int, default=2, help="client processes")
    sc.add_argument("--inflight", type=int, default=256, help="grants in flight (all procs)")
    sc.add_argument("--streams", type=int, default=8, help="keepalive streams (all procs)")
    sc.add_argument("--window", type=int, default=256, help="keepalives in flight per stream")
    sc.add_argument("--expiry", type=int, default=2000, help="short-TTL leases; 0 = skip")
    sc.add_argument("--expiry-ttl", type=int, default=5)
    sc.add_argument("--timeout", type=float, default=300, help="max seconds per phase")
    args = parser.parse_args()
    if args.mode == "lessor":
        bench_lessor(args)
    elif args.mode == "grpc":
        bench_grpc(args)
    else:
        sys.exit(bench_scale(args))


if __name__ == "__main__":
    main()
