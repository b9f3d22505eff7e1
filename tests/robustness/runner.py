"""One robustness run: a 3-member cluster of real `kvstore` processes, mixed
traffic, a nemesis, and the recorded history written to a directory.

    python -m tests.robustness.runner CONFIG.json

Runs in the client namespace when the cluster lives in network namespaces
(the test starts it with `ip netns exec`), or on loopback otherwise. The
checking is done by the caller (tests/robustness/history.py: check).

Owns: the member processes it starts (by pid), the nemesis schedule (seeded),
the faults record. Never: kills a process it did not start; leaves a member
stopped (SIGSTOP), cut off or with failpoints when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kvstore.devcluster import child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port
from tests.robustness import netns
from tests.robustness.history import History
from tests.robustness.traffic import PREFIX, Traffic, TrafficConfig, now, prefix_end

TOKEN = "kvstore-robustness"
SNAPSHOT_COUNT = 300  # small: a member down for a few seconds needs a snapshot

# Failpoint specs the nemesis restarts a member with; probabilities keep the
# member alive for a while so it dies mid-traffic, not at its first write.
FAILPOINT_SPECS = [
    "raft_before_save=5%panic",
    "raft_after_save=5%panic",
    "apply_before_batch=5%panic",
    "apply_before_commit=5%panic",
    "apply_after_commit=5%panic",
    "raft_before_save=20%sleep(100ms)",
    "apply_before_commit=20%sleep(200ms)",
    "peer_drop=30%drop",
    "peer_receive_drop=30%drop",
    "compact_before_apply=panic",
    "compact_after_apply=panic",
    "lease_before_revoke=50%panic",
    "snapshot_before_save=panic",
    "snapshot_after_save=panic",
    "snapshot_before_send=panic",
    "snapshot_before_receive=panic",
    "snapshot_before_install=panic",
    "snapshot_after_install=panic",
    "defrag_before=panic",
    "defrag_after=panic",
]


@dataclass
class RunConfig:
    seed: int
    duration_s: float
    # kill stop failpoint membership | partition_leader partition_minority bridge loss
    faults: list[str]
    out_dir: str
    netns_members: list[str] | None = None  # namespace per member, or None: loopback
    member_ips: list[str] | None = None
    failpoint_specs: list[str] = field(default_factory=lambda: list(FAILPOINT_SPECS))
    stale_reads: bool = False  # harness self-test (see TrafficConfig)


@dataclass
class Member:
    name: str
    host: str
    client_port: int
    peer_port: int
    ns: str | None
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    stopped: bool = False

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"


class Cluster:
    def __init__(self, cfg: RunConfig, base: Path) -> None:
        self.members: list[Member] = []
        for i in range(3):
            ns = cfg.netns_members[i] if cfg.netns_members else None
            host = cfg.member_ips[i] if cfg.member_ips else "127.0.0.1"
            cp, pp = (2379, 2380) if ns else (free_port(), free_port())
            self.members.append(
                Member(
                    f"m{i + 1}", host, cp, pp, ns, base / f"m{i + 1}.data", base / f"m{i + 1}.log"
                )
            )
        self._channels: dict[str, grpc.aio.Channel] = {}
        # member index -> --initial-cluster for a member re-added after removal
        self.joined: dict[int, str] = {}

    @property
    def endpoints(self) -> list[str]:
        return [m.endpoint for m in self.members]

    def args(self, i: int) -> list[str]:
        m = self.members[i]
        initial = ",".join(f"{x.name}=http://{x.host}:{x.peer_port}" for x in self.members)
        cmd = [
            sys.executable, "-m", "kvstore.cli.server_cmd",
            "--name", m.name, "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://{m.host}:{m.client_port}",
            "--advertise-client-urls", f"http://{m.host}:{m.client_port}",
            "--listen-peer-urls", f"http://{m.host}:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://{m.host}:{m.peer_port}",
            "--initial-cluster", initial,
            "--initial-cluster-token", TOKEN,
            "--initial-cluster-state", "new",
            "--snapshot-count", str(SNAPSHOT_COUNT),
            "--experimental-watch-progress-notify-interval", "2s",
        ]  # fmt: skip
        if i in self.joined:
            cmd[cmd.index("--initial-cluster") + 1] = self.joined[i]
            cmd[cmd.index("--initial-cluster-state") + 1] = "existing"
        return (["ip", "netns", "exec", m.ns] if m.ns else []) + cmd

    def spawn(self, i: int, failpoints: str = "") -> None:
        m = self.members[i]
        env = child_env()
        env.pop("KVSTORE_FAILPOINTS", None)
        if failpoints:
            env["KVSTORE_FAILPOINTS"] = failpoints
        with open(m.log_path, "ab") as log:
            log.write(f"\n=== {time.monotonic():.3f} start failpoints={failpoints!r}\n".encode())
            log.flush()
            m.proc = subprocess.Popen(
                self.args(i),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        m.stopped = False

    def alive(self, i: int) -> bool:
        p = self.members[i].proc
        return p is not None and p.poll() is None

    def signal(self, i: int, sig: int) -> None:
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(sig)
            if sig == signal.SIGSTOP:
                m.stopped = True
            elif sig == signal.SIGCONT:
                m.stopped = False

    def kill(self, i: int) -> None:
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.send_signal(signal.SIGCONT)
            m.proc.kill()
            m.proc.wait(timeout=30)
        m.stopped = False

    def stop_all(self) -> None:
        for i, m in enumerate(self.members):
            if m.proc is not None and m.proc.poll() is None:
                self.signal(i, signal.SIGCONT)
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()

    def _channel(self, ep: str) -> grpc.aio.Channel:
        if ep not in self._channels:
            self._channels[ep] = grpc.aio.insecure_channel(ep)
        return self._channels[ep]

    async def status(self, i: int) -> Any | None:
        if not self.alive(i) or self.members[i].stopped:
            return None
        stub = rpc_pb2_grpc.MaintenanceStub(self._channel(self.members[i].endpoint))
        try:
            return await stub.Status(rpc_pb2.StatusRequest(), timeout=1.0)
        except grpc.aio.AioRpcError:
            return None

    async def leader(self) -> int | None:
        for i, s in enumerate(await asyncio.gather(*(self.status(i) for i in range(3)))):
            if s is not None and s.leader and s.leader == s.header.member_id:
                return i
        return None

    async def healthy(self) -> bool:
        st = await asyncio.gather(*(self.status(i) for i in range(3)))
        if any(s is None for s in st):
            return False
        leaders = {s.leader for s in st}
        return len(leaders) == 1 and 0 not in leaders

    async def wait_healthy(self, timeout_s: float) -> None:
        deadline = now() + timeout_s
        while now() < deadline:
            if await self.healthy():
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"cluster not healthy within {timeout_s}s")

    async def watch_leaders(self, history: History, stop: asyncio.Event) -> None:
        """Record each new (term, leader) the first time any member reports it
        (the lease checker's promotions; a late sighting only loosens it)."""
        seen: set[tuple[int, int]] = set()
        while not stop.is_set():
            for s in await asyncio.gather(*(self.status(i) for i in range(3))):
                if s is not None and s.leader and (s.raftTerm, s.leader) not in seen:
                    seen.add((s.raftTerm, s.leader))
                    history.leader_changes.append([now(), s.raftTerm, s.leader])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)

    async def close(self) -> None:
        for ch in self._channels.values():
            await ch.close()


class Nemesis:
    def __init__(self, cfg: RunConfig, cluster: Cluster, history: History) -> None:
        self.cfg = cfg
        self.c = cluster
        self.h = history
        self.rng = random.Random(cfg.seed + 1)
        self.counts: dict[str, int] = {}

    async def target(self, prefer_leader: float = 0.5) -> int:
        if self.rng.random() < prefer_leader:
            lead = await self.c.leader()
            if lead is not None:
                return lead
        return self.rng.randrange(3)

    def _fault(self, kind: str, members: list[int], start: float, **detail: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.h.faults.append(
            {
                "kind": kind,
                "members": [self.c.members[i].name for i in members],
                "start": start,
                "end": now(),
                **detail,
            }
        )

    async def run(self, until: float) -> None:
        while now() < until:
            await asyncio.sleep(self.rng.uniform(1.5, 3.0))
            if now() >= until:
                break
            kind = self.rng.choice(self.cfg.faults)
            try:
                await getattr(self, f"_{kind}")()
            except Exception as exc:  # noqa: BLE001 - record and go on: the run continues
                self.h.notes.append(f"nemesis {kind} failed: {exc!r}")
            # Let the cluster recover before the next fault (one fault at a time).
            with contextlib.suppress(TimeoutError):
                await self.c.wait_healthy(30)

    async def _kill(self) -> None:
        i = await self.target()
        start = now()
        self.c.kill(i)
        await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        self.c.spawn(i)
        self._fault("kill", [i], start)

    async def _stop(self) -> None:
        i = await self.target()
        start = now()
        self.c.signal(i, signal.SIGSTOP)
        await asyncio.sleep(self.rng.uniform(1.0, 3.0))
        self.c.signal(i, signal.SIGCONT)
        self._fault("stop", [i], start)

    async def _failpoint(self) -> None:
        spec = self.rng.choice(self.cfg.failpoint_specs)
        name = spec.split("=")[0]
        # Points on the leader's side are best hit on the leader; a snapshot
        # is received by a member that fell behind, so that one first sits out.
        leader_side = name.startswith(
            (
                "lease_",
                "snapshot_before_send",
                "compact_",
                "snapshot_before_save",
                "snapshot_after_save",
            )
        )
        i = await self.target(prefer_leader=1.0 if leader_side else 0.3)
        start = now()
        self.c.kill(i)
        if name.startswith(
            ("snapshot_before_receive", "snapshot_before_install", "snapshot_after_install")
        ):
            await asyncio.sleep(6.0)  # the others move > SNAPSHOT_COUNT entries ahead
        self.c.spawn(i, failpoints=spec)
        if leader_side:
            await self._make_leader(i)  # a restarted member comes back as a follower
        if name.startswith("defrag_"):
            with contextlib.suppress(Exception):
                await asyncio.sleep(2.0)
                stub = rpc_pb2_grpc.MaintenanceStub(self.c._channel(self.c.members[i].endpoint))  # noqa: SLF001
                await stub.Defragment(rpc_pb2.DefragmentRequest(), timeout=5)
        deadline = now() + 8.0
        while now() < deadline and self.c.alive(i):
            await asyncio.sleep(0.1)
        proc = self.c.members[i].proc
        fired = proc is not None and proc.poll() == 2
        self.c.kill(i)
        self.c.spawn(i)
        self._fault("failpoint", [i], start, spec=spec, fired=fired)

    async def _make_leader(self, i: int, timeout_s: float = 15.0) -> None:
        """Move leadership to member i (MoveLeader through the current leader)."""
        deadline = now() + timeout_s
        while now() < deadline and self.c.alive(i):
            st, lead = await self.c.status(i), await self.c.leader()
            if lead == i:
                return
            if st is not None and lead is not None:
                stub = rpc_pb2_grpc.MaintenanceStub(self.c._channel(self.c.members[lead].endpoint))  # noqa: SLF001
                with contextlib.suppress(grpc.aio.AioRpcError):
                    req = rpc_pb2.MoveLeaderRequest(targetID=st.header.member_id)
                    await stub.MoveLeader(req, timeout=5)
            await asyncio.sleep(0.2)

    async def _membership(self) -> None:
        """Remove a follower, wipe its data dir, add it back as a new member
        (same name and addresses, new member id) and start it empty."""
        lead = await self.c.leader()
        if lead is None:
            return
        i = self.rng.choice([j for j in range(3) if j != lead])
        st = await self.c.status(i)
        if st is None:
            return
        m = self.c.members[i]
        cluster = rpc_pb2_grpc.ClusterStub(self.c._channel(self.c.members[lead].endpoint))  # noqa: SLF001
        start = now()
        await cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=st.header.member_id), timeout=10)
        deadline = now() + 10
        while now() < deadline and self.c.alive(i):
            await asyncio.sleep(0.1)
        exited_by_itself = not self.c.alive(i)
        self.c.kill(i)
        shutil.rmtree(m.data_dir, ignore_errors=True)
        added = await cluster.MemberAdd(
            rpc_pb2.MemberAddRequest(peerURLs=[f"http://{m.host}:{m.peer_port}"]), timeout=10
        )
        self.c.joined[i] = ",".join(
            f"{x.name or m.name}={u}" for x in added.members for u in x.peerURLs
        )
        self.c.spawn(i)
        self._fault("membership", [i], start, removed_member_exited=exited_by_itself)

    # -------------------------------------------------- network (namespaces)
    def _ns(self, i: int) -> str:
        ns = self.c.members[i].ns
        assert ns is not None, "partition faults need network namespaces"
        return ns

    def _ips(self, idx: list[int]) -> list[str]:
        return [self.c.members[i].host for i in idx]

    async def _hold_then_heal(self, lo: float, hi: float) -> None:
        await asyncio.sleep(self.rng.uniform(lo, hi))
        for i in range(3):
            netns.heal(self._ns(i))

    async def _partition_leader(self) -> None:
        """Cut the leader off from its peers; clients still reach it."""
        await self._isolate("partition_leader", prefer_leader=1.0)

    async def _partition_minority(self) -> None:
        await self._isolate("partition_minority", prefer_leader=0.0)

    async def _isolate(self, kind: str, prefer_leader: float) -> None:
        """Cut one member (chosen by `prefer_leader`) off from both peers,
        hold, heal; its clients still reach it."""
        i = await self.target(prefer_leader=prefer_leader)
        others = [j for j in range(3) if j != i]
        start = now()
        netns.cut(self._ns(i), self._ips(others))
        for j in others:
            netns.cut(self._ns(j), self._ips([i]))
        await self._hold_then_heal(2.0, 5.0)
        self._fault(kind, [i], start)

    async def _bridge(self) -> None:
        """Two members cannot talk to each other; both talk to the third."""
        bridge = await self.target(prefer_leader=0.0)
        a, b = [j for j in range(3) if j != bridge]
        start = now()
        netns.cut(self._ns(a), self._ips([b]))
        netns.cut(self._ns(b), self._ips([a]))
        await self._hold_then_heal(2.0, 5.0)
        self._fault("bridge", [bridge], start)

    async def _loss(self) -> None:
        i = await self.target()
        others = [j for j in range(3) if j != i]
        start = now()
        netns.lossy(self._ns(i), self._ips(others), 30)
        await self._hold_then_heal(2.0, 5.0)
        self._fault("loss", [i], start, percent=30)


async def run(cfg: RunConfig) -> dict[str, Any]:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    history = History(seed=cfg.seed)
    cluster = Cluster(cfg, out)
    for i in range(3):
        cluster.spawn(i)
    report: dict[str, Any] = {"seed": cfg.seed, "faults": {}, "notes": history.notes}
    stop_watching = asyncio.Event()
    leaders: asyncio.Task[None] | None = None
    try:
        await cluster.wait_healthy(60)
        leaders = asyncio.create_task(cluster.watch_leaders(history, stop_watching))
        traffic = Traffic(
            TrafficConfig(cluster.endpoints, cfg.seed, stale_reads=cfg.stale_reads), history
        )
        await traffic.start()
        nemesis = Nemesis(cfg, cluster, history)
        await nemesis.run(now() + cfg.duration_s)
        # Quiesce: heal, restart anything down, let the cluster settle.
        for i, m in enumerate(cluster.members):
            if m.ns:
                netns.heal(m.ns)
            cluster.signal(i, signal.SIGCONT)
            if not cluster.alive(i):
                cluster.spawn(i)
        await cluster.wait_healthy(60)
        await traffic.stop_clients()
        history.final_revision = await _final_revision(cluster)
        report["watches_caught_up"] = await traffic.finish_watches(history.final_revision)
        report["hash_kv"] = await _hashes(cluster, history.final_revision)
        await traffic.close()
        report["faults"] = nemesis.counts
        report["failpoints_fired"] = sum(1 for f in history.faults if f.get("fired"))
    finally:
        stop_watching.set()
        if leaders is not None:
            await asyncio.gather(leaders, return_exceptions=True)
        await cluster.close()
        cluster.stop_all()
        history.save(out / "history.json")
        report["operations"] = len(history.ops)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


async def _final_revision(cluster: Cluster) -> int:
    deadline = now() + 30
    while now() < deadline:
        for ep in cluster.endpoints:
            stub = rpc_pb2_grpc.KVStub(cluster._channel(ep))  # noqa: SLF001
            try:
                resp = await stub.Range(
                    rpc_pb2.RangeRequest(
                        key=PREFIX.encode(), range_end=prefix_end(PREFIX).encode(), count_only=True
                    ),
                    timeout=2,
                )
                return int(resp.header.revision)
            except grpc.aio.AioRpcError:
                continue
    return 0


async def _hashes(cluster: Cluster, revision: int) -> dict[str, int]:
    """HashKV of every member at the same revision (etcd's corruption check):
    waits for each member to apply it; the caller compares them."""
    out: dict[str, int] = {}
    for m in cluster.members:
        stub = rpc_pb2_grpc.MaintenanceStub(cluster._channel(m.endpoint))  # noqa: SLF001
        deadline = now() + 30
        while now() < deadline:
            try:
                resp = await stub.HashKV(rpc_pb2.HashKVRequest(revision=revision), timeout=5)
                out[m.name] = int(resp.hash)
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)  # not applied there yet, or busy
    return out


def main() -> None:
    cfg = RunConfig(**json.loads(Path(sys.argv[1]).read_text()))
    report = asyncio.run(run(cfg))
    print(json.dumps(report))


if __name__ == "__main__":
    main()
