"""ProposalWaiters / AppliedIndexWaiter and the member table encoding."""

from __future__ import annotations

import asyncio

import pytest

from kvstore import errors
from kvstore.server.membership import Member, MemberTable
from kvstore.server.waiters import AppliedIndexWaiter, ProposalWaiters


def test_request_ids_are_unique_and_carry_the_member_prefix() -> None:
    w = ProposalWaiters(member_id=0x1111_0000_0000_ABCD, seed=12345)
    ids = [w.next_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(i >> 48 == 0xABCD for i in ids)
    other = ProposalWaiters(member_id=0x1111_0000_0000_1234, seed=12345)
    assert not set(ids) & {other.next_id() for _ in range(10_000)}


def test_trigger_and_fail_resolve_exactly_once() -> None:
    async def main() -> None:
        w = ProposalWaiters(1, seed=0)
        a, b, c = w.next_id(), w.next_id(), w.next_id()
        fa, fb, fc = w.register(a), w.register(b), w.register(c)
        w.trigger(a, "ok")
        w.trigger(a, "again")  # ignored: already resolved and removed
        w.fail(b, errors.TIMEOUT())
        assert len(w) == 1
        w.fail_all(errors.STOPPED())
        assert await fa == "ok"
        with pytest.raises(errors.EtcdError) as info:
            await fb
        assert info.value == errors.TIMEOUT()
        with pytest.raises(errors.EtcdError) as info:
            await fc
        assert info.value == errors.STOPPED()
        assert len(w) == 0

    asyncio.run(asyncio.wait_for(main(), 5))


def test_applied_index_waiter_wakes_in_order() -> None:
    async def main() -> None:
        w = AppliedIndexWaiter(applied=5)
        done_now = w.wait(5)
        f7, f9, f12 = w.wait(7), w.wait(9), w.wait(12)
        assert done_now.done()
        w.advance(9)
        assert f7.done() and f9.done() and not f12.done()
        w.advance(3)  # never goes backwards
        assert w.applied == 9
        w.fail_all(errors.STOPPED())
        with pytest.raises(errors.EtcdError):
            await f12

    asyncio.run(asyncio.wait_for(main(), 5))


def test_member_table_round_trip_keeps_published_client_urls() -> None:
    t = MemberTable([Member(1, "a", ["http://127.0.0.1:1"])])
    t.set_attributes(1, "a", ["http://127.0.0.1:9"])
    t.upsert(Member(1, "", ["http://127.0.0.1:2"]))  # a peer-URL update via conf change
    t.upsert(Member(2, "b", ["http://127.0.0.1:3"], is_learner=True))
    t.remove(2)
    t.set_attributes(2, "b", ["x"])  # attributes of a removed member are ignored
    back = MemberTable.decode(t.encode())
    m = back.get(1)
    assert m is not None
    assert (m.name, m.peer_urls, m.client_urls) == (
        "a",
        ["http://127.0.0.1:2"],
        ["http://127.0.0.1:9"],
    )
    assert 2 not in back and back.removed == {2}
    assert back.peer_urls() == {1: "http://127.0.0.1:2"}
