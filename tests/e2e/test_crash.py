"""Crash tests on real `kvstore` processes (LocalCluster): kill -9 the leader
under write load, kill -9 everybody, and check that no acknowledged write is
lost and that every member converges to the same data."""

from __future__ import annotations

import signal

import pytest
from e2e_load import WriteLoad, dump_prefix

from kvstore.devcluster import LocalCluster
from kvstore.testing.waiting import wait_until

pytestmark = pytest.mark.e2e

ELECTION_TIMEOUT_S = 1.0


def assert_converged(cluster: LocalCluster, acked: dict[bytes, bytes], prefix: bytes) -> None:
    """Every member (serializable, local reads) holds every acknowledged write."""
    for i, ep in enumerate(cluster.endpoints):

        def has_all(ep: str = ep) -> bool:
            data = dump_prefix(ep, prefix)
            return all(data.get(k) == v for k, v in acked.items())

        wait_until(has_all, timeout=30, interval=0.2, what=f"member {i} holds all acked writes")
    # And they all hold the same data (including writes whose ack was lost).
    dumps = [dump_prefix(ep, prefix) for ep in cluster.endpoints]
    assert all(d == dumps[0] for d in dumps)


def test_kill_leader_under_write_load_loses_no_acknowledged_write(tmp_path) -> None:
    with LocalCluster(size=3, base_dir=tmp_path) as cluster:
        old = cluster.wait_leader(timeout=30)
        load = WriteLoad(cluster.endpoints, writers=3, per_writer=300, max_seconds=20).start()
        wait_until(lambda: load.acked_count() >= 30, timeout=30, what="30 acked writes")
        cluster.kill(old, signal.SIGKILL)
        new = cluster.wait_leader(timeout=10 * ELECTION_TIMEOUT_S, exclude=(old,))
        assert new != old
        acked_before_restart = load.acked_count()
        wait_until(
            lambda: load.acked_count() > acked_before_restart,
            timeout=30,
            what="writes continue under the new leader",
        )
        cluster.restart(old)
        load.join(timeout=60)
        cluster.wait_healthy(60)
        assert load.acked_count() > 30
        assert_converged(cluster, dict(load.acked), load.prefix)


def test_kill_all_members_and_restart_loses_nothing(tmp_path) -> None:
    with LocalCluster(size=3, base_dir=tmp_path) as cluster:
        load = WriteLoad(cluster.endpoints, writers=3, per_writer=60, max_seconds=20).start()
        load.join(timeout=60)
        acked = dict(load.acked)
        assert len(acked) >= 100
        for i in range(3):
            cluster.kill(i, signal.SIGKILL)
        for i in range(3):
            cluster.restart(i)
        cluster.wait_healthy(60)
        # Linearizable read through the leader path on every member.
        for ep in cluster.endpoints:
            data = wait_until(
                lambda ep=ep: dump_prefix(ep, load.prefix, serializable=False),
                timeout=30,
                what="linearizable read after restart",
            )
            missing = [k for k, v in acked.items() if data.get(k) != v]
            assert not missing, f"{len(missing)} acknowledged writes lost on {ep}"
        assert_converged(cluster, acked, load.prefix)
