"""Run one benchmark cell (workload x client count) with spawned worker processes.

Owns: splitting clients and the op budget over worker processes, the
ready/go barrier that starts all workers together, collecting their samples,
and sampling CPU use (generator, server processes, whole machine) over the
measured phase.

Must never: leave a worker process running (every worker is joined, and killed
if it does not finish within its deadline), or merge samples from a failed
worker into a result (a failed worker fails the whole cell).

Workers are started with the "spawn" method: grpc's C core does not survive
fork() with live channels, and spawn gives every run an identical fresh process.
"""

from __future__ import annotations

import array
import multiprocessing as mp
import os
import time
from dataclasses import dataclass

from _kv_load import WorkerResult, WorkerSpec, worker_main

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def proc_cpu_seconds(pid: int) -> float | None:
    """utime+stime of one process (Linux /proc); None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # Fields after the ")" that ends the command name; utime/stime are 14/15.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds summed over all cores since boot."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass
class CellResult:
    workload: str
    clients: int
    procs: int
    ops: int
    elapsed: float  # longest worker's measured phase, seconds
    ops_per_sec: float  # sum over workers of ops/elapsed
    latencies: array.array  # seconds, all workers merged (unsorted)
    errors: dict[str, int]
    first_error: str
    gen_cpu: float  # generator CPU, in cores (CPU seconds / wall seconds)
    server_cpu: float | None  # server processes, in cores; None if pids unknown
    machine_busy: float  # whole machine, in cores


def split(n: int, parts: int) -> list[int]:
    """n items over `parts` buckets as evenly as possible (first buckets larger).

    >>> split(64, 2), split(5, 3), split(1, 2)
    ([32, 32], [2, 2, 1], [1, 0])
    """
    base, rem = divmod(n, parts)
    return [base + (1 if i < rem else 0) for i in range(parts)]


def run_cell(
    *,
    workload: str,
    endpoints: list[str],
    clients: int,
    procs: int,
    duration: float,
    max_ops: int,
    value_size: int,
    key_space: int,
    conns_per_endpoint: int,
    seed: int,
    call_timeout: float,
    server_pids: list[int] | None = None,
    setup_timeout: float = 60.0,
) -> CellResult:
    procs = max(1, min(procs, clients))
    ctx = mp.get_context("spawn")
    client_split = split(clients, procs)
    ops_split = split(max_ops, procs)
    workers: list[tuple[mp.process.BaseProcess, object]] = []
    offset = 0
    try:
        for i in range(procs):
            parent_end, child_end = ctx.Pipe()
            spec = WorkerSpec(
                workload=workload,
                endpoints=endpoints,
                clients=client_split[i],
                client_offset=offset,
                duration=duration,
                max_ops=max(1, ops_split[i]),
                value_size=value_size,
                key_space=key_space,
                conns_per_endpoint=conns_per_endpoint,
                seed=seed,
                call_timeout=call_timeout,
            )
            offset += client_split[i]
            p = ctx.Process(target=worker_main, args=(spec, child_end), daemon=True)
            p.start()
            child_end.close()
            workers.append((p, parent_end))

        for _, c in workers:
            kind, payload = _recv(c, setup_timeout, "ready")
            if kind != "ready":
                raise RuntimeError(f"worker failed during setup:\n{payload}")

        srv0 = _sum_cpu(server_pids)
        busy0, total0 = machine_busy_seconds()
        wall0 = time.perf_counter()
        for _, c in workers:
            c.send("go")
        results: list[WorkerResult] = []
        for _, c in workers:
            kind, payload = _recv(c, duration + call_timeout + 30.0, "done")
            if kind != "done":
                raise RuntimeError(f"worker failed:\n{payload}")
            results.append(payload)
        wall = time.perf_counter() - wall0
        srv1 = _sum_cpu(server_pids)
        busy1, total1 = machine_busy_seconds()
    finally:
        for p, c in workers:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
            c.close()

    lat = array.array("d")
    errors: dict[str, int] = {}
    for r in results:
        lat.frombytes(r.latencies)
        for k, v in r.errors.items():
            errors[k] = errors.get(k, 0) + v
    elapsed = max(r.elapsed for r in results)
    cores = os.cpu_count() or 1
    return CellResult(
        workload=workload,
        clients=clients,
        procs=procs,
        ops=sum(r.ops for r in results),
        elapsed=elapsed,
        ops_per_sec=sum(r.ops / r.elapsed for r in results if r.elapsed > 0),
        latencies=lat,
        errors=errors,
        first_error=next((r.first_error for r in results if r.first_error), ""),
        gen_cpu=sum(r.cpu for r in results) / elapsed if elapsed > 0 else 0.0,
        server_cpu=(srv1 - srv0) / wall if srv0 is not None and srv1 is not None else None,
        machine_busy=(busy1 - busy0) / (total1 - total0) * cores if total1 > total0 else 0.0,
    )


def _sum_cpu(pids: list[int] | None) -> float | None:
    if not pids:
        return None
    vals = [proc_cpu_seconds(p) for p in pids]
    if any(v is None for v in vals):
        return None
    return sum(v for v in vals if v is not None)


def _recv(conn, timeout: float, what: str) -> tuple[str, object]:
    if not conn.poll(timeout):
        raise TimeoutError(f"worker sent no '{what}' within {timeout:.0f} s")
    try:
        return conn.recv()
    except EOFError as e:
        raise RuntimeError(f"worker exited before sending '{what}'") from e
