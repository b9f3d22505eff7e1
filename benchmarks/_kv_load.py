"""Load-generator worker process for kv_bench.py (one per CPU-worth of clients).

Owns: opening gRPC channels to an etcd-v3 endpoint list, running N concurrent
client coroutines that issue KV calls through the generated `kvstore.pb` stubs,
and recording one latency sample per completed call. It reports raw samples to
the parent; statistics and printing live in `_kv_report.py`.

Protocol with the parent (a multiprocessing Pipe): the worker connects and warms
up every client (one unmeasured call each, which also checks that a get finds
its key), sends ("ready", None), waits for "go", runs until its deadline or its
share of the op budget is used, then sends ("done", WorkerResult). Any failure
is sent as ("error", text) instead.

Must never: retry a failed call (a failure is counted and the client moves on,
so the numbers show errors instead of hiding them), loop without a bound
(every client stops at the deadline AND at the op budget), or talk to anything
but the endpoints it was given.

Connection model: each worker opens `conns_per_endpoint` channels (HTTP/2
connections) per endpoint and spreads its clients over them, so many clients
share a few connections — the same model as etcd's `benchmark --conns/--clients`.
Client i (global index) talks to endpoint i % len(endpoints).
"""

from __future__ import annotations

import array
import asyncio
import random
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

WORKLOADS = ("put", "get-serializable", "get-linearizable")
PRELOAD = "preload"

# Distinct channels must be distinct TCP connections; grpc-core would otherwise
# share one subchannel between channels to the same target.
CHANNEL_OPTIONS = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


def key_for(i: int) -> bytes:
    return b"kvbench/%08d" % i


def value_for(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class WorkerSpec:
    workload: str  # one of WORKLOADS or PRELOAD
    endpoints: list[str]
    clients: int  # clients run by this worker
    client_offset: int  # global index of this worker's first client
    duration: float  # seconds; the measured phase never runs longer
    max_ops: int  # op budget of this worker (>= 1)
    value_size: int
    key_space: int
    conns_per_endpoint: int
    seed: int
    call_timeout: float


@dataclass
class WorkerResult:
    ops: int
    errors: dict[str, int]
    elapsed: float  # seconds of the measured phase (perf_counter)
    cpu: float  # process CPU seconds used in the measured phase
    latencies: bytes  # array('d') of seconds, one per successful op
    first_error: str = ""


class _Budget:
    """Shared op budget of one worker (one event loop, so no lock needed)."""

    def __init__(self, n: int) -> None:
        self.left = n

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _make_request(spec: WorkerSpec, value: bytes, key_index: int) -> tuple[str, Any]:
    from kvstore.pb import rpc_pb2

    key = key_for(key_index)
    if spec.workload in ("put", PRELOAD):
        return "Put", rpc_pb2.PutRequest(key=key, value=value)
    serializable = spec.workload == "get-serializable"
    return "Range", rpc_pb2.RangeRequest(key=key, serializable=serializable)


async def _run(spec: WorkerSpec, conn: Connection) -> WorkerResult:
    import grpc

    from kvstore.pb import rpc_pb2_grpc

    rng = random.Random(spec.seed * 1_000_003 + spec.client_offset)
    value = value_for(spec.value_size, spec.seed)
    channels: list[grpc.aio.Channel] = []
    stubs_by_ep: list[list[Any]] = []
    for ep in spec.endpoints:
        eps: list[Any] = []
        for _ in range(spec.conns_per_endpoint):
            ch = grpc.aio.insecure_channel(ep, options=CHANNEL_OPTIONS)
            channels.append(ch)
            eps.append(rpc_pb2_grpc.KVStub(ch))
        stubs_by_ep.append(eps)

    # A fixed pool of prebuilt requests keeps message construction out of the
    # timed loop; keys are random over the key space (seeded), like etcd's tool.
    pool_size = min(spec.key_space, 4096)
    if spec.workload == PRELOAD:
        keys = list(range(spec.key_space))
    else:
        keys = [rng.randrange(spec.key_space) for _ in range(pool_size)]
    pool = [_make_request(spec, value, k) for k in keys]

    clients = []
    for c in range(spec.clients):
        g = spec.client_offset + c
        ep = g % len(spec.endpoints)
        stub = stubs_by_ep[ep][(g // len(spec.endpoints)) % spec.conns_per_endpoint]
        clients.append(stub)

    try:
        # Warm-up: one unmeasured call per client opens every connection and
        # proves the workload works (a get must find its key) before timing.
        async def warm(stub: Any, c: int) -> None:
            method, req = pool[(c * 7919) % len(pool)]
            resp = await getattr(stub, method)(req, timeout=max(spec.call_timeout, 30.0))
            if method == "Range" and len(resp.kvs) != 1:
                raise RuntimeError(f"key {req.key!r} not found: was the key space preloaded?")

        if spec.workload != PRELOAD:
            await asyncio.gather(*(warm(s, c) for c, s in enumerate(clients)))
        conn.send(("ready", None))
        # The parent answers within its own timeout; poll so the loop stays responsive.
        deadline_wait = time.monotonic() + 120.0
        while not conn.poll(0.005):
            if time.monotonic() > deadline_wait:
                raise TimeoutError("no 'go' from the parent within 120 s")
            await asyncio.sleep(0.005)
        msg = conn.recv()
        if msg != "go":
            raise RuntimeError(f"unexpected control message {msg!r}")

        budget = _Budget(spec.max_ops)
        lat = array.array("d")
        errors: dict[str, int] = {}
        first_error = [""]
        seq = [0]
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = t0 + spec.duration
        timeout = spec.call_timeout
        perf = time.perf_counter
        n = len(pool)

        async def client_loop(stub: Any, c: int) -> None:
            i = (c * 7919) % n
            while perf() < deadline and budget.take():
                if spec.workload == PRELOAD:
                    i = seq[0]
                    seq[0] += 1
                method, req = pool[i % n]
                i += 1
                fn = getattr(stub, method)
                start = perf()
                try:
                    await fn(req, timeout=timeout)
                except grpc.aio.AioRpcError as e:
                    name = e.code().name
                    errors[name] = errors.get(name, 0) + 1
                    if not first_error[0]:
                        first_error[0] = f"{name}: {e.details()}"
                    continue
                lat.append(perf() - start)

        await asyncio.gather(*(client_loop(s, c) for c, s in enumerate(clients)))
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        return WorkerResult(
            ops=len(lat),
            errors=errors,
            elapsed=elapsed,
            cpu=cpu,
            latencies=lat.tobytes(),
            first_error=first_error[0],
        )
    finally:
        for ch in channels:
            await ch.close()


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """Entry point of a spawned worker process."""
    try:
        result = asyncio.run(_run(spec, conn))
        conn.send(("done", result))
    except BaseException:  # noqa: BLE001 - reported to the parent, which fails the cell
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
