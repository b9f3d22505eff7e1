"""Benchmark targets: start a local kvstore or etcd cluster, or use given endpoints.

Owns: the one "which system do I measure" step every benchmark shares — the
`--endpoints / --start-kvstore / --start-etcd` flags (`add_target_args`), a
context manager that starts the chosen system and yields a `BenchTarget`
(endpoints, server pids when known, leader lookup), and the /proc readers
benchmarks report with (`rss_kib`, `cpu_seconds`).
Never: measures anything itself, binds anything but 127.0.0.1, or leaves a
process it started running (the context manager stops the cluster).

    from kvstore.testing.bench_cluster import add_target_args, open_target
    add_target_args(parser)                      # --endpoints/--start-kvstore/...
    with open_target(args, size=1) as target:    # or open_system("kvstore", 3)
        run(target.endpoints, target.pids)
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

START_TIMEOUT_S = 60.0


@dataclass
class BenchTarget:
    """A started (or given) system: its name, client endpoints and server pids."""

    name: str
    endpoints: list[str]
    pids: list[int] | None = None
    cluster: Any = field(default=None, repr=False)

    def leader_index(self, timeout: float = 5.0) -> int:
        """Index into `endpoints` of the member that calls itself leader."""
        # Deferred: benchmark scripts import this module in every process,
        # most of which never ask for the leader.
        import grpc

        from kvstore.pb import rpc_pb2, rpc_pb2_grpc

        for i, ep in enumerate(self.endpoints):
            with grpc.insecure_channel(ep) as ch:
                try:
                    st = rpc_pb2_grpc.MaintenanceStub(ch).Status(
                        rpc_pb2.StatusRequest(), timeout=timeout
                    )
                except grpc.RpcError:
                    continue
            if st.leader and st.leader == st.header.member_id:
                return i
        raise RuntimeError("no member reports itself as leader")

    def pid_of(self, i: int) -> int | None:
        return self.pids[i] if self.pids and i < len(self.pids) else None


def cluster_pids(cluster: object) -> list[int] | None:
    """Server pids of a started LocalCluster/EtcdCluster (member order)."""
    members = getattr(cluster, "members", None) or []
    found = [getattr(getattr(m, "proc", None), "pid", None) or getattr(m, "pid", None)
             for m in members]  # fmt: skip
    return [p for p in found if p] or None


@contextlib.contextmanager
def open_system(
    kind: str,
    size: int = 3,
    extra_args: tuple[str, ...] = (),
    endpoints: list[str] | None = None,
    pids: list[int] | None = None,
) -> Iterator[BenchTarget]:
    """`kind`: "kvstore" (kvstore.testing.devcluster.LocalCluster), "etcd" (a real
    etcd via kvstore.testing.etcd_cluster.EtcdCluster) or "external"
    (`endpoints`, optional `pids`, nothing started). Waits for a leader."""
    if kind == "external":
        if not endpoints:
            raise SystemExit("no --endpoints given")
        yield BenchTarget("external", list(endpoints), pids)
        return
    if kind == "etcd":
        # Deferred (also below): only the chosen kind of cluster is loaded.
        from kvstore.testing.etcd_cluster import EtcdCluster, etcd_available

        if not etcd_available():
            raise SystemExit("etcd/etcdctl not on PATH (set ETCD_BIN / ETCDCTL_BIN)")
        with EtcdCluster(size=size, extra_args=extra_args) as c:
            yield BenchTarget("etcd", list(c.endpoints), cluster_pids(c), c)
        return
    if kind == "kvstore":
        from kvstore.testing.devcluster import LocalCluster

        with LocalCluster(size=size, extra_args=extra_args) as c:
            c.wait_leader(timeout=START_TIMEOUT_S)
            yield BenchTarget("kvstore", list(c.endpoints), cluster_pids(c), c)
        return
    raise ValueError(f"unknown system kind {kind!r}")


def add_target_args(parser: argparse.ArgumentParser, default_size: int = 3) -> None:
    """The shared target flags (mutually exclusive; --endpoints by default)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--endpoints", default="", help="H:P[,H:P...] of a running cluster")
    group.add_argument("--start-kvstore", action="store_true", help="start a local kvstore")
    group.add_argument("--start-etcd", action="store_true", help="start a local etcd 3.4")
    parser.add_argument(
        "--size", type=int, default=default_size, help="members to start (--start-*)"
    )
    parser.add_argument(
        "--server-pids", default="", help="pids of an --endpoints cluster (for RSS/CPU)"
    )
    parser.add_argument(
        "--server-args", default="", help="extra flags for started servers (space separated)"
    )


def target_kind(args: argparse.Namespace) -> str:
    if getattr(args, "start_kvstore", False):
        return "kvstore"
    if getattr(args, "start_etcd", False):
        return "etcd"
    return "external"


def open_target(args: argparse.Namespace) -> contextlib.AbstractContextManager[BenchTarget]:
    """The system chosen by `add_target_args` flags."""
    endpoints = [e for e in (args.endpoints or "127.0.0.1:2379").split(",") if e]
    pids = [int(p) for p in args.server_pids.split(",") if p.strip()] or None
    extra = tuple(args.server_args.split()) if getattr(args, "server_args", "") else ()
    return open_system(target_kind(args), args.size, extra, endpoints, pids)


# ------------------------------------------------------------------ /proc
def rss_kib(pid: int | None) -> int | None:
    """Resident set size (VmRSS) of `pid` in KiB, or None if unknown."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds used so far by `pid` (from /proc/PID/stat)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fmt_mib(kib: int | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:,.1f} MiB"
