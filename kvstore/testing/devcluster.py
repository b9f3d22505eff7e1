"""Local multi-process kvstore clusters: LocalCluster for tests, and a CLI.

Owns: starting `size` real `kvstore` server processes on 127.0.0.1 with data
dirs and logs under one base dir, killing/restarting them, and waiting for
health (every live member reports the same leader through the Status RPC).
Same shape as kvstore.testing.etcd_cluster.EtcdCluster, so tests and
benchmarks can run the same code against both.

    python -m kvstore.devcluster up [--size 3] [--dir .cluster]   # detached (kvstore/devcluster.py)
    python -m kvstore.devcluster status [--dir .cluster]
    python -m kvstore.devcluster down [--dir .cluster]

Never: binds anything but 127.0.0.1; never deletes a base dir it did not create.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from kvstore.testing.waiting import free_port, wait_until

STATE_FILE = "cluster.json"
# Children import kvstore from the same tree as this process, installed or not.
_SOURCE_ROOT = str(Path(__file__).resolve().parents[2])  # the repo root (kvstore/testing/../..)
TOKEN = "kvstore-local"


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None
    pid: int | None = None  # also known for members started by another process (CLI up)
    metrics_port: int = 0  # /metrics, /health, /version when > 0


class LocalCluster:
    """`size` kvstore members on 127.0.0.1 with data dirs under `base_dir`."""

    def __init__(
        self,
        size: int = 3,
        base_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
        ports: list[tuple[int, int]] | None = None,
        metrics: bool = False,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="kvstore-cluster-"))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.extra_args = tuple(extra_args)
        ports = ports or [(free_port(host), free_port(host)) for _ in range(size)]
        self.members = [
            _Member(
                name=f"kv{i + 1}",
                client_port=cp,
                peer_port=pp,
                data_dir=self.base_dir / f"kv{i + 1}.kvstore",
                log_path=self.base_dir / f"kv{i + 1}.log",
            )
            for i, (cp, pp) in enumerate(ports)
        ]
        if metrics:
            for m in self.members:
                m.metrics_port = free_port(host)
        # Members started with --initial-cluster-state existing: name -> the
        # --initial-cluster they were given (see start_joined).
        self._joined: dict[str, str] = {}

    # ------------------------------------------------------------ addresses
    @property
    def endpoints(self) -> list[str]:
        return [f"{self.host}:{m.client_port}" for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{self.host}:{m.peer_port}" for m in self.members)

    def args(self, i: int) -> list[str]:
        m = self.members[i]
        args = [
            sys.executable, "-m", "kvstore.cli.server_cmd",
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://{self.host}:{m.client_port}",
            "--advertise-client-urls", f"http://{self.host}:{m.client_port}",
            "--listen-peer-urls", f"http://{self.host}:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{m.peer_port}",
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", TOKEN,
            "--initial-cluster-state", "new",
            *(["--listen-metrics-urls", f"http://{self.host}:{m.metrics_port}"]
              if m.metrics_port else []),
            *self.extra_args,
        ]  # fmt: skip
        if m.name in self._joined:
            args[args.index("--initial-cluster") + 1] = self._joined[m.name]
            args[args.index("--initial-cluster-state") + 1] = "existing"
        return args

    # ------------------------------------------------------------ membership
    def index(self, name: str) -> int:
        return next(i for i, m in enumerate(self.members) if m.name == name)

    def peer_url(self, name: str) -> str:
        return f"http://{self.host}:{self.members[self.index(name)].peer_port}"

    def reserve(self, name: str) -> _Member:
        """A new member slot with fresh ports, not started (add it with
        MemberAdd, then start_joined)."""
        m = _Member(
            name=name,
            client_port=free_port(self.host),
            peer_port=free_port(self.host),
            data_dir=self.base_dir / f"{name}.kvstore",
            log_path=self.base_dir / f"{name}.log",
        )
        self.members.append(m)
        return m

    def start_joined(self, name: str, listed: list[Any]) -> None:
        """Start reserved member `name` with --initial-cluster-state existing;
        `listed`: the MemberList members (pb) of the running cluster."""
        initial = [f"{m.name}={u}" for m in listed if m.name and m.name != name for u in m.peerURLs]
        initial.append(f"{name}={self.peer_url(name)}")
        self._joined[name] = ",".join(initial)
        self._spawn(self.index(name))

    def retire(self, name: str) -> None:
        """Kill a removed member's process and forget it."""
        i = self.index(name)
        self.kill(i, signal.SIGKILL)
        del self.members[i]

    def live_endpoints(self) -> list[str]:
        return [ep for i, ep in enumerate(self.endpoints) if self.alive(i)]

    def member_id(self, name: str) -> int:
        return self.status(self.index(name)).header.member_id

    # ------------------------------------------------------------ processes
    def _spawn(self, i: int, detach: bool = False) -> None:
        m = self.members[i]
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child process
        env = child_env()
        m.proc = subprocess.Popen(
            self.args(i),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=detach,
        )
        m.pid = m.proc.pid
        log.close()

    def start(self, timeout: float = 60.0, detach: bool = False) -> LocalCluster:
        for i in range(len(self.members)):
            self._spawn(i, detach=detach)
        try:
            self.wait_healthy(timeout)
        except BaseException:
            if not detach:
                self.stop()
            raise
        return self

    def alive(self, i: int) -> bool:
        m = self.members[i]
        if m.proc is not None:
            return m.proc.poll() is None
        return m.pid is not None and _pid_alive(m.pid)

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        m = self.members[i]
        if m.proc is not None:
            if m.proc.poll() is None:
                m.proc.send_signal(sig)
                m.proc.wait(timeout=30)
        elif m.pid is not None and _pid_alive(m.pid):
            os.kill(m.pid, sig)
            wait_until(lambda: not _pid_alive(m.pid), timeout=30, what=f"{m.name} exit")

    def restart(self, i: int, wait: bool = False, timeout: float = 60.0) -> None:
        """Kill member i (SIGKILL if still running) and start it on the same data dir."""
        self.kill(i)
        self._spawn(i)
        if wait:
            self.wait_member_ready(i, timeout)

    def stop(self) -> None:
        for m in self.members:
            if m.proc is not None and m.proc.poll() is None:
                m.proc.terminate()
        for m in self.members:
            if m.proc is not None:
                try:
                    m.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    m.proc.kill()
                    m.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- health
    def status(self, i: int, timeout: float = 2.0) -> Any:
        """Maintenance/Status of member i (raises grpc.RpcError if down)."""
        # Deferred: `devcluster up|down` never loads grpc; only status does.
        import grpc

        from kvstore.pb import rpc_pb2, rpc_pb2_grpc

        with grpc.insecure_channel(self.endpoints[i]) as ch:
            return rpc_pb2_grpc.MaintenanceStub(ch).Status(rpc_pb2.StatusRequest(), timeout=timeout)

    def _statuses(self) -> list[Any | None]:
        out: list[Any | None] = []
        for i in range(len(self.members)):
            try:
                out.append(self.status(i) if self.alive(i) else None)
            except Exception:  # noqa: BLE001 - a member that is down has no status
                out.append(None)
        return out

    def healthy(self) -> bool:
        """Every live member answers Status and all agree on one leader."""
        statuses = self._statuses()
        live = [s for i, s in enumerate(statuses) if self.alive(i)]
        if not live or any(s is None for s in live):
            return False
        leaders = {s.leader for s in live}
        return len(leaders) == 1 and 0 not in leaders

    def wait_healthy(self, timeout: float = 60.0) -> None:
        wait_until(self.healthy, timeout=timeout, interval=0.1, what="kvstore cluster healthy")

    def wait_member_ready(self, i: int, timeout: float = 60.0) -> None:
        def ready() -> bool:
            return bool(self.alive(i) and self.status(i).leader)

        wait_until(ready, timeout=timeout, interval=0.1, what=f"{self.members[i].name} ready")

    def leader_index(self) -> int | None:
        """Index of the member that is leader according to itself, or None."""
        for i, s in enumerate(self._statuses()):
            if s is not None and s.leader and s.leader == s.header.member_id:
                return i
        return None

    def wait_leader(self, timeout: float = 30.0, exclude: tuple[int, ...] = ()) -> int:
        """Wait until some member (not in `exclude`) is leader; return its index."""

        def found() -> tuple[int] | None:
            i = self.leader_index()
            return (i,) if i is not None and i not in exclude else None

        (i,) = wait_until(found, timeout=timeout, interval=0.05, what="a leader")
        return i

    def etcdctl(self, *args: str, input: str | None = None, endpoints: list[str] | None = None):
        """Run etcdctl (if installed) against this cluster; returns CompletedProcess."""
        return subprocess.run(
            ["etcdctl", "--endpoints", ",".join(endpoints or self.endpoints), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    # ------------------------------------------------------ detached state
    def save_state(self) -> None:
        state = {
            "host": self.host,
            "members": [
                {
                    "name": m.name,
                    "client_port": m.client_port,
                    "peer_port": m.peer_port,
                    "pid": m.pid,
                }
                for m in self.members
            ],
        }
        (self.base_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    @classmethod
    def load_state(cls, base_dir: Path) -> LocalCluster:
        state = json.loads((base_dir / STATE_FILE).read_text())
        cluster = cls(
            size=len(state["members"]),
            base_dir=base_dir,
            host=state["host"],
            ports=[(m["client_port"], m["peer_port"]) for m in state["members"]],
        )
        for m, saved in zip(cluster.members, state["members"], strict=True):
            m.pid = saved.get("pid")
        return cluster


def child_env() -> dict[str, str]:
    """Environment for child `kvstore` processes: unbuffered, kvstore importable."""
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": _SOURCE_ROOT + (os.pathsep + path if path else ""),
    }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours still "exists"; check /proc where available.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def _port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _default_ports(size: int) -> list[tuple[int, int]]:
    """etcd's Procfile ports (2379, 22379, 32379, ...) when free, else random."""
    bases = [2379, 22379, 32379, 42379, 52379]
    ports = [(b, b + 1) for b in bases[:size]]
    if len(ports) == size and all(_port_free(c) and _port_free(p) for c, p in ports):
        return ports
    return [(free_port(), free_port()) for _ in range(size)]


# --------------------------------------------------------------------- CLI
@click.group()
def cli() -> None:
    """Run a local kvstore cluster in the background."""


@cli.command()
@click.option("--size", type=int, default=3, show_default=True)
@click.option("--dir", "base_dir", default=".cluster", show_default=True)
@click.option("--timeout", type=float, default=60.0, show_default=True)
def up(size: int, base_dir: str, timeout: float) -> None:
    """Start the cluster detached; pids, data and logs go in --dir."""
    path = Path(base_dir).resolve()
    if (path / STATE_FILE).exists():
        existing = LocalCluster.load_state(path)
        if any(existing.alive(i) for i in range(len(existing.members))):
            raise click.ClickException(
                f"a cluster is already running from {path} (use 'down' first)"
            )
        cluster = existing  # restart on the same data dirs and ports
    else:
        cluster = LocalCluster(size=size, base_dir=path, ports=_default_ports(size))
    cluster._own_dir = False  # noqa: SLF001 - never delete a user-named dir
    for i in range(len(cluster.members)):
        cluster._spawn(i, detach=True)  # noqa: SLF001
    cluster.save_state()
    try:
        cluster.wait_healthy(timeout)
    except Exception as exc:
        raise click.ClickException(
            f"cluster did not become healthy within {timeout}s; see logs in {path}"
        ) from exc
    eps = ",".join(cluster.endpoints)
    click.echo(f"kvstore cluster of {len(cluster.members)} up; data and logs in {path}")
    for m, ep in zip(cluster.members, cluster.endpoints, strict=True):
        click.echo(f"  {m.name}: {ep} (pid {m.pid})")
    click.echo(f"try:  kvctl --endpoints {eps} put foo bar")
    click.echo(f"      ETCDCTL_API=3 etcdctl --endpoints {eps} get foo")


@cli.command()
@click.option("--dir", "base_dir", default=".cluster", show_default=True)
def down(base_dir: str) -> None:
    """Stop the cluster started by 'up' (SIGTERM, then SIGKILL after 15 s)."""
    path = Path(base_dir).resolve()
    if not (path / STATE_FILE).exists():
        raise click.ClickException(f"no cluster state in {path}")
    cluster = LocalCluster.load_state(path)
    for m in cluster.members:
        if m.pid and _pid_alive(m.pid):
            os.kill(m.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for m in cluster.members:
        while m.pid and _pid_alive(m.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if m.pid and _pid_alive(m.pid):
            os.kill(m.pid, signal.SIGKILL)
    click.echo(f"kvstore cluster in {path} stopped (data kept; 'up' restarts it)")


@cli.command()
@click.option("--dir", "base_dir", default=".cluster", show_default=True)
def status(base_dir: str) -> None:
    """Show each member: pid, endpoint, leader, term, applied index."""
    path = Path(base_dir).resolve()
    if not (path / STATE_FILE).exists():
        raise click.ClickException(f"no cluster state in {path}")
    cluster = LocalCluster.load_state(path)
    for i, m in enumerate(cluster.members):
        ep = cluster.endpoints[i]
        if not cluster.alive(i):
            click.echo(f"{m.name} {ep} down")
            continue
        try:
            s = cluster.status(i)
        except Exception:  # noqa: BLE001
            click.echo(f"{m.name} {ep} pid {m.pid} not answering")
            continue
        role = "leader" if s.leader == s.header.member_id else "follower"
        click.echo(
            f"{m.name} {ep} pid {m.pid} id {s.header.member_id:x} {role} "
            f"term {s.raftTerm} index {s.raftIndex} applied {s.raftAppliedIndex}"
        )


if __name__ == "__main__":
    cli()
