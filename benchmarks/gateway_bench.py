#!/usr/bin/env python3
"""HTTP/JSON gateway benchmark: kvstore's gateway vs etcd's, with the gRPC ratio.

Owns: starting one local kvstore cluster (gateway on each member's
--listen-metrics-urls, which serves it) and one local etcd cluster (gateway
on its client URL), then, interleaved cell by cell (etcd then kvstore, back
to back, so drift on a shared machine hits both alike):
  - HTTP: POST /v3/kv/put and /v3/kv/range at each client count, one
    keep-alive HTTP connection per client (aiohttp, in --procs worker
    processes), key spread over the members;
  - gRPC: the same put and (linearizable) get through kv_bench's generator
    (`_kv_runner.run_cell`), for the issue's target: gateway ratio
    kvstore/etcd >= gRPC ratio kvstore/etcd measured in the same run.
Prints one table and the targets.
Must never: leave a process it started running (clusters are context
managers, workers are joined or killed), run unbounded (each cell stops at
--duration and --max-ops; the whole run at --deadline), or touch anything
but the loopback clusters it started.

Example:
    python benchmarks/gateway_bench.py                     # 1 member each, 16 and 64 clients
    python benchmarks/gateway_bench.py --size 3 --duration 5 --json gw.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import functools
import json
import multiprocessing as mp
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))

from _kv_load import PRELOAD  # noqa: E402
from _kv_runner import run_cell  # noqa: E402

from kvstore.testing.waiting import wait_until  # noqa: E402

HTTP_OPS = ("put", "range")


@dataclass
class HttpSpec:
    op: str
    bases: list[str]
    clients: int
    client_offset: int
    duration: float
    max_ops: int
    value_size: int
    key_space: int
    seed: int


def _key(i: int) -> str:
    return base64.b64encode(f"gwbench/{i:08d}".encode()).decode()


async def _http_worker(spec: HttpSpec) -> dict[str, Any]:
    import aiohttp

    value = base64.b64encode(b"v" * spec.value_size).decode()
    rng = random.Random(spec.seed + spec.client_offset)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    budget = [spec.max_ops]
    deadline = time.perf_counter() + spec.duration

    async def client(n: int) -> None:
        base = spec.bases[(spec.client_offset + n) % len(spec.bases)]
        url = f"{base}/v3/kv/{spec.op}"
        conn = aiohttp.TCPConnector(limit=1)  # one keep-alive connection per client
        async with aiohttp.ClientSession(connector=conn) as session:
            while time.perf_counter() < deadline and budget[0] > 0:
                budget[0] -= 1
                key = _key(rng.randrange(spec.key_space))
                body = {"key": key, "value": value} if spec.op == "put" else {"key": key}
                t0 = time.perf_counter()
                try:
                    async with session.post(url, json=body) as resp:
                        await resp.read()
                        if resp.status != 200:
                            errors[str(resp.status)] = errors.get(str(resp.status), 0) + 1
                            continue
                except aiohttp.ClientError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                latencies.append(time.perf_counter() - t0)

    start, cpu0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(n) for n in range(spec.clients)))
    return {"ops": len(latencies), "elapsed": time.perf_counter() - start,
            "cpu": time.process_time() - cpu0, "latencies": latencies,
            "errors": errors}  # fmt: skip


def _http_child(spec: HttpSpec, conn: Any) -> None:
    try:
        conn.send(asyncio.run(_http_worker(spec)))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        conn.send({"error": repr(exc)})
    finally:
        conn.close()


def http_cell(
    op: str, bases: list[str], clients: int, a: argparse.Namespace, pids: list[int]
) -> dict[str, Any]:
    procs = max(1, min(a.procs, clients))
    ctx = mp.get_context("spawn")
    workers = []
    offset = 0
    for i in range(procs):
        n = clients // procs + (1 if i < clients % procs else 0)
        parent, child = ctx.Pipe()
        spec = HttpSpec(op, bases, n, offset, a.duration, a.max_ops // procs, a.value_size,
                        a.key_space, a.seed)  # fmt: skip
        proc = ctx.Process(target=_http_child, args=(spec, child), daemon=True)
        proc.start()
        workers.append((proc, parent))
        offset += n
    results = []
    srv0 = _cpu(pids)
    try:
        for proc, parent in workers:
            if not parent.poll(a.duration + 60):
                raise RuntimeError("HTTP worker did not report in time")
            results.append(parent.recv())
            proc.join(timeout=10)
    finally:
        for proc, _ in workers:
            if proc.is_alive():
                proc.kill()
                proc.join()
    srv = _cpu(pids) - srv0
    failed = [r["error"] for r in results if "error" in r]
    if failed:
        raise RuntimeError(failed[0])
    lat = sorted(x for r in results for x in r["latencies"])
    ops = sum(r["ops"] for r in results)
    errors: dict[str, int] = {}
    for r in results:
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    elapsed = max(r["elapsed"] for r in results)
    return {
        "ops": ops,
        "ops_per_sec": sum(r["ops"] / r["elapsed"] for r in results if r["elapsed"] > 0),
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "errors": errors,
        "gen_cores": sum(r["cpu"] for r in results) / elapsed if elapsed else None,
        "srv_us_per_op": 1e6 * srv / ops if ops else None,
    }


def _cpu(pids: list[int]) -> float:
    from kvstore.testing.bench_cluster import cpu_seconds

    return sum(cpu_seconds(p) or 0.0 for p in pids)


def grpc_cell(
    workload: str, endpoints: list[str], clients: int, a: argparse.Namespace, pids: list[int]
) -> dict:
    r = run_cell(
        workload=workload, endpoints=endpoints, clients=clients,
        procs=max(1, min(a.procs, clients)), duration=a.duration, max_ops=a.max_ops,
        value_size=a.value_size, key_space=a.key_space,
        conns_per_endpoint=1, seed=a.seed, call_timeout=10.0, server_pids=pids,
    )  # fmt: skip
    lat = sorted(r.latencies)
    return {
        "ops": r.ops,
        "ops_per_sec": r.ops_per_sec,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        "errors": r.errors,
        "gen_cores": r.gen_cpu,
        "srv_us_per_op": (1e6 * r.server_cpu * r.elapsed / r.ops)
        if r.server_cpu is not None and r.ops
        else None,
    }


def preload(bases: list[str], a: argparse.Namespace) -> None:
    """Write every key once (ranges then read existing keys)."""
    import urllib.request

    value = base64.b64encode(b"v" * a.value_size).decode()
    for i in range(a.key_space):
        body = json.dumps({"key": _key(i), "value": value}).encode()
        req = urllib.request.Request(bases[i % len(bases)] + "/v3/kv/put", data=body)
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - loopback
            resp.read()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=1, help="members per cluster")
    ap.add_argument("--clients", default="16,64", help="concurrent HTTP/gRPC clients")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    ap.add_argument("--max-ops", type=int, default=200_000, help="op cap per cell")
    ap.add_argument("--value-size", type=int, default=256)
    ap.add_argument("--key-space", type=int, default=500)
    ap.add_argument("--procs", type=int, default=2, help="generator processes per cell")
    ap.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is kept")
    ap.add_argument("--no-grpc", action="store_true", help="skip the gRPC reference cells")
    ap.add_argument("--deadline", type=float, default=900.0, help="stop starting cells after, s")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", dest="json_out")
    a = ap.parse_args(argv)
    clients = [int(x) for x in a.clients.split(",") if x]

    from kvstore.devcluster import LocalCluster
    from kvstore.testing.bench_cluster import cluster_pids
    from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

    if not etcd_available():
        print("etcd not on PATH", file=sys.stderr)
        return 2
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    with EtcdCluster(size=a.size) as etcd, LocalCluster(size=a.size, metrics=True) as kv:
        kv.wait_leader(timeout=60)
        systems: dict[str, dict[str, Any]] = {
            "etcd": {
                "http": [f"http://{e}" for e in etcd.endpoints],
                "grpc": etcd.endpoints,
                "pids": cluster_pids(etcd) or [],
            },
            "kvstore": {
                "http": [f"http://127.0.0.1:{m.metrics_port}" for m in kv.members],
                "grpc": kv.endpoints,
                "pids": cluster_pids(kv) or [],
            },
        }
        for s in systems.values():
            bases: list[str] = s["http"]
            wait_until(functools.partial(_ready, bases), timeout=60, what="gateways ready")
            preload(s["http"], a)
            if not a.no_grpc:  # the gRPC generator's own keys, for its gets
                pre = run_cell(
                    workload=PRELOAD, endpoints=s["grpc"], clients=16, procs=1, duration=120.0,
                    max_ops=a.key_space, value_size=a.value_size, key_space=a.key_space,
                    conns_per_endpoint=1, seed=a.seed, call_timeout=10.0,
                )  # fmt: skip
                if pre.ops < a.key_space:
                    raise RuntimeError(f"gRPC preload wrote {pre.ops}/{a.key_space}: {pre.errors}")
        cells = [("http", op, c) for c in clients for op in HTTP_OPS]
        if not a.no_grpc:
            cells += [("grpc", op, c) for c in clients for op in HTTP_OPS]
        for transport, op, c in cells:
            for name, s in systems.items():
                if time.monotonic() - started > a.deadline:
                    print("deadline reached: remaining cells skipped", file=sys.stderr)
                    break
                runs = []
                for _ in range(a.repeat):
                    if transport == "http":
                        runs.append(http_cell(op, s["http"], c, a, s["pids"]))
                    else:
                        workload = "put" if op == "put" else "get-linearizable"
                        runs.append(grpc_cell(workload, s["grpc"], c, a, s["pids"]))
                best = sorted(runs, key=lambda r: r["ops_per_sec"])[len(runs) // 2]
                rows.append({"system": name, "transport": transport, "op": op, "clients": c,
                             **best})  # fmt: skip
                print(f"{transport:5} {op:6} {c:3} {name:8} {best['ops_per_sec']:8.0f} ops/s  "
                      f"p50 {best['p50_ms'] or 0:7.2f} ms  p99 {best['p99_ms'] or 0:7.2f} ms  "
                      f"srv {best['srv_us_per_op'] or 0:6.0f} us/op  "
                      f"gen {best['gen_cores'] or 0:4.2f} cores  "
                      f"errors {best['errors'] or '-'}", flush=True)  # fmt: skip
    report(rows, a)
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"config": vars(a), "rows": rows}, indent=2))
    return 0


def _ready(bases: list[str]) -> bool:
    import urllib.request

    try:
        for base in bases:
            with urllib.request.urlopen(base + "/health", timeout=2) as resp:  # noqa: S310
                if resp.status != 200:
                    return False
    except OSError:
        return False
    return True


def report(rows: list[dict[str, Any]], a: argparse.Namespace) -> None:
    def rate(transport: str, op: str, c: int, system: str) -> float | None:
        for r in rows:
            if (r["transport"], r["op"], r["clients"], r["system"]) == (transport, op, c, system):
                return float(r["ops_per_sec"])
        return None

    print(f"\nratios kvstore/etcd ({a.size} member(s) each, {a.duration:g} s cells)")
    print(f"{'op':6} {'clients':>7} {'gateway':>8} {'gRPC':>8}  target (gateway >= gRPC)")
    for op in HTTP_OPS:
        for c in sorted({r["clients"] for r in rows}):
            h_kv, h_etcd = rate("http", op, c, "kvstore"), rate("http", op, c, "etcd")
            g_kv, g_etcd = rate("grpc", op, c, "kvstore"), rate("grpc", op, c, "etcd")
            http_ratio = h_kv / h_etcd if h_kv is not None and h_etcd else None
            grpc_ratio = g_kv / g_etcd if g_kv is not None and g_etcd else None
            verdict = "n/a"
            if http_ratio is not None and grpc_ratio is not None:
                verdict = "PASS" if http_ratio >= grpc_ratio else "FAIL"
            print(f"{op:6} {c:7d} {_fmt(http_ratio):>8} {_fmt(grpc_ratio):>8}  {verdict}")


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    sys.exit(main())
