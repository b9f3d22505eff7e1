"""Leader-side expiry and checkpoints with a FakeClock; leader changes simulated
by switching which member leads (proposals are applied on every member)."""

from __future__ import annotations

import asyncio

import pytest

from kvstore import errors
from kvstore.lease import LeaseIdGen, min_lease_ttl
from kvstore.pb import rpc_pb2
from tests.lease.conftest import Cluster, Member


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def _pass(m: Member) -> None:
    m.service.run_once()
    await m.service.settle()


def leader_pass(m: Member) -> None:
    run(_pass(m))


def grant(m: Member, ttl: int, lease_id: int = 0) -> int:
    return run(m.service.grant(rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id))).ID


def advance_with_passes(cluster: Cluster, seconds: float, step: float = 0.5) -> None:
    """Move the clock in loop-sized steps, running the leader's pass after each."""
    for _ in range(round(seconds / step)):
        cluster.clock.advance(step)
        if cluster.leader is not None:
            leader_pass(cluster.leader)


def test_min_ttl_and_id_choice(cluster: Cluster) -> None:
    m = cluster.members[0]
    assert min_lease_ttl(1.0) == 2
    resp = run(m.service.grant(rpc_pb2.LeaseGrantRequest(TTL=1)))
    assert resp.TTL == 2 and resp.ID > 0
    resp2 = run(m.service.grant(rpc_pb2.LeaseGrantRequest(TTL=-5, ID=42)))
    assert (resp2.ID, resp2.TTL) == (42, 2)
    with pytest.raises(errors.EtcdError) as exc:
        run(m.service.grant(rpc_pb2.LeaseGrantRequest(TTL=9_000_000_001)))
    assert exc.value == errors.LEASE_TTL_TOO_LARGE()


def test_id_generator_is_positive_and_distinct() -> None:
    gen = LeaseIdGen(0xFFFFFFFFFFFFFFFF, now_ms=(1 << 41) - 1)
    ids = [gen.next() for _ in range(1000)]
    assert len(set(ids)) == 1000 and all(0 < i < 1 << 63 for i in ids)


def test_unknown_lease_answers(cluster: Cluster) -> None:
    m = cluster.members[0]
    leader_pass(m)
    assert run(m.service.keepalive(123)).TTL == 0
    assert run(m.service.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=123))).TTL == -1
    with pytest.raises(errors.EtcdError) as exc:
        run(m.service.revoke(rpc_pb2.LeaseRevokeRequest(ID=123)))
    assert exc.value == errors.LEASE_NOT_FOUND()


def test_lease_expires_after_ttl_not_before(cluster: Cluster) -> None:
    m = cluster.members[0]
    leader_pass(m)
    lease = grant(m, 5)
    cluster.put(b"k", lease)
    advance_with_passes(cluster, 4.5)
    assert m.lessor.exists(lease)
    advance_with_passes(cluster, 1.0)
    assert not m.lessor.exists(lease)
    assert not cluster.members[1].lessor.exists(lease)
    assert m.store.range(rpc_pb2.RangeRequest(key=b"k")).count == 0


def test_keepalive_extends_and_time_to_live_reports(cluster: Cluster) -> None:
    m = cluster.members[0]
    leader_pass(m)
    lease = grant(m, 6)
    cluster.put(b"k", lease)
    for _ in range(5):
        advance_with_passes(cluster, 4.0)
        resp = run(m.service.keepalive(lease))
        assert (lease, 6) == (resp.ID, resp.TTL)
    ttl = run(m.service.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease, keys=True)))
    assert (ttl.TTL, ttl.grantedTTL, list(ttl.keys)) == (6, 6, [b"k"])
    advance_with_passes(cluster, 2.5)
    ttl = run(m.service.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease)))
    assert ttl.TTL == 3 and not ttl.keys
    assert lease == m.service.leases().leases[0].ID


def test_checkpoints_are_rate_bounded(cluster: Cluster) -> None:
    m = cluster.members[0]
    leader_pass(m)
    for _ in range(20):
        grant(m, 100)
    cluster.proposals.clear()
    advance_with_passes(cluster, 30.0)
    kinds = [k for k, _ in cluster.proposals]
    # first round 0.5 s after promotion, then one per 2 s interval: at most 16 in 30 s.
    assert 1 <= kinds.count("lease_checkpoint") <= 16
    assert set(kinds) == {"lease_checkpoint"}
    last = [r for k, r in cluster.proposals if k == "lease_checkpoint"][-1]
    assert len(last.checkpoints) == 20


def test_remaining_ttl_survives_leader_change(cluster: Cluster) -> None:
    a, b = cluster.members
    leader_pass(a)
    lease = grant(a, 20)
    cluster.put(b"k", lease)
    advance_with_passes(cluster, 12.0)  # checkpoints record ~8 s left
    cluster.leader = b
    leader_pass(a)  # a notices it lost leadership
    assert not a.leader.active
    leader_pass(b)
    ttl = run(b.service.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease))).TTL
    assert 8 <= ttl <= 13  # never below the true remaining 8 s, bounded above
    advance_with_passes(cluster, 7.5)
    assert b.lessor.exists(lease)  # did not expire early
    advance_with_passes(cluster, 6.0)
    assert not b.lessor.exists(lease)  # and did not restart from the full 20 s


def test_renewal_clears_checkpoint_so_new_leader_grants_full_ttl(cluster: Cluster) -> None:
    a, b = cluster.members
    leader_pass(a)
    lease = grant(a, 10)
    advance_with_passes(cluster, 8.0)
    assert b.lessor.get(lease).remaining_ttl > 0  # checkpointed on followers too
    run(a.service.keepalive(lease))  # renewed to 10 s at t=8
    assert b.lessor.get(lease).remaining_ttl == 0
    cluster.leader = b
    leader_pass(b)
    advance_with_passes(cluster, 9.5)
    assert b.lessor.exists(lease)


def test_repeated_elections_do_not_keep_a_lease_alive(cluster: Cluster) -> None:
    a, b = cluster.members
    leader_pass(a)
    lease = grant(a, 10)
    for i in range(20):  # a new leader every 3 s
        advance_with_passes(cluster, 3.0)
        cluster.leader = cluster.members[(i + 1) % 2]
        for m in cluster.members:
            leader_pass(m)
        if not a.lessor.exists(lease):
            break
    assert not a.lessor.exists(lease)
    # Each election costs at most the time since the last checkpoint plus the
    # whole-second rounding of remaining TTLs (< 1.5 s here): with a new
    # leader every 3 s the 10 s lease lives ~15 s, not forever.
    lifetime = cluster.clock.now() - 1000.0
    assert 10 <= lifetime <= 16


def test_full_restart_keeps_checkpointed_remaining(cluster: Cluster) -> None:
    a, b = cluster.members
    leader_pass(a)
    lease = grant(a, 30)
    advance_with_passes(cluster, 20.0)
    cluster.leader = None
    for m in cluster.members:
        m.reopen()
    cluster.leader = b
    leader_pass(b)
    ttl = run(b.service.time_to_live(rpc_pb2.LeaseTimeToLiveRequest(ID=lease))).TTL
    assert 10 <= ttl <= 15


def test_follower_without_leader_urls_cannot_serve_keepalive(cluster: Cluster) -> None:
    b = cluster.members[1]
    with pytest.raises(errors.EtcdError) as exc:
        run(b.service.keepalive(1))
    assert exc.value == errors.NO_LEADER()
    leader_pass(b)
    assert not b.leader.active and b.leader.expired() == []
