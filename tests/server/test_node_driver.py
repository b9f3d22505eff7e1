"""NodeDriver + KvServer over the real RaftCore, with in-memory storage and a
loopback network (server_fakes.py), so the driver's ordering, batching, ReadIndex
and failure paths are tested fast and deterministically-enough (all waits are
conditions with deadlines; the core's randomness is seeded).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from server_fakes import DictStore, LoopbackNetwork, SavingMemoryLog

from kvstore import errors
from kvstore.pb import internal_pb2, rpc_pb2
from kvstore.raft.core import RaftConfig
from kvstore.raft.types import Entry, EntryType
from kvstore.server.applier import APPLIED_INDEX_KEY, Applier
from kvstore.server.assembly import build_raft_member
from kvstore.server.datadir import bootstrap_log
from kvstore.server.kv_server import KvServer, txn_is_read_only
from kvstore.server.membership import Member, MemberTable
from kvstore.server.node import NodeDriver
from kvstore.storage.codec import decode_u64
from kvstore.testing.waiting import async_wait_until

TICK_S = 0.01


class Harness:
    def __init__(self, size: int = 3, seed: int = 7, snapshot_count: int = 100_000) -> None:
        self.snapshot_count = snapshot_count
        self.ids = list(range(1, size + 1))
        self.net = LoopbackNetwork()
        self.rng = random.Random(seed)
        self.stores: dict[int, DictStore] = {}
        self.logs: dict[int, SavingMemoryLog] = {}
        self.drivers: dict[int, NodeDriver] = {}
        self.kvs: dict[int, KvServer] = {}
        for node_id in self.ids:
            self._build(node_id)

    def _build(self, node_id: int, applied: int = 0) -> None:
        peers = [Member(i, f"n{i}", [f"http://127.0.0.1:{i}"]) for i in self.ids]
        log = self.logs.get(node_id)
        if log is None:  # a brand-new member: the bootstrap entries, as on disk
            log = SavingMemoryLog()
            bootstrap_log(log, peers)
        store = self.stores.get(node_id) or DictStore()
        members = MemberTable(peers)
        # The node's own Raft half, built as NodeParts builds it, over
        # in-memory storage and the loopback network.
        raft = build_raft_member(
            RaftConfig(
                id=node_id, election_ticks=10, heartbeat_ticks=1, pre_vote=True,
                check_quorum=True, max_size_per_msg=1 << 20, max_inflight_msgs=256,
                applied=applied,
            ),
            cluster_id=99, store=store, members=members, log_storage=log,
            transport=self.net.transport(node_id), rng=random.Random(self.rng.random()),
            tick_interval_s=TICK_S, election_timeout_s=10 * TICK_S, request_timeout_s=2.0,
            persist_in_thread=False, snapshot_count=self.snapshot_count,
        )  # fmt: skip
        driver = raft.driver
        self.logs[node_id], self.stores[node_id] = log, store
        self.drivers[node_id] = driver
        self.kvs[node_id] = KvServer(
            driver, store, members, cluster_id=99, member_id=node_id, proposer=raft.proposer
        )
        self.net.nodes[node_id] = driver

    def start(self) -> None:
        for d in self.drivers.values():
            d.start()

    async def stop(self) -> None:
        for d in self.drivers.values():
            await d.stop()

    async def leader(self, exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        def agreed() -> int:
            live = [i for i in self.ids if i not in exclude]
            leaders = {self.drivers[i].leader_id for i in live}
            (lid,) = leaders if len(leaders) == 1 else (0,)
            return lid if lid in live else 0

        return await async_wait_until(agreed, timeout=10, what="one agreed leader")


def run(body: Callable[[Harness], Awaitable[Any]], size: int = 3, **kw: Any) -> None:
    async def main() -> None:
        h = Harness(size, **kw)
        h.start()
        try:
            await body(h)
        finally:
            await h.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def put(key: bytes, value: bytes) -> Any:
    return rpc_pb2.PutRequest(key=key, value=value)


def get(key: bytes, serializable: bool = False) -> Any:
    return rpc_pb2.RangeRequest(key=key, serializable=serializable)


def test_put_through_a_follower_is_applied_everywhere_and_read_linearizably() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        follower = next(i for i in h.ids if i != leader)
        resp = await h.kvs[follower].put(put(b"k", b"v1"))
        assert resp.header.member_id == follower and resp.header.cluster_id == 99
        assert resp.header.revision >= 2 and resp.header.raft_term >= 1
        for i in h.ids:  # linearizable read on every member sees the write at once
            got = await h.kvs[i].range(get(b"k"))
            assert [kv.value for kv in got.kvs] == [b"v1"]

    run(body)


def test_many_concurrent_proposals_share_ready_batches() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        before = h.drivers[leader].stats.ready_batches
        n = 300
        resps = await asyncio.gather(
            *(h.kvs[h.ids[i % 3]].put(put(b"k%d" % i, b"v")) for i in range(n))
        )
        revs = sorted(r.header.revision for r in resps)
        assert len(set(revs)) == n  # each write got its own revision
        assert h.drivers[leader].stats.ready_batches - before < n
        await async_wait_until(lambda: all(len(h.stores[i].data) == n for i in h.ids), timeout=10)

    run(body)


def test_batched_read_index_serves_many_reads() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        follower = next(i for i in h.ids if i != leader)
        await h.kvs[leader].put(put(b"r", b"1"))
        reads = await asyncio.gather(*(h.kvs[follower].range(get(b"r")) for _ in range(200)))
        assert all(r.kvs[0].value == b"1" for r in reads)

    run(body)


def test_new_leader_after_the_leader_is_cut_off_and_writes_continue() -> None:
    async def body(h: Harness) -> None:
        old = await h.leader()
        await h.kvs[old].put(put(b"a", b"1"))
        h.net.down.add(old)
        new = await h.leader(exclude={old})
        assert new != old
        await h.kvs[new].put(put(b"b", b"2"))
        h.net.down.discard(old)
        await async_wait_until(lambda: h.stores[old].data.get(b"b") == b"2", timeout=10)

    run(body)


def test_isolated_member_without_leader_refuses_with_no_leader() -> None:
    async def body(h: Harness) -> None:
        h.net.down.update(h.ids)  # nobody can reach anybody: no leader ever
        with pytest.raises(errors.EtcdError) as info:
            await h.kvs[1].put(put(b"x", b"y"))
        assert info.value == errors.NO_LEADER()
        with pytest.raises(errors.EtcdError) as info:
            await h.kvs[1].range(get(b"x"))
        assert info.value == errors.NO_LEADER()
        # Serializable reads need no leader.
        assert (await h.kvs[1].range(get(b"x", serializable=True))).count == 0

    run(body)


def test_proposal_on_a_partitioned_follower_times_out() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        follower = next(i for i in h.ids if i != leader)
        h.drivers[follower].request_timeout_s = 0.3
        h.net.down.add(follower)
        with pytest.raises(errors.EtcdError) as info:
            await h.kvs[follower].put(put(b"lost", b"1"))
        assert info.value.code == errors.TIMEOUT().code  # UNAVAILABLE: retryable
        assert "timed out" in info.value.message or info.value == errors.NO_LEADER()

    run(body)


def test_stop_fails_pending_requests_with_stopped() -> None:
    async def body(h: Harness) -> None:
        await h.leader()
        h.net.down.update(h.ids)  # nothing can commit any more
        fut = asyncio.ensure_future(h.kvs[1].put(put(b"p", b"1")))
        d = h.drivers[1]
        await async_wait_until(
            lambda: len(d.waiters) == 1 or d.leader_id == 0, interval=0.001,
            what="the put pending in the driver (or waiting for a leader)",
        )  # fmt: skip
        await h.drivers[1].stop()
        with pytest.raises(errors.EtcdError) as info:
            await fut
        assert info.value in (errors.STOPPED(), errors.NO_LEADER())
        with pytest.raises(errors.EtcdError) as info:
            await h.kvs[1].put(put(b"q", b"1"))
        assert info.value == errors.STOPPED()

    run(body)


def test_applier_is_exactly_once_across_restart() -> None:
    store = DictStore()
    members = MemberTable([Member(1)])

    def entry(index: int, key: bytes) -> Entry:
        req = internal_pb2.InternalRequest(id=index, put=put(key, b"v%d" % index))
        return Entry(term=1, index=index, type=EntryType.NORMAL, data=req.SerializeToString())

    first = Applier(store, members, applied_index=0).apply([entry(1, b"a"), entry(2, b"b")])
    assert first.applied_index == 2 and [r[0] for r in first.results] == [1, 2]
    assert decode_u64(store.meta[APPLIED_INDEX_KEY]) == 2
    rev = store.current_revision
    # Restart: the log hands back entries 1..3 again; only 3 is applied.
    again = Applier(store, members, applied_index=2).apply(
        [entry(1, b"a"), entry(2, b"b"), entry(3, b"c")]
    )
    assert [r[0] for r in again.results] == [3]
    assert store.current_revision == rev + 1


def test_txn_without_writes_is_detected_as_read_only() -> None:
    ro = rpc_pb2.TxnRequest(success=[rpc_pb2.RequestOp(request_range=get(b"a"))])
    rw = rpc_pb2.TxnRequest(
        failure=[rpc_pb2.RequestOp(request_txn=rpc_pb2.TxnRequest(
            success=[rpc_pb2.RequestOp(request_put=put(b"a", b"b"))]))]
    )  # fmt: skip
    assert txn_is_read_only(ro)
    assert not txn_is_read_only(rw)


def test_restarted_member_replays_its_log_exactly_once_and_catches_up() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        victim = next(i for i in h.ids if i != leader)
        for i in range(20):
            await h.kvs[leader].put(put(b"k%d" % i, b"v"))
        await h.drivers[victim].stop()  # "crash": in-memory log and store survive
        for i in range(20, 40):
            await h.kvs[leader].put(put(b"k%d" % i, b"v"))
        applied = decode_u64(h.stores[victim].meta[APPLIED_INDEX_KEY])
        h._build(victim, applied=applied)  # restart on the same log and store
        h.drivers[victim].start()
        await async_wait_until(
            lambda: (
                h.stores[victim].data == h.stores[leader].data
                and h.drivers[victim].applied_index >= h.drivers[leader].applied_index
            ),
            timeout=10,
            what="restarted member caught up",
        )
        # Exactly once: the same number of revisions as everyone else.
        assert h.stores[victim].revision == h.stores[leader].revision

    run(body)


def test_a_member_added_at_runtime_joins_with_an_empty_log() -> None:
    async def body(h: Harness) -> None:
        from kvstore.raft.types import ConfChange, ConfChangeType
        from kvstore.server.applier import encode_member_context

        leader = await h.leader()
        await h.kvs[leader].put(put(b"before", b"1"))
        new_id = 4
        h.ids.append(new_id)
        h.logs[new_id] = SavingMemoryLog()  # joining: no bootstrap entries
        h._build(new_id)
        h.drivers[new_id].start()
        member = Member(new_id, "n4", ["http://127.0.0.1:4"])
        cc = ConfChange(ConfChangeType.ADD_NODE, new_id, encode_member_context(member))
        index = await h.drivers[leader].propose_conf_change(cc)
        await h.drivers[leader].wait_applied(index)
        assert h.kvs[leader].members.get(new_id) is not None
        await async_wait_until(
            lambda: h.stores[new_id].data.get(b"before") == b"1", timeout=10, what="join"
        )
        # The newcomer learnt the whole configuration from the log.
        assert sorted(h.drivers[new_id].raft_status().conf_state.voters) == [1, 2, 3, 4]
        r = await h.kvs[new_id].put(put(b"after", b"2"))
        assert r.header.member_id == new_id

    run(body)


def test_log_is_compacted_and_a_follower_within_the_margin_catches_up() -> None:
    async def body(h: Harness) -> None:
        leader = await h.leader()
        victim = next(i for i in h.ids if i != leader)
        for i in range(30):
            await h.kvs[leader].put(put(b"a%d" % i, b"v"))
        await h.drivers[victim].stop()
        for i in range(10):  # fewer than snapshot_count entries behind
            await h.kvs[leader].put(put(b"b%d" % i, b"v"))
        assert h.logs[leader].first_index() > 1  # compacted
        applied = decode_u64(h.stores[victim].meta[APPLIED_INDEX_KEY])
        h._build(victim, applied=applied)
        h.drivers[victim].start()
        for i in range(40):
            await h.kvs[leader].put(put(b"c%d" % i, b"v"))
        await async_wait_until(
            lambda: h.stores[victim].data == h.stores[leader].data, timeout=10, what="catch up"
        )

    run(body, snapshot_count=20)


def test_follower_behind_the_compacted_log_stops_instead_of_diverging() -> None:
    async def body(h: Harness) -> None:
        from kvstore.server.node import SnapshotNotSupported

        leader = await h.leader()
        victim = next(i for i in h.ids if i != leader)
        await h.drivers[victim].stop()
        for i in range(60):
            await h.kvs[leader].put(put(b"k%d" % i, b"v"))
        before = dict(h.stores[victim].data)
        applied = decode_u64(h.stores[victim].meta[APPLIED_INDEX_KEY])
        h._build(victim, applied=applied)
        h.drivers[victim].start()
        task = h.drivers[victim].task
        assert task is not None
        await async_wait_until(task.done, timeout=10, what="driver stops")
        assert isinstance(task.exception(), SnapshotNotSupported)
        assert h.stores[victim].data == before

    run(body, snapshot_count=10)


def test_leadership_listeners_hear_about_the_leader() -> None:
    async def main() -> None:
        h = Harness(3)
        heard: dict[int, list[tuple[bool, int, int]]] = {i: [] for i in h.ids}
        for i in h.ids:  # registered before start: no change can be missed
            h.drivers[i].leadership_listeners.append(lambda *a, i=i: heard[i].append(a))
        h.start()
        try:
            leader = await h.leader()
            await async_wait_until(lambda: heard[leader] and heard[leader][-1][0], timeout=10)
            is_leader, leader_id, term = heard[leader][-1]
            assert leader_id == leader and term >= 1
            for f in (i for i in h.ids if i != leader):
                await async_wait_until(lambda f=f: heard[f], timeout=10)
                assert heard[f][-1][:2] == (False, leader)
        finally:
            await h.stop()

    asyncio.run(asyncio.wait_for(main(), 30))


def test_too_many_pending_proposals_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import kvstore.server.node as node_mod

    monkeypatch.setattr(node_mod, "MAX_PENDING_PROPOSALS", 5)

    async def body(h: Harness) -> None:
        leader = await h.leader()
        h.net.down.update(h.ids)  # nothing commits: proposals stay pending
        pending = [
            asyncio.ensure_future(h.kvs[leader].put(put(b"p%d" % i, b"v"))) for i in range(6)
        ]
        await async_wait_until(
            lambda: len(h.drivers[leader].waiters) == 6, interval=0.001,
            what="six proposals pending",
        )  # fmt: skip
        with pytest.raises(errors.EtcdError) as info:
            await h.kvs[leader].put(put(b"one-too-many", b"v"))
        assert info.value == errors.TOO_MANY_REQUESTS()
        await h.drivers[leader].stop()
        results = await asyncio.gather(*pending, return_exceptions=True)
        assert all(isinstance(r, errors.EtcdError) for r in results)

    run(body)


def test_a_write_sent_before_any_leader_exists_waits_for_the_election() -> None:
    async def main() -> None:
        h = Harness(3)
        for d in h.drivers.values():
            d._election_timeout_s = 2.0  # generous wait for this test's first election
        h.start()
        try:
            assert all(d.leader_id == 0 for d in h.drivers.values())
            r = await h.kvs[1].put(put(b"early", b"1"))  # no leader yet: waits, then commits
            assert r.header.revision >= 2
        finally:
            await h.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
