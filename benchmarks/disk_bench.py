#!/usr/bin/env python3
"""Disk / maintenance benchmark: fsync latency and the cost of the operator paths.

Owns: one temporary directory, measured in phases on a store of --keys keys of
--value-bytes values (written through the real MVCC store on RocksDB):
  fsync     p50/p99 of a small synced RocksDB write (etcd's WAL-fsync figure;
            etcd wants p99 < 10 ms)
  backup    consistent snapshot file (write_backup), MB/s
  verify    SHA-256 check of that file, MB/s
  restore   restore_data_dir into a new data dir, MB/s
  install   SnapshotInstaller on a follower: MB/s, write batches used and the
            largest (the state is staged in bounded batches, then switched with
            one synced write), and the peak RSS growth during the install;
            then the same with the state prepared off the loop first
            (SnapshotInstaller.prepare, as the receiver does), giving the time
            the event loop is held by the switch alone
  defrag    manual compaction after overwriting every key twice: seconds, size before/after
Never: touches anything outside its temporary directory (removed at the end),
uses the network, runs unbounded (every phase is sized by the flags).

Examples:
    python benchmarks/disk_bench.py                     # 20k keys x 256 B
    python benchmarks/disk_bench.py --keys 100000 --value-bytes 1024
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kvstore.maintenance.backup import verify_file, write_backup  # noqa: E402
from kvstore.maintenance.defrag import defragment  # noqa: E402
from kvstore.maintenance.snapshot_install import SnapshotInstaller  # noqa: E402
from kvstore.mvcc import MvccStore  # noqa: E402
from kvstore.pb import rpc_pb2  # noqa: E402
from kvstore.raft.types import ConfState, HardState, Snapshot, SnapshotMetadata  # noqa: E402
from kvstore.server.restore import restore_data_dir  # noqa: E402
from kvstore.storage.backend import Backend  # noqa: E402
from kvstore.storage.snapshot_spool import FILE_PREFIX  # noqa: E402


def fill(store: MvccStore, keys: int, value_bytes: int, rounds: int = 1) -> None:
    value = os.urandom(value_bytes)
    for r in range(rounds):
        for start in range(0, keys, 1000):
            batch = store.begin_batch()
            for i in range(start, min(keys, start + 1000)):
                batch.put(rpc_pb2.PutRequest(key=b"key/%08d" % i, value=value + bytes([r])))
            batch.commit(sync=False)


def bench_fsync(backend: Backend, n: int) -> tuple[float, float]:
    lat = []
    for i in range(n):
        batch = backend.batch()
        batch.put("meta", b"bench/fsync", i.to_bytes(8, "big"))
        t0 = time.perf_counter()
        backend.write(batch, True)
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return statistics.median(lat) * 1000, lat[int(0.99 * (len(lat) - 1))] * 1000


def _status_kb(field: str) -> int:
    """A VmXXX figure of /proc/self/status in KiB (0 where unavailable)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> None:
    """Restart the VmHWM peak at the current RSS (Linux >= 4.0; ignored elsewhere)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def mbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e6:8.1f} MB/s ({seconds * 1000:7.1f} ms)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--value-bytes", type=int, default=256)
    ap.add_argument("--fsyncs", type=int, default=200)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kvstore-disk-bench-"))
    try:
        backend = Backend.open(tmp / "leader" / "db")
        store = MvccStore(backend)
        t0 = time.perf_counter()
        fill(store, args.keys, args.value_bytes)
        print(
            f"fill      {args.keys} keys x {args.value_bytes} B in {time.perf_counter() - t0:.2f}s"
        )

        p50, p99 = bench_fsync(backend, args.fsyncs)
        print(f"fsync     p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   ({args.fsyncs} synced writes)")

        snap = tmp / "backup.snap"
        t0 = time.perf_counter()
        info = write_backup(backend, snap)
        print(f"backup    {mbps(info.size, time.perf_counter() - t0)}  {info.size} bytes")

        t0 = time.perf_counter()
        verify_file(snap)
        print(f"verify    {mbps(info.size, time.perf_counter() - t0)}")

        t0 = time.perf_counter()
        peer = "http://127.0.0.1:2380"
        restore_data_dir(
            str(snap), data_dir=str(tmp / "restored"), name="r", initial_cluster=f"r={peer}",
            initial_cluster_token="bench", initial_advertise_peer_urls=(peer,),
        )  # fmt: skip
        print(f"restore   {mbps(info.size, time.perf_counter() - t0)}")

        follower = Backend.open(tmp / "follower" / "db")
        md = SnapshotMetadata(info.applied_index or 1, 1, ConfState((1,)))
        installer = SnapshotInstaller(follower)
        _reset_peak_rss()
        rss0 = _status_kb("VmRSS")
        t0 = time.perf_counter()
        installer.install(Snapshot(md, FILE_PREFIX + str(snap).encode()), None, HardState(1, 0, 0))
        seconds = time.perf_counter() - t0
        peak = max(0, _status_kb("VmHWM") - rss0)
        print(
            f"install   {mbps(info.size, seconds)}  {installer.last_batches} batches "
            f"(largest {installer.last_max_batch_bytes / 1e6:.1f} MB), "
            f"peak RSS +{peak / 1024:.0f} MiB"
        )
        follower.close()

        # As wired in a node: the receiver has the state staged in a worker
        # thread; the driver's install on the event loop only switches.
        follower = Backend.open(tmp / "follower2" / "db")
        installer = SnapshotInstaller(follower)
        t0 = time.perf_counter()
        asyncio.run(installer.prepare(snap))
        staged_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        installer.install(Snapshot(md, FILE_PREFIX + str(snap).encode()), None, HardState(1, 0, 0))
        print(
            f"install   prepared: staged off the loop {mbps(info.size, staged_s)}, "
            f"switch on the loop {(time.perf_counter() - t0) * 1000:.1f} ms"
        )
        follower.close()

        fill(store, args.keys, args.value_bytes, rounds=2)
        batch = store.begin_batch()
        batch.compact(store.current_revision)
        batch.commit(sync=False)
        result = defragment(backend)
        print(
            f"defrag    {result.seconds * 1000:7.1f} ms   "
            f"{result.size_before / 1e6:.1f} MB -> {result.size_after / 1e6:.1f} MB"
        )
        backend.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
