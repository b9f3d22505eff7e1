"""Start a real etcd cluster (Debian's `etcd` binary) on loopback.

Used by compatibility tests (same commands against etcd and kvstore, outputs
compared), client tests (same assertions against both) and benchmarks
(side-by-side figures). Mirrors the shape of `kvstore.testing.devcluster.LocalCluster`:
`endpoints`, `start()`, `stop()`, `kill(i)`, `restart(i)`, context manager.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kvstore.testing.waiting import free_port, wait_until

ETCD_BIN = os.environ.get("ETCD_BIN", "etcd")
ETCDCTL_BIN = os.environ.get("ETCDCTL_BIN", "etcdctl")


def etcd_available() -> bool:
    return shutil.which(ETCD_BIN) is not None and shutil.which(ETCDCTL_BIN) is not None


def etcdctl_available() -> bool:
    """Enough to drive a kvstore cluster with the real etcdctl (no etcd server)."""
    return shutil.which(ETCDCTL_BIN) is not None


@dataclass
class _Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen | None = None


class EtcdCluster:
    """`size` etcd members on 127.0.0.1 with fresh data dirs under `base_dir`."""

    def __init__(
        self,
        size: int = 3,
        base_dir: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix="etcd-cluster-"))
        self.host = host
        self.extra_args = extra_args
        self.members = [
            _Member(
                name=f"etcd{i + 1}",
                client_port=free_port(host),
                peer_port=free_port(host),
                data_dir=self.base_dir / f"etcd{i + 1}.etcd",
                log_path=self.base_dir / f"etcd{i + 1}.log",
            )
            for i in range(size)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [f"{self.host}:{m.client_port}" for m in self.members]

    def _initial_cluster(self) -> str:
        return ",".join(f"{m.name}=http://{self.host}:{m.peer_port}" for m in self.members)

    def _spawn(self, m: _Member) -> None:
        args = [
            ETCD_BIN,
            "--name", m.name,
            "--data-dir", str(m.data_dir),
            "--listen-client-urls", f"http://{self.host}:{m.client_port}",
            "--advertise-client-urls", f"http://{self.host}:{m.client_port}",
            "--listen-peer-urls", f"http://{self.host}:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://{self.host}:{m.peer_port}",
            "--initial-cluster", self._initial_cluster(),
            "--initial-cluster-token", "kvstore-test-etcd",
            "--initial-cluster-state", "new",
            *self.extra_args,
        ]  # fmt: skip
        log = open(m.log_path, "ab")  # noqa: SIM115 - owned by the child process
        m.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def start(self, timeout: float = 30.0) -> EtcdCluster:
        for m in self.members:
            self._spawn(m)
        self.wait_healthy(timeout)
        return self

    def healthy(self) -> bool:
        out = subprocess.run(
            [ETCDCTL_BIN, "--endpoints", ",".join(self.endpoints), "endpoint", "health"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.returncode == 0

    def wait_healthy(self, timeout: float = 30.0) -> None:
        wait_until(self.healthy, timeout=timeout, interval=0.2, what="etcd cluster healthy")

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.members[i].proc
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=30)

    def restart(self, i: int) -> None:
        self.kill(i)
        self._spawn(self.members[i])

    def etcdctl(self, *args: str, input: str | None = None, endpoints: list[str] | None = None):
        """Run etcdctl against this cluster; returns the CompletedProcess."""
        return subprocess.run(
            [ETCDCTL_BIN, "--endpoints", ",".join(endpoints or self.endpoints), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=30,
            env={**os.environ, "ETCDCTL_API": "3"},
        )

    def stop(self) -> None:
        # SIGKILL: these are throwaway test members, and a graceful stop of
        # all members at once makes each wait seconds for lost peers.
        for m in self.members:
            if m.proc and m.proc.poll() is None:
                m.proc.kill()
        for m in self.members:
            if m.proc:
                m.proc.wait()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
