"""Watch and lease on real `kvstore` processes (LocalCluster) with real etcdctl.

etcdctl's own commands (watch --prefix/--rev/--prev-kv, lease grant /
keep-alive --once / timetolive --keys / list / revoke, put --lease, lock)
against a 3-member cluster, and the lease expiry bound: a key attached to
a 5 s lease outlives its TTL and is deleted within TTL + one election
timeout (+ the expiry check period) after keepalives stop.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from kvstore.devcluster import LocalCluster
from kvstore.testing.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed"),
]

ELECTION_TIMEOUT_S = 1.0
EXPIRY_CHECK_S = 0.5  # the leader's expiry pass period (etcd: 500 ms)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(size=3, base_dir=tmp_path_factory.mktemp("wl")) as c:
        c.wait_leader(timeout=30)
        # Followers forward keepalives to the leader's client URL, which each
        # member publishes through Raft once it runs (etcd's publish).
        wait_until(lambda: all_published(c), timeout=30, what="client URLs published")
        yield c


def all_published(cluster: LocalCluster) -> bool:
    out = cluster.etcdctl("member", "list").stdout
    return all(f"http://{ep}" in out for ep in cluster.endpoints)


def ctl(cluster: LocalCluster, *args: str, endpoint: int | None = None) -> str:
    eps = [cluster.endpoints[endpoint]] if endpoint is not None else None
    out = cluster.etcdctl(*args, endpoints=eps)
    assert out.returncode == 0, f"etcdctl {' '.join(args)}: {out.stderr}{out.stdout}"
    return out.stdout


def grant(cluster: LocalCluster, ttl: int) -> str:
    out = ctl(cluster, "lease", "grant", str(ttl))
    m = re.match(r"lease ([0-9a-f]+) granted with TTL\((\d+)s\)", out)
    assert m, out
    return m.group(1)


def exists(cluster: LocalCluster, key: str) -> bool:
    return ctl(cluster, "get", key, "--print-value-only") != ""


def revision_of(cluster: LocalCluster, key: str) -> int:
    return int(re.search(r'"revision":(\d+)', ctl(cluster, "get", key, "-w", "json")).group(1))


class Lines:
    """Collects a child process's stdout lines from a reader thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=10)


def etcdctl_bg(cluster: LocalCluster, *args: str, endpoint: int = 0) -> Lines:
    proc = subprocess.Popen(
        ["etcdctl", "--endpoints", cluster.endpoints[endpoint], *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    return Lines(proc)


def test_watch_prefix_rev_prev_kv_on_a_follower(cluster: LocalCluster) -> None:
    ctl(cluster, "put", "w/a", "1")
    rev = revision_of(cluster, "w/a")
    ctl(cluster, "put", "w/b", "2")
    ctl(cluster, "put", "other", "x")
    leader = cluster.leader_index()
    follower = next(i for i in range(3) if i != leader)
    watch = etcdctl_bg(cluster, "watch", "--prefix", "w/", "--rev", str(rev), "--prev-kv",
                       endpoint=follower)  # fmt: skip
    try:
        wait_until(lambda: watch.lines[:6] == ["PUT", "w/a", "1", "PUT", "w/b", "2"],
                   timeout=20, what="history replay")  # fmt: skip
        ctl(cluster, "put", "w/a", "3")
        ctl(cluster, "del", "w/b")
        # --prev-kv prints the previous key/value before the new one.
        expected = ["PUT", "w/a", "1", "w/a", "3", "DELETE", "w/b", "2", "w/b"]
        wait_until(lambda: watch.lines[6:15] == expected, timeout=20, what="live events")
        assert not any("other" in line for line in watch.lines)
    finally:
        watch.stop()


def test_watch_from_compacted_revision_is_canceled(cluster: LocalCluster) -> None:
    ctl(cluster, "put", "c/k", "1")
    ctl(cluster, "put", "c/k", "2")
    ctl(cluster, "compaction", str(revision_of(cluster, "c/k")))
    out = cluster.etcdctl("watch", "c/k", "--rev", "1")
    assert "required revision has been compacted" in out.stdout + out.stderr


def test_lease_commands(cluster: LocalCluster) -> None:
    lease = grant(cluster, 60)
    ctl(cluster, "put", "--lease", lease, "l/k1", "v")
    ctl(cluster, "put", "--lease", lease, "l/k2", "v")
    ttl = ctl(cluster, "lease", "timetolive", lease, "--keys")
    assert f"lease {lease} granted with TTL(60s)" in ttl
    assert "attached keys([l/k1 l/k2])" in ttl
    assert lease in ctl(cluster, "lease", "list")
    # keep-alive through every member (followers forward to the leader)
    for i in range(3):
        out = ctl(cluster, "lease", "keep-alive", "--once", lease, endpoint=i)
        assert f"lease {lease} keepalived with TTL(60)" in out
    ctl(cluster, "lease", "revoke", lease)
    assert not exists(cluster, "l/k1") and not exists(cluster, "l/k2")
    assert "already expired" in ctl(cluster, "lease", "timetolive", lease)
    bad = cluster.etcdctl("put", "--lease", "1234abcd", "l/k3", "v")
    assert bad.returncode != 0 and "requested lease not found" in bad.stderr


def test_min_ttl_is_granted(cluster: LocalCluster) -> None:
    assert "granted with TTL(2s)" in ctl(cluster, "lease", "grant", "1")


def test_lease_expires_after_keepalives_stop(cluster: LocalCluster) -> None:
    ttl = 5
    lease = grant(cluster, ttl)
    ctl(cluster, "put", "--lease", lease, "exp/k", "v")
    keeper = etcdctl_bg(cluster, "lease", "keep-alive", lease)
    try:
        # etcdctl renews every TTL/3: five renewals span more than the TTL.
        wait_until(lambda: len(keeper.lines) >= 5, timeout=30, what="five keepalives")
        assert all("keepalived with TTL(5)" in line for line in keeper.lines)
        assert exists(cluster, "exp/k")
    finally:
        keeper.stop()
    stopped = time.monotonic()
    # Not before the TTL: the last keepalive was at or before `stopped`.
    while time.monotonic() - stopped < ttl - 1.0:
        assert exists(cluster, "exp/k"), "key deleted before its lease's TTL"
    bound = ttl + ELECTION_TIMEOUT_S + EXPIRY_CHECK_S
    wait_until(lambda: not exists(cluster, "exp/k"), timeout=bound + 2.0,
               interval=0.1, what="the lease to expire")  # fmt: skip
    elapsed = time.monotonic() - stopped
    assert elapsed <= bound + 1.0, f"expired after {elapsed:.2f}s (bound {bound}s)"


def test_etcdctl_lock(cluster: LocalCluster) -> None:
    assert "locked" in ctl(cluster, "lock", "mylock", "echo", "locked")


def test_etcdctl_lock_contended(cluster: LocalCluster) -> None:
    first = etcdctl_bg(cluster, "lock", "contended")
    second = None
    try:
        wait_until(lambda: first.lines, timeout=20, what="the first holder")
        second = etcdctl_bg(cluster, "lock", "contended", endpoint=1)
        two = lambda: len(ctl(cluster, "get", "--prefix", "contended/", "--keys-only").split())  # noqa: E731
        wait_until(lambda: two() == 2, timeout=20, what="the second waiter's key")
        assert second.lines == []  # queued behind the holder
        first.proc.send_signal(signal.SIGTERM)  # etcdctl unlocks and revokes on SIGTERM
        wait_until(lambda: second.lines, timeout=20, what="the second holder")
        assert second.lines[0].startswith("contended/")
    finally:
        first.stop()
        if second is not None:
            second.stop()
