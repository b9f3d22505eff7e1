"""Three in-process KvNodes over real gRPC peer transport on 127.0.0.1 (port
0), real RocksDB storage and MVCC: writes, reads, txn, election, forwarding,
linearizable follower reads, member publishing and restart from disk."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from kvstore.api import add_servicers
from kvstore.pb import rpc_pb2
from kvstore.server.config import NodeConfig
from kvstore.server.runtime import KvNode
from kvstore.testing.waiting import async_wait_until
from kvstore.transport import SERVER_OPTIONS

pytestmark = pytest.mark.integration


class InProcessCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.size = size
        self.ports: list[int] = []
        self.client_ports: list[int] = []
        self.client_servers: list[grpc.aio.Server | None] = [None] * size
        self.nodes: list[KvNode | None] = [None] * size

    def _config(self, i: int) -> NodeConfig:
        initial = ",".join(f"n{j}=http://127.0.0.1:{p}" for j, p in enumerate(self.ports))
        url = f"http://127.0.0.1:{self.ports[i]}"
        return NodeConfig(
            name=f"n{i}",
            data_dir=str(self.base / f"n{i}"),
            listen_client_urls=(f"http://127.0.0.1:{self.client_ports[i]}",),
            advertise_client_urls=(f"http://127.0.0.1:{self.client_ports[i]}",),
            listen_peer_urls=(url,),
            initial_advertise_peer_urls=(url,),
            initial_cluster=initial,
            initial_cluster_token="in-process",
            heartbeat_interval_ms=50,
            election_timeout_ms=500,
            # Small, so the tests also run log compaction and restart from a
            # compacted log (a restarted member stays within this margin).
            snapshot_count=15,
        ).validate()

    def _server(self, port: int = 0) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=[*SERVER_OPTIONS, ("grpc.so_reuseport", 0)])
        return server, server.add_insecure_port(f"127.0.0.1:{port}")

    async def start(self) -> None:
        servers = []
        for _ in range(self.size):
            server, port = self._server()
            servers.append(server)
            self.ports.append(port)
            client, client_port = self._server()
            self.client_servers[len(self.client_ports)] = client
            self.client_ports.append(client_port)
        for i in range(self.size):
            await self._start_node(i, servers[i])

    async def _start_node(self, i: int, peer_server: grpc.aio.Server) -> None:
        """Start member i, with the etcd API servicers on its client server."""
        node = KvNode(self._config(i), peer_server=peer_server)
        await node.start()
        self.nodes[i] = node
        client = self.client_servers[i]
        if client is None:
            client, _ = self._server(self.client_ports[i])
            self.client_servers[i] = client
        add_servicers(client, node.kv)
        await client.start()

    async def restart(self, i: int) -> None:
        await self.stop_node(i)
        server, _ = self._server(self.ports[i])
        await self._start_node(i, server)

    async def stop_node(self, i: int) -> None:
        client = self.client_servers[i]
        if client is not None:
            await client.stop(grace=0.5)
            self.client_servers[i] = None
        node = self.nodes[i]
        if node is not None:
            await node.stop()
            self.nodes[i] = None

    async def stop(self) -> None:
        for i in range(self.size):
            await self.stop_node(i)

    def kv(self, i: int) -> Any:
        node = self.nodes[i]
        assert node is not None and node.kv is not None
        return node.kv

    async def leader(self, exclude: tuple[int, ...] = ()) -> int:
        def agreed() -> tuple[int] | None:
            live = [i for i, n in enumerate(self.nodes) if n is not None and i not in exclude]
            leaders = {self.kv(i).driver.leader_id for i in live}
            if len(leaders) != 1 or 0 in leaders:
                return None
            (lid,) = leaders
            idx = [i for i in live if self.kv(i).member_id == lid]
            return (idx[0],) if idx else None

        (idx,) = await async_wait_until(agreed, timeout=20, what="agreed leader")
        return idx


def run(tmp_path: Path, body: Callable[[InProcessCluster], Awaitable[None]]) -> None:
    async def main() -> None:
        cluster = InProcessCluster(tmp_path)
        try:
            await cluster.start()
            await body(cluster)
        finally:
            await cluster.stop()

    asyncio.run(asyncio.wait_for(main(), 90))


def put(key: bytes, value: bytes) -> Any:
    return rpc_pb2.PutRequest(key=key, value=value)


def get(key: bytes, **kw: Any) -> Any:
    return rpc_pb2.RangeRequest(key=key, **kw)


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
        peer_server, peer_port = c._server()
        url = f"http://127.0.0.1:{peer_port}"
        added = await c.kv(leader).member_add(rpc_pb2.MemberAddRequest(peerURLs=[url]))
        initial = ",".join(f"n{j}=http://127.0.0.1:{p}" for j, p in enumerate(c.ports))
        cfg = NodeConfig(
            name="n3",
            data_dir=str(tmp_path / "n3"),
            listen_client_urls=("http://127.0.0.1:0",),
            listen_peer_urls=(url,),
            initial_advertise_peer_urls=(url,),
            initial_cluster=f"{initial},n3={url}",
            initial_cluster_state="existing",
            initial_cluster_token="in-process",
            heartbeat_interval_ms=50,
            election_timeout_ms=500,
        ).validate()
        # The ids cannot come from the flags (MemberAdd salts the member id):
        # the newcomer fetches them from the members listed in --initial-cluster.
        assert cfg.cluster_id == 0
        node = KvNode(cfg, peer_server=peer_server)
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
