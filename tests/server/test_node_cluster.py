"""Three in-process KvNodes over real gRPC peer transport on 127.0.0.1 (port
0), real RocksDB storage and MVCC: writes, reads, txn, election, forwarding,
linearizable follower reads, member publishing and restart from disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from node_harness import InProcessCluster, get, member_config, peer_server, put, run

from kvstore.pb import rpc_pb2
from kvstore.server.runtime import KvNode
from kvstore.testing.waiting import async_wait_until

pytestmark = pytest.mark.integration


def test_put_get_txn_through_any_member(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        follower = (leader + 1) % 3
        r1 = await c.kv(follower).put(put(b"a", b"1"))  # forwarded to the leader
        assert r1.header.member_id == c.kv(follower).member_id
        assert r1.header.cluster_id == c.kv(leader).cluster_id != 0
        r2 = await c.kv(leader).put(put(b"a", b"2"))
        assert r2.header.revision == r1.header.revision + 1
        for i in range(3):  # linearizable reads everywhere see the last write
            got = await c.kv(i).range(get(b"a"))
            assert [kv.value for kv in got.kvs] == [b"2"]
            assert got.kvs[0].version == 2 and got.header.revision >= r2.header.revision
        txn = rpc_pb2.TxnRequest(
            compare=[rpc_pb2.Compare(key=b"a", target=rpc_pb2.Compare.VALUE,
                                     result=rpc_pb2.Compare.EQUAL, value=b"2")],
            success=[rpc_pb2.RequestOp(request_put=put(b"b", b"from-txn"))],
            failure=[rpc_pb2.RequestOp(request_range=get(b"a"))],
        )  # fmt: skip
        tr = await c.kv(follower).txn(txn)
        assert tr.succeeded
        got = await c.kv((follower + 1) % 3).range(get(b"b"))
        assert got.kvs[0].value == b"from-txn"
        hashes = {c.kv(i).hash_kv(rpc_pb2.HashKVRequest(revision=tr.header.revision)).hash
                  for i in range(3)}  # fmt: skip
        assert len(hashes) == 1  # every member applied the same history
        d = await c.kv(leader).delete_range(rpc_pb2.DeleteRangeRequest(key=b"a"))
        assert d.deleted == 1
        assert (await c.kv(follower).range(get(b"a"))).count == 0

    run(tmp_path, body)


def test_members_publish_client_urls_and_status_reports_the_leader(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()

        def published() -> bool:
            members = c.kv(0).member_list().members
            return len(members) == 3 and all(m.clientURLs for m in members)

        await async_wait_until(published, timeout=20, what="members published")
        names = sorted(m.name for m in c.kv(0).member_list().members)
        assert names == ["n0", "n1", "n2"]
        st = c.kv(1).status()
        assert st.leader == c.kv(leader).member_id
        assert st.version.startswith("3.4.") and st.raftTerm >= 1
        assert st.raftAppliedIndex <= st.raftIndex

    run(tmp_path, body)


def test_leader_stop_elects_a_new_leader_and_restart_catches_up(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        old = await c.leader()
        for i in range(40):
            await c.kv((old + 1) % 3).put(put(b"k%d" % i, b"v%d" % i))
        await c.stop_node(old)
        new = await c.leader(exclude=(old,))
        assert new != old
        for i in range(40, 50):  # fewer than snapshot_count: catch up from the log
            await c.kv(new).put(put(b"k%d" % i, b"v%d" % i))
        await c.restart(old)

        async def caught_up() -> bool:
            got = await c.kv(old).range(
                rpc_pb2.RangeRequest(key=b"k", range_end=b"l", serializable=True)
            )
            return got.count == 50

        await async_wait_until(caught_up, timeout=30, what="restarted member caught up")
        new_node = c.nodes[new]
        assert new_node is not None and new_node.data is not None
        assert new_node.data.log_storage.first_index() > 1  # the log was compacted
        a = c.kv(old).store.current_revision
        b = c.kv(new).store.current_revision
        assert a == b  # replay applied nothing twice

    run(tmp_path, body)


def test_move_leader_and_membership_changes(tmp_path: Path) -> None:
    from kvstore import errors

    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        target = (leader + 1) % 3
        follower = (leader + 2) % 3
        with pytest.raises(errors.EtcdError) as info:  # only the leader moves leadership
            await c.kv(follower).move_leader(rpc_pb2.MoveLeaderRequest(targetID=1))
        assert info.value == errors.NOT_LEADER()
        with pytest.raises(errors.EtcdError) as info:
            await c.kv(leader).move_leader(rpc_pb2.MoveLeaderRequest(targetID=12345))
        assert info.value == errors.BAD_LEADER_TRANSFEREE()
        target_id = c.kv(target).member_id
        resp = await c.kv(leader).move_leader(rpc_pb2.MoveLeaderRequest(targetID=target_id))
        assert not resp.HasField("header")  # etcd 3.4 answers MoveLeader without one
        assert await c.leader() == target

        # Followers forward membership changes to the leader's published client URL.
        await async_wait_until(
            lambda: all(m.clientURLs for m in c.kv(follower).member_list().members),
            timeout=20,
            what="client URLs published",
        )
        # Add a learner that never starts; promote refuses; then remove it.
        add = await c.kv(follower).member_add(  # forwarded to the leader
            rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"], isLearner=True)
        )
        new_id = add.member.ID
        assert any(new_id == m.ID and m.isLearner for m in add.members)
        await async_wait_until(
            lambda: all(c.kv(i).members.get(new_id) for i in range(3)), timeout=10
        )
        with pytest.raises(errors.EtcdError) as info:
            await c.kv(target).member_add(rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:1"]))
        assert info.value == errors.PEER_URL_EXIST()
        updated = await c.kv(target).member_update(
            rpc_pb2.MemberUpdateRequest(ID=new_id, peerURLs=["http://127.0.0.1:2"])
        )
        (m,) = [m for m in updated.members if new_id == m.ID]
        assert list(m.peerURLs) == ["http://127.0.0.1:2"] and m.isLearner  # still a learner
        with pytest.raises(errors.EtcdError) as info:
            await c.kv(target).member_promote(rpc_pb2.MemberPromoteRequest(ID=new_id))
        assert info.value == errors.LEARNER_NOT_READY()
        removed = await c.kv(target).member_remove(rpc_pb2.MemberRemoveRequest(ID=new_id))
        assert new_id not in {m.ID for m in removed.members}
        # The 3 voters still commit writes.
        await c.kv(follower).put(put(b"after-membership", b"ok"))

    run(tmp_path, body)


def test_a_new_member_joins_with_initial_cluster_state_existing(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        await c.kv(leader).put(put(b"before", b"1"))
        peer, peer_port = peer_server()
        url = f"http://127.0.0.1:{peer_port}"
        added = await c.kv(leader).member_add(rpc_pb2.MemberAddRequest(peerURLs=[url]))
        cfg = member_config(
            tmp_path / "n3", "n3", peer_port, f"{c.initial_cluster},n3={url}",
            initial_cluster_state="existing",
        )  # fmt: skip
        # The ids cannot come from the flags (MemberAdd salts the member id):
        # the newcomer fetches them from the members listed in --initial-cluster.
        assert cfg.cluster_id == 0
        node = KvNode(cfg, peer_server=peer)
        await node.start()
        try:
            kv = node.kv
            assert kv is not None
            assert kv.member_id == added.member.ID
            assert kv.cluster_id == c.kv(leader).cluster_id

            async def replicated() -> bool:
                got = await kv.range(get(b"before", serializable=True))
                return got.count == 1

            await async_wait_until(replicated, timeout=20, what="log replicated to newcomer")
            assert sorted(kv.driver.raft_status().conf_state.voters) == sorted(
                [c.kv(i).member_id for i in range(3)] + [added.member.ID]
            )
            r = await kv.put(put(b"from-newcomer", b"2"))
            assert r.header.member_id == added.member.ID
            got = await c.kv(leader).range(get(b"from-newcomer"))
            assert got.kvs[0].value == b"2"
            await async_wait_until(
                lambda: (m := c.kv(leader).members.get(added.member.ID)) and m.name == "n3",
                timeout=20,
                what="newcomer published its name",
            )
        finally:
            await node.stop()

    run(tmp_path, body)
