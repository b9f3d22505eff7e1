#!/usr/bin/env python3
"""KV benchmark: put / serializable get / linearizable get against etcd-v3 endpoints.

Owns: the command line, starting and stopping the clusters it was asked to
start (kvstore via `kvstore.devcluster.LocalCluster`, a real etcd via
`kvstore.testing.etcd_cluster.EtcdCluster`, a null server for calibration),
running every workload x client-count cell against each system in turn with
the SAME load generator (`_kv_load.py`, driven by `_kv_runner.py`), and
printing the tables and the issue's targets (`_kv_report.py`).

Must never: leave a process it started running (clusters are context managers,
workers are joined or killed), run an unbounded loop (every cell stops at
`--duration` and at `--max-ops`), or touch anything but 127.0.0.1 clusters it
started and the endpoints it was given.

Systems run one after another, never at the same time: a cluster this script
starts is stopped before the next one starts, so the two never share the two
cores. An `--endpoints` target keeps running (idle) while etcd is measured.

Examples:
    python benchmarks/kv_bench.py --start-kvstore --compare-etcd
    python benchmarks/kv_bench.py --endpoints 127.0.0.1:2379,127.0.0.1:22379,127.0.0.1:32379
    python benchmarks/kv_bench.py --target-etcd --compare-etcd   # etcd vs etcd: ratio ~ 1
    python benchmarks/kv_bench.py --calibrate --workloads put --clients 1,16,64
    python benchmarks/kv_bench.py --start-kvstore --compare-etcd --compare-null  # + the floor
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))  # the repo root, so `kvstore` imports uninstalled

from _kv_load import PRELOAD, WORKLOADS  # noqa: E402
from _kv_report import (  # noqa: E402
    Summary,
    checks_table,
    compare_table,
    detail_table,
    evaluate_targets,
    noise_warning,
    summarize,
)
from _kv_runner import run_cell  # noqa: E402

from kvstore.testing.bench_cluster import open_system  # noqa: E402
from kvstore.testing.waiting import free_port  # noqa: E402

# A system = a name and a context manager yielding (endpoints, server pids or None).
SystemCM = Callable[[], contextlib.AbstractContextManager[tuple[list[str], list[int] | None]]]


@contextlib.contextmanager
def _started(
    kind: str, size: int = 3, extra_args: tuple[str, ...] = (), **kw: object
) -> Iterator[tuple[list[str], list[int] | None]]:
    """kvstore.testing.bench_cluster's system as (endpoints, pids)."""
    with open_system(kind, size, extra_args, **kw) as target:  # type: ignore[arg-type]
        yield target.endpoints, target.pids


@contextlib.contextmanager
def _null_system(value_size: int, count: int = 1) -> Iterator[tuple[list[str], list[int] | None]]:
    """`count` null servers (one per would-be member), each its own process."""
    procs: list[subprocess.Popen[str]] = []
    endpoints = []
    try:
        for _ in range(count):
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "_null_kv_server.py"), "--port", str(port),
                 "--value-size", str(value_size), "--max-seconds", "1800"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()  # bounded: the child prints or exits
            if not line.startswith("ready"):
                raise RuntimeError(f"null server failed to start (exit {proc.poll()})")
            endpoints.append(f"127.0.0.1:{port}")
        yield endpoints, [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _procs_for(clients: int, procs_arg: str) -> int:
    if procs_arg != "auto":
        return max(1, int(procs_arg))
    # One generator process saturates one core at roughly a few thousand calls/s;
    # a second process helps once there are enough clients to keep both busy.
    return 1 if clients < 8 else 2


@dataclass
class _Live:
    """A started system: its endpoints and (if known) server pids."""

    name: str
    endpoints: list[str]
    pids: list[int] | None


def _announce(live: _Live, log: Callable[[str], None]) -> None:
    pids = f" (server pids {live.pids})" if live.pids else " (server pids unknown: no srv cpu)"
    log(f"-- {live.name}: endpoints {','.join(live.endpoints)}{pids}")


def _preload(live: _Live, args: argparse.Namespace, log: Callable[[str], None]) -> None:
    """Write every key of the key space once, so that gets always find their key."""
    t0 = time.perf_counter()
    pre = run_cell(
        workload=PRELOAD, endpoints=live.endpoints, clients=16, procs=1,
        duration=args.preload_timeout, max_ops=args.key_space,
        value_size=args.value_size, key_space=args.key_space,
        conns_per_endpoint=args.conns, seed=args.seed, call_timeout=args.call_timeout,
    )  # fmt: skip
    if pre.errors or pre.ops < args.key_space:
        raise RuntimeError(
            f"{live.name}: preload wrote {pre.ops}/{args.key_space} keys, "
            f"errors {pre.errors} {pre.first_error}"
        )
    log(f"   {live.name}: preloaded {pre.ops} keys in {time.perf_counter() - t0:.1f} s")


def _measure(
    live: _Live, workload: str, clients: int, args: argparse.Namespace, log: Callable[[str], None]
) -> Summary:
    r = run_cell(
        workload=workload, endpoints=live.endpoints, clients=clients,
        procs=_procs_for(clients, args.procs), duration=args.duration,
        max_ops=args.max_ops, value_size=args.value_size,
        key_space=args.key_space, conns_per_endpoint=args.conns,
        seed=args.seed, call_timeout=args.call_timeout, server_pids=live.pids,
    )  # fmt: skip
    s = summarize(r)
    errs = f" errors={s.errors}" if s.errors else ""
    log(
        f"   {live.name:<14} {workload:<17} clients={clients:<3} {s.ops_per_sec:>8.0f} ops/s "
        f"p50={s.p50_ms:.2f}ms p99={s.p99_ms:.2f}ms gen={s.gen_cpu:.2f} "
        f"srv={s.server_cpu if s.server_cpu is not None else float('nan'):.2f} "
        f"busy={s.machine_busy:.2f}{errs}"
    )
    return s


def _median_run(runs: list[Summary]) -> Summary:
    """The repetition with the median throughput (its latencies stay consistent)."""
    return sorted(runs, key=lambda s: s.ops_per_sec)[(len(runs) - 1) // 2]


def run_all(
    plan: list[tuple[str, SystemCM]], args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, list[Summary]]:
    """Measure every (workload, clients) cell on every system; see --order."""
    cells = [(w, c) for w in args.workloads for c in args.clients]
    needs_preload = any(w.startswith("get") for w in args.workloads)
    runs: dict[str, dict[tuple[str, int], list[Summary]]] = {n: {} for n, _ in plan}

    def one(live: _Live, cell: tuple[str, int]) -> None:
        runs[live.name].setdefault(cell, []).append(_measure(live, *cell, args, log))

    if args.order == "sequential":
        for name, cm in plan:
            with cm() as (endpoints, pids):
                live = _Live(name, endpoints, pids)
                _announce(live, log)
                if needs_preload:
                    _preload(live, args, log)
                for cell in cells:
                    for _ in range(args.repeat):
                        one(live, cell)
    else:
        with contextlib.ExitStack() as stack:
            lives = []
            for name, cm in plan:
                endpoints, pids = stack.enter_context(cm())
                lives.append(_Live(name, endpoints, pids))
                _announce(lives[-1], log)
            if needs_preload:
                for live in lives:
                    _preload(live, args, log)
            for cell in cells:
                for rep in range(args.repeat):
                    # Alternate who goes first so neither always follows the other's load.
                    for live in lives if rep % 2 == 0 else lives[::-1]:
                        one(live, cell)
    return {name: [_median_run(runs[name][cell]) for cell in cells] for name, _ in plan}


def _csv_ints(s: str) -> list[int]:
    vals = [int(x) for x in s.split(",") if x.strip()]
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError("need positive integers, e.g. 1,16,64")
    return vals


def _workloads(s: str) -> list[str]:
    vals = [x.strip() for x in s.split(",") if x.strip()]
    bad = [v for v in vals if v not in WORKLOADS]
    if bad or not vals:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {bad}; choose from {WORKLOADS}")
    return vals


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="etcd-v3 KV benchmark (put / get) with an optional side-by-side real etcd.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    tgt = ap.add_argument_group("target (pick one)")
    tgt.add_argument("--endpoints", help="comma-separated host:port list of a running cluster")
    tgt.add_argument(
        "--start-kvstore",
        action="store_true",
        help="start a local 3-node kvstore (kvstore.devcluster.LocalCluster)",
    )
    tgt.add_argument(
        "--target-etcd",
        action="store_true",
        help="start a 3-node etcd as the target (sanity check: etcd vs etcd)",
    )
    tgt.add_argument(
        "--calibrate",
        action="store_true",
        help="target a null KV server: measures the load generator's ceiling",
    )
    ap.add_argument(
        "--compare-etcd",
        action="store_true",
        help="also run the same workloads against a fresh local 3-node etcd",
    )
    ap.add_argument(
        "--compare-null",
        action="store_true",
        help="also run the workloads against --cluster-size null grpc.aio servers (fixed "
        "answers, no work): the floor any grpc.aio server pays, shown against etcd",
    )
    ap.add_argument(
        "--server-pids", default="", help="pids of an --endpoints cluster, to report its CPU use"
    )
    ap.add_argument("--cluster-size", type=int, default=3, help="members of started clusters")
    ap.add_argument(
        "--kvstore-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra server flag for --start-kvstore members (repeat; e.g. --kvstore-arg=--x=1)",
    )
    ap.add_argument(
        "--etcd-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra etcd flag for started etcd members (repeat)",
    )
    ap.add_argument(
        "--workloads", type=_workloads, default=list(WORKLOADS), help=f"subset of {WORKLOADS}"
    )
    ap.add_argument(
        "--clients", type=_csv_ints, default=[1, 16, 64], help="concurrent client counts"
    )
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    ap.add_argument("--max-ops", type=int, default=1_000_000, help="op cap per cell")
    ap.add_argument("--value-size", type=int, default=256, help="bytes per value")
    ap.add_argument(
        "--key-space",
        type=int,
        default=1000,
        help="distinct keys; gets read keys preloaded from this space",
    )
    ap.add_argument(
        "--procs",
        default="auto",
        help="generator processes per cell ('auto': 1 below 8 clients, else 2)",
    )
    ap.add_argument(
        "--conns", type=int, default=1, help="gRPC connections per endpoint per generator process"
    )
    ap.add_argument("--call-timeout", type=float, default=10.0, help="per-call deadline, s")
    ap.add_argument(
        "--preload-timeout", type=float, default=120.0, help="max seconds to preload the keys"
    )
    ap.add_argument(
        "--order",
        choices=("interleaved", "sequential"),
        default="interleaved",
        help="interleaved: all systems up, each cell run on each system back to back (drift "
        "on a shared machine hits both alike); sequential: one system up at a time",
    )
    ap.add_argument(
        "--repeat", type=int, default=1, help="runs per cell per system; the median is reported"
    )
    ap.add_argument("--seed", type=int, default=1, help="seeds keys, value and key order")
    ap.add_argument("--json", dest="json_out", help="write all results to this JSON file")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any target FAILs")
    a = ap.parse_args(argv)
    picked = sum(bool(x) for x in (a.endpoints, a.start_kvstore, a.target_etcd, a.calibrate))
    if picked != 1:
        ap.error("pick exactly one of --endpoints, --start-kvstore, --target-etcd, --calibrate")
    if a.duration <= 0 or a.max_ops < 1 or a.key_space < 1 or a.value_size < 0 or a.repeat < 1:
        ap.error("--duration, --max-ops, --key-space and --repeat must be positive")
    return a


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:  # fail here with one line rather than in every worker process
        from kvstore.pb import rpc_pb2_grpc  # noqa: F401
    except ImportError as e:
        msg = f"kvstore.pb stubs missing ({e}): run `python scripts/gen_proto.py`"
        raise SystemExit(msg) from e

    def log(msg: str) -> None:
        print(msg, flush=True)

    etcd_args = tuple(args.etcd_arg)
    if args.endpoints:
        eps = [e.strip() for e in args.endpoints.split(",") if e.strip()]
        pids = [int(p) for p in args.server_pids.split(",") if p.strip()] or None
        target: tuple[str, SystemCM] = (
            "target",
            lambda: _started("external", endpoints=eps, pids=pids),
        )
    elif args.start_kvstore:
        kv_args = tuple(args.kvstore_arg)
        target = ("kvstore", lambda: _started("kvstore", args.cluster_size, kv_args))
    elif args.target_etcd:
        target = ("etcd-as-target", lambda: _started("etcd", args.cluster_size, etcd_args))
    else:
        target = ("null-server", lambda: _null_system(args.value_size))

    log(
        f"kv_bench: {os.cpu_count()} cpus, load avg {os.getloadavg()[0]:.2f}, "
        f"python {platform.python_version()}, workloads {args.workloads}, clients {args.clients}, "
        f"{args.duration:g}s/cell, value {args.value_size} B, key space {args.key_space}, "
        f"{args.conns} conn/endpoint/process, procs {args.procs}, order {args.order}, "
        f"repeat {args.repeat}"
    )
    started = time.time()
    plan = [target]
    if args.compare_etcd:
        plan.append(("etcd", lambda: _started("etcd", args.cluster_size, etcd_args)))
    if args.compare_null:
        plan.append(("null", lambda: _null_system(args.value_size, args.cluster_size)))
    results = run_all(plan, args, log)

    print()
    for name, rows in results.items():
        print(detail_table(name, rows))
        print()
    etcd_rows = results.get("etcd")
    if etcd_rows is not None:
        print(compare_table(results[target[0]], etcd_rows))
        print()
        if "null" in results:
            print(compare_table(results["null"], etcd_rows, name="null"))
            print()
    checks = evaluate_targets(results[target[0]], etcd_rows)
    print(checks_table(checks))
    warning = noise_warning([s for rows in results.values() for s in rows])
    if warning:
        print("\n" + warning)
    log(f"\ntotal wall time {time.time() - started:.0f} s")

    if args.json_out:
        doc = {
            "config": {k: v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "started": started,
            "results": {n: [s.to_json() for s in rows] for n, rows in results.items()},
            "targets": [c.__dict__ for c in checks],
        }
        Path(args.json_out).write_text(json.dumps(doc, indent=2, default=str))
    return 1 if args.strict and any(c.status == "FAIL" for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
