#!/usr/bin/env python3
"""Disk growth under a long write run: is disk use bounded with auto-compaction on?

Owns: one single-member kvstore started as a real process (kvstore.devcluster.
LocalCluster, size 1) in a temporary directory on 127.0.0.1, a bounded put load
over a fixed key space with seeded random (incompressible) values, from
several concurrent clients through the kvstore.pb gRPC stubs, and a table
printed every --report-every puts:

  puts      puts acknowledged so far
  secs      seconds since the load started
  rev       current revision (Status header)
  compact   last compacted revision (from the server log "auto-compaction:
            compacted to revision N"; '-' when none yet)
  keys      live keys (count-only Range over the benchmark prefix)
  du MiB    bytes on disk of the whole data dir (allocated blocks, like `du`)
  wal MiB   of which RocksDB write-ahead log files (*.log)
  db MiB    Maintenance.Status dbSize (RocksDB files) / dbSizeInUse
  raft idx  Status raftIndex
  log kept  raft log entries still stored: raftIndex minus the first index kept
            (from the server log "raft log compacted up to index N"; all of
            them until the first log compaction)

At the end it defragments once (Maintenance.Defragment) and prints a last row,
showing what RocksDB had not yet reclaimed by itself.

--contrast runs the same load twice: with auto-compaction, then without.
Never: binds anything but 127.0.0.1, keeps files (the temp dir is removed),
runs unbounded (--puts and --max-seconds cap every run), asserts timings.

Examples:
    python benchmarks/disk_growth_bench.py                       # 200k puts, periodic 10s
    python benchmarks/disk_growth_bench.py --puts 60000 --contrast --max-seconds 80
    python benchmarks/disk_growth_bench.py --auto-compaction-mode revision \\
        --auto-compaction-retention 5000     # etcd 3.4: checks every 5 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import grpc  # noqa: E402

from kvstore.devcluster import LocalCluster  # noqa: E402
from kvstore.pb import rpc_pb2, rpc_pb2_grpc  # noqa: E402

PREFIX = b"growth/"
PREFIX_END = b"growth0"
_COMPACTED = re.compile(rb"auto-compaction: compacted to revision (\d+)")
_LOG_COMPACTED = re.compile(rb"raft log compacted up to index (\d+)")


@dataclass
class Row:
    puts: int
    secs: float
    revision: int
    compacted: int  # -1: never
    keys: int
    du_bytes: int
    wal_bytes: int
    db_size: int
    db_in_use: int
    raft_index: int
    log_kept: int


def du_bytes(path: Path, suffix: str = "") -> int:
    """Allocated bytes of every file under `path` whose name ends with
    `suffix` (what `du -s` reports for suffix "")."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            if not name.endswith(suffix):
                continue
            try:
                st = os.lstat(os.path.join(root, name))
            except FileNotFoundError:  # RocksDB deleted it meanwhile
                continue
            total += st.st_blocks * 512
    return total


def last_match(pattern: re.Pattern[bytes], log_path: Path) -> int | None:
    try:
        found = pattern.findall(log_path.read_bytes())
    except FileNotFoundError:
        return None
    return int(found[-1]) if found else None


class Probe:
    """Measurements of the running member (gRPC + its data dir and log)."""

    def __init__(self, channel: grpc.aio.Channel, data_dir: Path, log_path: Path) -> None:
        self.kv = rpc_pb2_grpc.KVStub(channel)
        self.maint = rpc_pb2_grpc.MaintenanceStub(channel)
        self.data_dir = data_dir
        self.log_path = log_path

    async def row(self, puts: int, secs: float) -> Row:
        st = await self.maint.Status(rpc_pb2.StatusRequest(), timeout=30)
        count = await self.kv.Range(
            rpc_pb2.RangeRequest(key=PREFIX, range_end=PREFIX_END, count_only=True,
                                 serializable=True),
            timeout=30,
        )  # fmt: skip
        compacted = last_match(_COMPACTED, self.log_path)
        log_first = last_match(_LOG_COMPACTED, self.log_path)
        return Row(
            puts=puts,
            secs=round(secs, 1),
            revision=st.header.revision,
            compacted=compacted if compacted is not None else -1,
            keys=count.count,
            du_bytes=du_bytes(self.data_dir),
            wal_bytes=du_bytes(self.data_dir, ".log"),
            db_size=st.dbSize,
            db_in_use=st.dbSizeInUse,
            raft_index=st.raftIndex,
            log_kept=st.raftIndex - (log_first or 0),
        )


HEADER = (
    f"{'puts':>8} {'secs':>6} {'rev':>8} {'compact':>8} {'keys':>6} {'du MiB':>8} {'wal MiB':>8} "
    f"{'db MiB':>8} {'inuse MiB':>9} {'raft idx':>9} {'log kept':>9}"
)


def fmt(r: Row, label: str = "") -> str:
    mib = 1 << 20
    compacted = str(r.compacted) if r.compacted >= 0 else "-"
    return (
        f"{r.puts:>8} {r.secs:>6.1f} {r.revision:>8} {compacted:>8} {r.keys:>6} "
        f"{r.du_bytes / mib:>8.1f} {r.wal_bytes / mib:>8.1f} "
        f"{r.db_size / mib:>8.1f} {r.db_in_use / mib:>9.1f} "
        f"{r.raft_index:>9} {r.log_kept:>9}{label}"
    )


async def load(
    endpoint: str,
    probe_factory: Any,
    *,
    puts: int,
    keys: int,
    value_size: int,
    clients: int,
    report_every: int,
    max_seconds: float,
    seed: int,
) -> list[Row]:
    rows: list[Row] = []
    done = 0
    issued = 0
    errors: dict[str, int] = {}
    start = time.monotonic()
    deadline = start + max_seconds
    report = asyncio.Queue[int]()

    async with grpc.aio.insecure_channel(endpoint) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)
        probe: Probe = probe_factory(channel)

        async def client(i: int) -> None:
            nonlocal done, issued
            rng = random.Random(seed * 1000 + i)
            while issued < puts and time.monotonic() < deadline:
                issued += 1
                key = PREFIX + b"%08d" % rng.randrange(keys)
                # Fresh random bytes per put: identical values would compress
                # to almost nothing in RocksDB and hide the history's size.
                value = rng.randbytes(value_size)
                try:
                    await stub.Put(rpc_pb2.PutRequest(key=key, value=value), timeout=30)
                except grpc.aio.AioRpcError as exc:
                    errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                    continue
                done += 1
                if done % report_every == 0:
                    report.put_nowait(done)

        async def reporter() -> None:
            while True:
                n = await report.get()
                if n < 0:
                    return
                row = await probe.row(n, time.monotonic() - start)
                rows.append(row)
                print(fmt(row), flush=True)

        rep = asyncio.create_task(reporter())
        await asyncio.gather(*(client(i) for i in range(clients)))
        if done % report_every:
            report.put_nowait(done)
        report.put_nowait(-1)
        await rep
        if errors:
            print(f"  failed puts by code: {errors}")
        if time.monotonic() >= deadline and done < puts:
            print(f"  stopped by --max-seconds after {done} puts")
        # What RocksDB had not reclaimed yet: defragment (full manual compaction).
        await probe.maint.Defragment(rpc_pb2.DefragmentRequest(), timeout=300)
        row = await probe.row(done, time.monotonic() - start)
        rows.append(row)
        print(fmt(row, "  (after defrag)"), flush=True)
    return rows


def run_one(args: argparse.Namespace, compaction: bool) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="kvstore-growth-"))
    extra = ["--snapshot-count", str(args.snapshot_count)]
    if compaction:
        extra += [
            "--auto-compaction-mode", args.auto_compaction_mode,
            "--auto-compaction-retention", args.auto_compaction_retention,
        ]  # fmt: skip
    cluster = LocalCluster(size=1, base_dir=base / "cluster", extra_args=tuple(extra))
    title = (
        f"auto-compaction {args.auto_compaction_mode} {args.auto_compaction_retention}"
        if compaction
        else "auto-compaction off"
    )
    print(
        f"\n== {title}; --snapshot-count {args.snapshot_count}; {args.puts} puts over "
        f"{args.keys} keys, {args.value_size} B values, {args.clients} clients"
    )
    print(HEADER)
    try:
        cluster.start(timeout=60)
        m = cluster.members[0]
        rows = asyncio.run(
            load(
                cluster.endpoints[0],
                lambda ch: Probe(ch, m.data_dir, m.log_path),
                puts=args.puts,
                keys=args.keys,
                value_size=args.value_size,
                clients=args.clients,
                report_every=args.report_every,
                max_seconds=args.max_seconds,
                seed=args.seed,
            )
        )
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {"title": title, "compaction": compaction, "rows": [asdict(r) for r in rows]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--puts", type=int, default=200_000, help="puts per run (upper bound)")
    p.add_argument("--keys", type=int, default=1000, help="key space")
    p.add_argument("--value-size", type=int, default=256)
    p.add_argument("--clients", type=int, default=16, help="concurrent put loops")
    p.add_argument("--report-every", type=int, default=0, help="puts per row (default puts/10)")
    p.add_argument("--max-seconds", type=float, default=170.0, help="cap on each run's load")
    p.add_argument("--snapshot-count", type=int, default=10_000)
    p.add_argument("--auto-compaction-mode", choices=("periodic", "revision"), default="periodic")
    p.add_argument("--auto-compaction-retention", default="10s")
    p.add_argument("--no-auto-compaction", action="store_true", help="one run, compaction off")
    p.add_argument("--contrast", action="store_true", help="run with, then without compaction")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args(argv)
    args.report_every = args.report_every or max(1, args.puts // 10)
    runs = [True, False] if args.contrast else [not args.no_auto_compaction]
    results = [run_one(args, c) for c in runs]
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
