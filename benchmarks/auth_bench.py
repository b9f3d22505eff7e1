#!/usr/bin/env python3
"""Authenticate throughput: kvstore's Auth path vs. real etcd 3.4, side by side.

kvstore does not serve auth through its node yet, so the kvstore side is the
Auth servicer of kvstore/api/auth.py over an AuthStore on RocksDB, in its own
process, with proposals applied locally (no Raft: Authenticate never proposes
in kvstore anyway; etcd 3.4 proposes every Authenticate through Raft). Both
sides hash at bcrypt cost 10.

Workloads, each at --clients concurrent callers for --duration seconds:
  good   the right password every time (a client re-authenticating)
  bad    a wrong password every time (a brute-force loop)
Then the latency of a cheap RPC (Maintenance/Status, one caller in a loop)
alone and while the brute-force loop runs: bcrypt work must not starve the
node's other traffic.

    python benchmarks/auth_bench.py [--clients 16] [--duration 5]
    python benchmarks/auth_bench.py serve --port P --data DIR   (internal)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: E402

from kvstore.pb import rpc_pb2, rpc_pb2_grpc  # noqa: E402

USER, PASSWORD = "bench", "benchpw"


# ------------------------------------------------------------------ kvstore side


async def serve(port: int, data: str) -> None:
    from kvstore.api.auth import AuthResolver, AuthServicer
    from kvstore.auth import AuthStore, PasswordHasher, PermissionChecker, SimpleTokenProvider
    from kvstore.auth.hasher import hash_password
    from kvstore.lease import Lessor
    from kvstore.mvcc import MvccStore
    from kvstore.storage.backend import Backend

    backend = Backend.open(data)
    mvcc = MvccStore(backend, Lessor())
    store = AuthStore()
    store.load(backend)
    checker = PermissionChecker(store)
    tokens = SimpleTokenProvider(lambda: store.revision)

    class LocalNode:
        def header(self, revision: int | None = None) -> Any:
            return rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=1, raft_term=1)

        async def read_barrier(self) -> None:
            return None

        async def propose_auth(self, kind: str, request: Any, ai: Any) -> Any:
            batch = mvcc.begin_batch()
            try:
                checker.check_internal(ai, kind, request)
                return store.handlers()[kind](batch, request)
            finally:
                batch.commit()

    node = LocalNode()
    for kind, req in (
        (
            "auth_user_add",
            rpc_pb2.AuthUserAddRequest(name="root", hashedPassword=hash_password("r")),
        ),
        ("auth_user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
        (
            "auth_user_add",
            rpc_pb2.AuthUserAddRequest(name=USER, hashedPassword=hash_password(PASSWORD)),
        ),
        ("auth_enable", rpc_pb2.AuthEnableRequest()),
    ):
        if not store.enabled:
            with contextlib.suppress(Exception):  # already there (re-run on the same dir)
                await node.propose_auth(kind, req, None)
    resolver = AuthResolver(store, tokens, client_cert_auth=False)
    server = grpc.aio.server()

    class Status(rpc_pb2_grpc.MaintenanceServicer):
        async def Status(self, request: Any, context: Any) -> Any:  # noqa: N802
            return rpc_pb2.StatusResponse(header=node.header(), version="kvstore")

    rpc_pb2_grpc.add_MaintenanceServicer_to_server(Status(), server)
    rpc_pb2_grpc.add_AuthServicer_to_server(
        AuthServicer(node, store, checker, tokens, PasswordHasher(), resolver), server
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print("READY", flush=True)
    await server.wait_for_termination()


# ------------------------------------------------------------------ load


async def load(endpoint: str, clients: int, duration: float, password: str) -> tuple[int, int]:
    """(successes, failures) in `duration` seconds from `clients` callers."""
    channels = [grpc.aio.insecure_channel(endpoint) for _ in range(min(clients, 4))]
    stubs = [rpc_pb2_grpc.AuthStub(ch) for ch in channels]
    ok = bad = 0
    stop = time.monotonic() + duration
    req = rpc_pb2.AuthenticateRequest(name=USER, password=password)

    async def one(i: int) -> None:
        nonlocal ok, bad
        stub = stubs[i % len(stubs)]
        while time.monotonic() < stop:
            try:
                await stub.Authenticate(req, timeout=30)
                ok += 1
            except grpc.aio.AioRpcError:
                bad += 1

    await asyncio.gather(*(one(i) for i in range(clients)))
    for ch in channels:
        await ch.close()
    return ok, bad


async def status_latency(endpoint: str, duration: float) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, calls) of Status from one caller for `duration` s."""
    ch = grpc.aio.insecure_channel(endpoint)
    stub = rpc_pb2_grpc.MaintenanceStub(ch)
    samples: list[float] = []
    stop = time.monotonic() + duration
    while time.monotonic() < stop:
        t0 = time.perf_counter()
        await stub.Status(rpc_pb2.StatusRequest(), timeout=30)
        samples.append((time.perf_counter() - t0) * 1000)
    await ch.close()
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)], len(samples)


async def status_under_brute_force(
    endpoint: str, clients: int, duration: float
) -> tuple[float, float, int]:
    brute = asyncio.create_task(load(endpoint, clients, duration, "wrong"))
    await asyncio.sleep(0.5)  # let the brute-force loop fill the queue first
    result = await status_latency(endpoint, duration - 1.0)
    await brute
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--data", required=True)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    if args.cmd == "serve":
        asyncio.run(serve(args.port, args.data))
        return

    from kvstore.testing.secure_etcd import ROOT_PASSWORD, SecureEtcd
    from kvstore.testing.waiting import free_port

    tmp = tempfile.mkdtemp(prefix="auth-bench-")
    etcd = SecureEtcd(base_dir=Path(tmp, "etcd")).start()
    etcd.enable_auth()
    etcd.etcdctl("user", "add", f"{USER}:{PASSWORD}", user=f"root:{ROOT_PASSWORD}")
    port = free_port()
    kv = subprocess.Popen(
        [sys.executable, __file__, "serve", "--port", str(port), "--data", str(Path(tmp, "kv"))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert kv.stdout is not None and kv.stdout.readline().strip() == "READY"
        print(f"Authenticate/s, {args.clients} clients, {args.duration:.0f} s each, "
              f"{os.cpu_count()} CPUs (servers and load generator share them)")  # fmt: skip
        print(f"{'workload':10} {'etcd 3.4.23':>14} {'kvstore':>14}")
        for name, password in (("good", PASSWORD), ("bad", "wrong")):
            rates = []
            for endpoint in (etcd.endpoint, f"127.0.0.1:{port}"):
                ok, bad = asyncio.run(load(endpoint, args.clients, args.duration, password))
                rates.append((ok + bad) / args.duration)
            print(f"{name:10} {rates[0]:14.1f} {rates[1]:14.1f}")
        print("Status latency p50 / p99 ms (calls), alone and during the brute-force loop")
        for label, fn in (
            ("alone", lambda ep: status_latency(ep, args.duration - 1.0)),
            ("brute", lambda ep: status_under_brute_force(ep, args.clients, args.duration)),
        ):
            cells = []
            for endpoint in (etcd.endpoint, f"127.0.0.1:{port}"):
                p50, p99, n = asyncio.run(fn(endpoint))
                cells.append(f"{p50:6.2f} / {p99:6.2f} ({n})")
            print(f"{label:10} {cells[0]:>24} {cells[1]:>24}")
    finally:
        kv.kill()
        kv.wait()
        etcd.stop()


if __name__ == "__main__":
    main()
