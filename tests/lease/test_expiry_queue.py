"""LeaderLeases' expiry queue (a heap with stale entries) against a plain model:
random grants, renewals, revokes and failed revokes, with a FakeClock; every
pass must return exactly the leases whose deadline (or revoke retry) is due,
earliest first, and never one that was renewed or revoked."""

from __future__ import annotations

import random

import pytest

from kvstore.lease import FakeClock, LeaderLeases, Lessor
from kvstore.lease.leader import REVOKE_RETRY_S
from kvstore.pb import rpc_pb2


class _Batch:
    def put_raw(self, *a: object) -> None: ...

    def delete_raw(self, *a: object) -> None: ...

    def txn(self, req: object) -> rpc_pb2.TxnResponse:
        return rpc_pb2.TxnResponse()


@pytest.mark.parametrize("seed", range(8))
def test_expired_matches_a_scan_of_every_lease(seed: int) -> None:
    rnd = random.Random(seed)
    lessor, clock = Lessor(), FakeClock()
    leader = LeaderLeases(lessor, clock, max_revokes=10**9)
    batch = _Batch()
    next_id = 1
    for _ in range(20):
        lessor.apply_grant(batch, rpc_pb2.LeaseGrantRequest(ID=next_id, TTL=rnd.randint(2, 9)))
        next_id += 1
    leader.promote()
    deadline = {i: clock.now() + lessor.get(i).ttl for i in lessor.ids()}
    retry: dict[int, float] = {}

    def check_pass() -> None:
        now = clock.now()
        due = {i: retry.get(i, deadline[i]) for i in deadline}
        want = sorted((t, i) for i, t in due.items() if t <= now)
        got = leader.expired()
        assert got == [i for _, i in want]
        for i in got:
            retry[i] = now + REVOKE_RETRY_S

    for _ in range(300):
        op = rnd.random()
        ids = lessor.ids()
        if op < 0.25:
            lessor.apply_grant(batch, rpc_pb2.LeaseGrantRequest(ID=next_id, TTL=rnd.randint(2, 9)))
            deadline[next_id] = clock.now() + lessor.get(next_id).ttl
            next_id += 1
            check_pass()  # the pass gives the new lease its deadline
        elif op < 0.5 and ids:
            i = rnd.choice(ids)
            ttl, _ = leader.renew(i)
            if i not in retry and deadline[i] > clock.now():
                assert ttl == lessor.get(i).ttl
                deadline[i] = clock.now() + ttl
            else:
                assert ttl == 0
        elif op < 0.6 and ids:
            i = rnd.choice(ids)
            lessor.apply_revoke(batch, rpc_pb2.LeaseRevokeRequest(ID=i))
            deadline.pop(i)
            retry.pop(i, None)
        elif op < 0.65 and retry:
            i = rnd.choice(sorted(retry))
            leader.revoke_failed(i)
            retry[i] = clock.now()
        else:
            clock.advance(rnd.choice([0.25, 0.5, 1.0]))
            check_pass()
