"""Member and cluster ids across membership changes.

(a) MemberAdd draws a fresh id every time (etcd salts it with the time), and a
    removed id is never handed out again;
(b) a member joining with `--initial-cluster-state existing` learns its ids
    from the running cluster (never from a formula over its flags), so any
    sequence of adds and removes leaves joiners in the right cluster.
Pure unit tests first, then in-process nodes over real gRPC on loopback."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from kvstore import errors
from kvstore.server.cluster_ops import new_member_id
from kvstore.server.config import ConfigError, NodeConfig, member_id
from kvstore.server.datadir import IDENTITY_FILE, Identity, needs_join, open_data_dir
from kvstore.server.errors import DataDirError, StartupError
from kvstore.server.join import decode_cluster, encode_cluster, find_self, remote_peer_urls
from kvstore.server.membership import JoinInfo, Member, MemberTable

URL = "http://127.0.0.1:23801"
TOKEN = "tok"


# ------------------------------------------------------------------ (a) ids
def test_member_id_without_salt_is_etcds_bootstrap_id() -> None:
    assert member_id(["http://localhost:2380"], "etcd-cluster") == 0x8E9E05C52164694D
    assert member_id([URL], TOKEN, 1) != member_id([URL], TOKEN, 2) != member_id([URL], TOKEN)


def test_new_member_id_differs_for_the_same_peer_urls_at_another_time() -> None:
    table = MemberTable()
    first = new_member_id(table, [URL], TOKEN, 1_000)
    second = new_member_id(table, [URL], TOKEN, 2_000)
    assert first != second and first and second


def test_removed_and_current_ids_are_never_handed_out_again() -> None:
    table = MemberTable([Member(member_id([URL], TOKEN, 7), "a", [URL])])
    table.remove(member_id([URL], TOKEN, 8))  # an old member, removed
    got = new_member_id(table, [URL], TOKEN, 7)
    assert got == member_id([URL], TOKEN, 9)  # salts 7 (member) and 8 (removed) skipped
    # Removal is remembered across encode/decode (it is persisted this way).
    again = MemberTable.decode(table.encode())
    assert again.is_removed(member_id([URL], TOKEN, 8))
    assert new_member_id(again, [URL], TOKEN, 7) == got


def test_every_salt_taken_is_member_exists() -> None:
    table = MemberTable()
    for salt in range(5, 5 + 64):
        table.remove(member_id([URL], TOKEN, salt))
    with pytest.raises(errors.EtcdError) as info:
        new_member_id(table, [URL], TOKEN, 5)
    assert info.value == errors.MEMBER_EXIST()


# ------------------------------------------------------ (b) joining members
def joiner(tmp_path: Path, initial: str, url: str = URL) -> NodeConfig:
    return NodeConfig(
        name="new",
        data_dir=str(tmp_path / "new"),
        listen_peer_urls=(url,),
        initial_advertise_peer_urls=(url,),
        initial_cluster=f"{initial},new={url}",
        initial_cluster_state="existing",
        initial_cluster_token=TOKEN,
    ).validate()


def test_a_joiner_does_not_compute_a_cluster_id_from_its_flags(tmp_path: Path) -> None:
    cfg = joiner(tmp_path, "a=http://127.0.0.1:1,b=http://127.0.0.1:2")
    assert cfg.cluster_id == 0  # learned from the cluster at first start
    assert remote_peer_urls(cfg) == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert needs_join(cfg)
    with pytest.raises(ConfigError, match="running members"):
        NodeConfig(
            name="new",
            listen_peer_urls=(URL,),
            initial_advertise_peer_urls=(URL,),
            initial_cluster=f"new={URL}",
            initial_cluster_state="existing",
        ).validate()


def test_find_self_picks_the_member_by_peer_urls_whatever_the_history() -> None:
    table = MemberTable([Member(11, "a", ["http://127.0.0.1:1"])])
    table.upsert(Member(99, "", [URL, "http://127.0.0.1:9"], is_learner=True))
    table.remove(42)
    cid, responder, decoded = decode_cluster(encode_cluster(0xABC, 11, table))
    assert (cid, responder) == (0xABC, 11) and decoded.is_removed(42)
    cfg = NodeConfig(
        name="new",
        listen_peer_urls=(URL,),
        initial_advertise_peer_urls=("http://127.0.0.1:9", URL),  # any order
        initial_cluster=f"a=http://127.0.0.1:1,new={URL},new=http://127.0.0.1:9",
        initial_cluster_state="existing",
    ).validate()
    info = find_self(cfg, cid, decoded)
    assert (info.member_id, info.cluster_id) == (99, 0xABC)
    with pytest.raises(StartupError, match="add it first"):
        find_self(cfg, cid, MemberTable([Member(11, "a", ["http://127.0.0.1:1"])]))
    # Published client URLs: it ran before; an empty data dir must not rejoin.
    decoded.set_attributes(99, "new", ["http://127.0.0.1:2379"])
    with pytest.raises(StartupError, match="already been bootstrapped"):
        find_self(cfg, cid, decoded)


TWO_PEERS = "a=http://127.0.0.1:1,b=http://127.0.0.1:2"


def test_a_peer_lagging_behind_member_add_is_asked_again(monkeypatch, tmp_path: Path) -> None:
    """A follower may answer before it applied the MemberAdd: the joiner
    retries (other peers, then again) instead of failing at once."""
    from kvstore.server import join

    without = MemberTable([Member(11, "a", ["http://127.0.0.1:1"])])
    with_me = MemberTable([Member(11, "a", ["http://127.0.0.1:1"]), Member(99, "", [URL])])
    answers = iter([without, without, without, with_me])

    async def fake_fetch(url: str) -> tuple[int, int, MemberTable]:
        return 0xABC, 11, next(answers)

    monkeypatch.setattr(join, "FETCH_RETRY_S", 0.001)
    info = asyncio.run(join.fetch_join_info(joiner(tmp_path, TWO_PEERS), fake_fetch))
    assert (info.member_id, info.cluster_id) == (99, 0xABC)


def test_a_member_never_added_fails_after_the_grace(monkeypatch, tmp_path: Path) -> None:
    from kvstore.server import join

    async def fake_fetch(url: str) -> tuple[int, int, MemberTable]:
        return 0xABC, 11, MemberTable([Member(11, "a", ["http://127.0.0.1:1"])])

    monkeypatch.setattr(join, "FETCH_RETRY_S", 0.001)
    monkeypatch.setattr(join, "NOT_LISTED_GRACE_S", 0.05)
    with pytest.raises(StartupError, match="add it first"):
        asyncio.run(
            asyncio.wait_for(join.fetch_join_info(joiner(tmp_path, TWO_PEERS), fake_fetch), 10)
        )


def test_joined_data_dir_keeps_the_fetched_ids_across_restarts(tmp_path: Path) -> None:
    cfg = joiner(tmp_path, "a=http://127.0.0.1:1")
    with pytest.raises(DataDirError, match="fetched"):
        open_data_dir(cfg)  # a first join needs the member list
    table = MemberTable([Member(5, "a", ["http://127.0.0.1:1"]), Member(77, "", [URL])])
    opened = open_data_dir(cfg, JoinInfo(member_id=77, cluster_id=0xC1, members=table))
    try:
        assert (opened.member_id, opened.cluster_id, opened.joining) == (77, 0xC1, True)
        assert [m.id for m in opened.members.all()] == [5, 77]
    finally:
        opened.close()
    assert Identity.load(Path(cfg.data_dir) / IDENTITY_FILE).member_id == 77
    # Restart with the same flags: no join, ids from the data dir.
    assert not needs_join(cfg)
    reopened = open_data_dir(cfg)
    try:
        assert (reopened.member_id, reopened.cluster_id, reopened.is_new) == (77, 0xC1, False)
    finally:
        reopened.close()


# ------------------------------------------- in-process nodes on loopback
@pytest.mark.integration
def test_remove_and_readd_same_urls_gets_a_new_id_and_joiners_find_the_cluster(
    tmp_path: Path,
) -> None:
    """3 members; add a voter, join, remove it, add the same URLs again (new id),
    join again from a wiped dir, then add and join a second newcomer: every
    joiner ends in the same cluster id, with the id MemberAdd gave it."""
    from node_harness import InProcessCluster, member_config, put

    from kvstore.pb import rpc_pb2
    from kvstore.server.runtime import KvNode
    from kvstore.testing.waiting import async_wait_until

    async def start_joiner(c: InProcessCluster, name: str, url_port: tuple) -> KvNode:
        server, port = url_port
        url = f"http://127.0.0.1:{port}"
        # The bootstrap members are enough to fetch the member list from.
        cfg = member_config(
            tmp_path / name, name, port, f"{c.initial_cluster},{name}={url}",
            initial_cluster_state="existing",
        )  # fmt: skip
        node = KvNode(cfg, peer_server=server)
        await node.start()
        return node

    transient = (
        errors.UNHEALTHY_CLUSTER(),
        errors.MEMBER_NOT_ENOUGH_STARTED(),
        errors.NO_LEADER(),
        errors.NOT_LEADER(),
    )

    async def on_leader(c: InProcessCluster, method: str, req: object) -> object:
        """Call a Cluster op on the leader, retrying while strict reconfiguration
        says not yet (a member that just started is not yet connected)."""

        async def attempt() -> object:
            try:
                return await getattr(c.kv(await c.leader()), method)(req)
            except errors.EtcdError as exc:
                if exc in transient:
                    return None
                raise

        result = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while result is None and loop.time() < deadline:
            result = await attempt()
            if result is None:
                await asyncio.sleep(0.05)
        assert result is not None, f"{method} kept failing"
        return result

    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        kv = c.kv(leader)
        await kv.put(put(b"k", b"1"))
        cid = kv.cluster_id
        server, port = c._server()
        url = f"http://127.0.0.1:{port}"
        first = await on_leader(c, "member_add", rpc_pb2.MemberAddRequest(peerURLs=[url]))
        node = await start_joiner(c, "j1", (server, port))
        try:
            assert node.kv is not None
            assert (node.kv.member_id, node.kv.cluster_id) == (first.member.ID, cid)
            await async_wait_until(
                lambda: node.kv.driver.applied_index >= kv.driver.applied_index - 1,
                timeout=20,
                what="joiner caught up",
            )
        finally:
            await node.stop()
        leader = await c.leader()
        kv = c.kv(leader)
        await on_leader(c, "member_remove", rpc_pb2.MemberRemoveRequest(ID=first.member.ID))
        # The removed id answers "member not found", and never comes back.
        with pytest.raises(errors.EtcdError) as info:
            await kv.member_promote(rpc_pb2.MemberPromoteRequest(ID=first.member.ID))
        assert info.value == errors.MEMBER_NOT_FOUND()
        server2, _ = c._server(port)  # same peer URL, wiped data dir
        shutil.rmtree(tmp_path / "j1")
        second = await on_leader(c, "member_add", rpc_pb2.MemberAddRequest(peerURLs=[url]))
        assert second.member.ID != first.member.ID
        node = await start_joiner(c, "j1", (server2, port))
        try:
            assert node.kv is not None
            assert (node.kv.member_id, node.kv.cluster_id) == (second.member.ID, cid)
            # A third newcomer, after adds and removes: still the same cluster.
            server3, port3 = c._server()
            url3 = f"http://127.0.0.1:{port3}"
            third = await on_leader(
                c, "member_add", rpc_pb2.MemberAddRequest(peerURLs=[url3], isLearner=True)
            )
            node3 = await start_joiner(c, "j3", (server3, port3))
            try:
                assert node3.kv is not None
                assert (node3.kv.member_id, node3.kv.cluster_id) == (third.member.ID, cid)

                async def replicated() -> bool:
                    got = await node3.kv.range(rpc_pb2.RangeRequest(key=b"k", serializable=True))
                    return got.count == 1

                await async_wait_until(replicated, timeout=20, what="learner replicated")
            finally:
                await node3.stop()
        finally:
            await node.stop()

    async def main() -> None:
        cluster = InProcessCluster(tmp_path)
        try:
            await cluster.start()
            await body(cluster)
        finally:
            await cluster.stop()

    asyncio.run(asyncio.wait_for(main(), 100))
