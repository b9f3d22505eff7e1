"""Membership changes on real `kvstore` processes under a write load.

- grow 3 -> 5 (one member added as a learner, started with
  `--initial-cluster-state existing`, promoted once caught up; one added as a
  voter) -> 3 (the leader and one more removed), writes running throughout;
- replace a member (remove it, wipe its data dir, add a new member on new
  ports; it catches up from a snapshot, the log being compacted);
- etcd's errors for the Cluster RPCs, and a re-added peer URL getting a new id.

After each scenario: every acknowledged write is readable on every remaining
member and HashKV agrees across members at one revision."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from e2e_load import WriteLoad, dump_prefix, hash_kv

from kvstore import errors
from kvstore.devcluster import LocalCluster
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

pytestmark = pytest.mark.e2e

# Small, so that members added under load must be sent a snapshot.
SNAPSHOT_COUNT = "100"
RPC_TIMEOUT_S = 15.0
# Failures that mean "not now" (no leader yet, leader changing, a member just
# started and not yet connected): the operation is tried again.
TRANSIENT = frozenset(
    e.message
    for e in (
        errors.NO_LEADER(),
        errors.NOT_LEADER(),
        errors.LEADER_CHANGED(),
        errors.STOPPED(),
        errors.TIMEOUT(),
        errors.TIMEOUT_DUE_TO_LEADER_FAIL(),
        errors.TIMEOUT_DUE_TO_CONNECTION_LOST(),
        errors.UNHEALTHY_CLUSTER(),
        errors.MEMBER_NOT_ENOUGH_STARTED(),
    )
)


# ------------------------------------------------------------ Cluster RPCs
def cluster_rpc(endpoint: str, method: str, req: Any) -> Any:
    with grpc.insecure_channel(endpoint) as ch:
        return getattr(rpc_pb2_grpc.ClusterStub(ch), method)(req, timeout=RPC_TIMEOUT_S)


@dataclass
class _Outcome:
    response: Any = None
    error: grpc.RpcError | None = None


def admin(
    cluster: LocalCluster,
    method: str,
    req: Any,
    *,
    retry_on: frozenset[str] = frozenset(),
    timeout: float = 90.0,
) -> Any:
    """Run a Cluster RPC on any live member (followers forward to the leader),
    retrying while the failure is transient; other errors are raised."""

    def attempt() -> _Outcome | None:
        for ep in cluster.live_endpoints():
            try:
                return _Outcome(response=cluster_rpc(ep, method, req))
            except grpc.RpcError as exc:
                if (
                    exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                    or exc.details() in TRANSIENT | retry_on
                ):
                    continue
                return _Outcome(error=exc)
        return None

    outcome = wait_until(attempt, timeout=timeout, interval=0.2, what=f"{method} accepted")
    if outcome.error is not None:
        raise outcome.error
    return outcome.response


def member_list(endpoint: str) -> list[Any]:
    return list(cluster_rpc(endpoint, "MemberList", rpc_pb2.MemberListRequest()).members)


def add_member(cluster: LocalCluster, peer_url: str, learner: bool) -> int:
    """MemberAdd; returns the new id. An add whose answer was lost (retried,
    then refused as existing) is found in the member list instead."""
    req = rpc_pb2.MemberAddRequest(peerURLs=[peer_url], isLearner=learner)
    try:
        return admin(cluster, "MemberAdd", req).member.ID
    except grpc.RpcError as exc:
        if exc.details() != errors.PEER_URL_EXIST().message:
            raise
    listed = member_list(cluster.live_endpoints()[0])
    return next(m.ID for m in listed if peer_url in m.peerURLs)


def wait_started(cluster: LocalCluster, name: str, mid: int) -> None:
    """The member serves (knows a leader) and has published its name."""
    cluster.wait_member_ready(cluster.index(name), timeout=90)

    def published() -> bool:
        return any((m.ID, m.name) == (mid, name) for m in member_list(cluster.endpoints[0]))

    wait_until(published, timeout=60, interval=0.2, what=f"{name} published its name")


def current_revision(endpoint: str) -> int:
    with grpc.insecure_channel(endpoint) as ch:
        resp = rpc_pb2_grpc.KVStub(ch).Range(rpc_pb2.RangeRequest(key=b"\0"), timeout=10)
    return resp.header.revision


def assert_no_acked_write_lost(cluster: LocalCluster, loads: list[WriteLoad]) -> None:
    """Every acknowledged write on every member; same data and HashKV everywhere."""
    for ep in cluster.endpoints:
        for load in loads:
            acked = dict(load.acked)

            def has_all(ep: str = ep, acked: dict = acked, prefix: bytes = load.prefix) -> bool:
                data = dump_prefix(ep, prefix)
                return all(data.get(k) == v for k, v in acked.items())

            wait_until(has_all, timeout=60, interval=0.2, what=f"{ep} holds all acked writes")
    rev = wait_until(lambda: current_revision(cluster.endpoints[0]), timeout=30)

    def same_hash() -> bool:
        hashes = [hash_kv(ep, rev) for ep in cluster.endpoints]
        return None not in hashes and len(set(hashes)) == 1

    wait_until(same_hash, timeout=60, interval=0.2, what=f"equal HashKV at revision {rev}")
    for load in loads:
        dumps = [dump_prefix(ep, load.prefix) for ep in cluster.endpoints]
        assert all(d == dumps[0] for d in dumps)


def voters_and_learners(endpoint: str) -> tuple[set[int], set[int]]:
    listed = member_list(endpoint)
    return {m.ID for m in listed if not m.isLearner}, {m.ID for m in listed if m.isLearner}


# ------------------------------------------------------------------- tests
@pytest.mark.timeout(300)
def test_grow_to_five_and_shrink_to_three_under_load_removing_the_leader(tmp_path: Path) -> None:
    cluster = LocalCluster(3, base_dir=tmp_path, extra_args=("--snapshot-count", SNAPSHOT_COUNT))
    with cluster:
        load = WriteLoad(cluster.endpoints, writers=3, per_writer=5000, max_seconds=150).start()
        loads = [load]
        try:
            wait_until(lambda: load.acked_count() >= 50, timeout=30, what="load running")

            # 3 -> 4: a learner, started with existing state, promoted when caught up.
            cluster.reserve("kv4")
            kv4 = add_member(cluster, cluster.peer_url("kv4"), learner=True)
            cluster.start_joined("kv4", member_list(cluster.endpoints[0]))
            wait_started(cluster, "kv4", kv4)
            assert cluster.member_id("kv4") == kv4  # the id MemberAdd gave, fetched
            ready = frozenset({errors.LEARNER_NOT_READY().message})
            admin(cluster, "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=kv4), retry_on=ready)

            # 4 -> 5: a voter straight away.
            cluster.reserve("kv5")
            kv5 = add_member(cluster, cluster.peer_url("kv5"), learner=False)
            cluster.start_joined("kv5", member_list(cluster.endpoints[0]))
            wait_started(cluster, "kv5", kv5)
            voters, learners = voters_and_learners(cluster.endpoints[0])
            assert len(voters) == 5 and not learners and {kv4, kv5} <= voters
            # Writes through the new members too.
            new_eps = [cluster.endpoints[cluster.index(n)] for n in ("kv4", "kv5")]
            load2 = WriteLoad(new_eps, writers=2, per_writer=5000, max_seconds=120, prefix=b"l2/")
            loads.append(load2.start())
            wait_until(lambda: load2.acked_count() >= 20, timeout=60, what="writes via kv4/kv5")

            # 5 -> 4: remove the leader (whoever it is now).
            leader = cluster.members[cluster.wait_leader(timeout=30)].name
            leader_id = cluster.member_id(leader)
            admin(cluster, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=leader_id))
            cluster.retire(leader)
            new_leader = cluster.members[cluster.wait_leader(timeout=60)].name
            assert new_leader != leader
            before = load.acked_count() + load2.acked_count()
            wait_until(
                lambda: load.acked_count() + load2.acked_count() > before + 20,
                timeout=60,
                what="writes continue after removing the leader",
            )

            # 4 -> 3: remove a follower.
            follower = next(m.name for m in cluster.members if m.name != new_leader)
            admin(
                cluster,
                "MemberRemove",
                rpc_pb2.MemberRemoveRequest(ID=cluster.member_id(follower)),
            )
            cluster.retire(follower)
            before = load.acked_count() + load2.acked_count()
            wait_until(
                lambda: load.acked_count() + load2.acked_count() > before + 20,
                timeout=60,
                what="writes continue on 3 members",
            )
        finally:
            for ld in loads:
                ld.stop()
        cluster.wait_healthy(60)
        for ep in cluster.endpoints:
            voters, learners = voters_and_learners(ep)
            assert len(voters) == 3 and not learners
            assert leader_id not in voters
        assert load.acked_count() > 100
        assert_no_acked_write_lost(cluster, loads)


@pytest.mark.timeout(240)
def test_replace_a_member_under_load(tmp_path: Path) -> None:
    """Remove a follower, wipe its dir, add a new member on new ports: it
    joins (by snapshot: the log is compacted), serves, survives a kill -9 and
    restart; nothing is lost."""
    cluster = LocalCluster(3, base_dir=tmp_path, extra_args=("--snapshot-count", SNAPSHOT_COUNT))
    with cluster:
        load = WriteLoad(cluster.endpoints, writers=3, per_writer=3000, max_seconds=90).start()
        try:
            wait_until(lambda: load.acked_count() >= 50, timeout=30, what="load running")
            leader = cluster.wait_leader(timeout=30)
            old = cluster.members[(leader + 1) % 3]
            old_dir, old_id = old.data_dir, cluster.member_id(old.name)
            admin(cluster, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=old_id))
            cluster.retire(old.name)
            shutil.rmtree(old_dir)
            before = load.acked_count()
            # Enough writes that the log start moved past index 1 (3 x snapshot
            # count): the newcomer can only catch up from a snapshot.
            wait_until(
                lambda: load.acked_count() > max(before + 50, 3 * int(SNAPSHOT_COUNT)),
                timeout=60,
                what="writes on 2 members",
            )

            cluster.reserve("kv9")
            new_id = add_member(cluster, cluster.peer_url("kv9"), learner=False)
            assert new_id != old_id
            cluster.start_joined("kv9", member_list(cluster.live_endpoints()[0]))
            wait_started(cluster, "kv9", new_id)
            wait_until(
                lambda: b"installed snapshot at index" in (tmp_path / "kv9.log").read_bytes(),
                timeout=60,
                what="kv9 caught up from a snapshot",
            )
            before = load.acked_count()
            wait_until(lambda: load.acked_count() > before + 50, timeout=60, what="3 again")
            # A joined member restarts from its data dir (ids from there, not
            # from its flags) after a kill -9.
            cluster.restart(cluster.index("kv9"), wait=True, timeout=90)
            assert cluster.member_id("kv9") == new_id
            before = load.acked_count()
            wait_until(lambda: load.acked_count() > before + 20, timeout=60, what="restarted")
        finally:
            load.stop()
        cluster.wait_healthy(60)
        voters, learners = voters_and_learners(cluster.endpoints[0])
        assert voters == {cluster.member_id(m.name) for m in cluster.members} and not learners
        assert old_id not in voters
        assert_no_acked_write_lost(cluster, [load])


@pytest.mark.timeout(180)
def test_cluster_rpc_errors_are_etcds(tmp_path: Path) -> None:
    with LocalCluster(3, base_dir=tmp_path) as cluster:
        eps = cluster.endpoints
        leader = cluster.wait_leader(timeout=30)
        follower_ep = eps[(leader + 1) % 3]
        ids = [cluster.member_id(m.name) for m in cluster.members]

        def refused(method: str, req: Any, error: errors.EtcdError, ep: str = follower_ep) -> None:
            with pytest.raises(grpc.RpcError) as info:
                cluster_rpc(ep, method, req)
            assert (info.value.code(), info.value.details()) == (error.code, error.message)

        unknown = 0xABCDEF
        refused("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=unknown), errors.MEMBER_NOT_FOUND())
        refused(
            "MemberUpdate",
            rpc_pb2.MemberUpdateRequest(ID=unknown, peerURLs=["http://127.0.0.1:1"]),
            errors.MEMBER_NOT_FOUND(),
        )
        refused(
            "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=unknown), errors.MEMBER_NOT_FOUND()
        )
        taken = f"http://127.0.0.1:{cluster.members[0].peer_port}"
        refused("MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=[taken]), errors.PEER_URL_EXIST())
        refused(
            "MemberUpdate",
            rpc_pb2.MemberUpdateRequest(ID=ids[1], peerURLs=[taken]),
            errors.PEER_URL_EXIST(),
        )
        refused(
            "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=ids[2]), errors.MEMBER_NOT_LEARNER()
        )

        # A learner that never started is not in sync; a second learner is one too many.
        url = f"http://127.0.0.1:{free_port()}"
        learner = add_member(cluster, url, learner=True)
        refused(
            "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=learner), errors.LEARNER_NOT_READY()
        )
        other = rpc_pb2.MemberAddRequest(
            peerURLs=[f"http://127.0.0.1:{free_port()}"], isLearner=True
        )
        refused("MemberAdd", other, errors.TOO_MANY_LEARNERS())

        # Removed, then the same peer URL added again: a new id; the old one is gone for good.
        admin(cluster, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=learner))
        again = add_member(cluster, url, learner=True)
        assert again != learner
        refused(
            "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=learner), errors.MEMBER_NOT_FOUND()
        )
        refused("MemberRemove", rpc_pb2.MemberRemoveRequest(ID=learner), errors.MEMBER_NOT_FOUND())
        _, learners = voters_and_learners(eps[leader])
        assert learners == {again}
        admin(cluster, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=again))
        assert voters_and_learners(eps[leader]) == (set(ids), set())


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_long_sequence_of_adds_and_removes_under_load(tmp_path: Path) -> None:
    """Four rounds of: add a member (learner then promoted, or voter), start
    it with existing state, remove the leader or the oldest member. Each
    joiner finds its id and the cluster id whatever history preceded it."""
    cluster = LocalCluster(3, base_dir=tmp_path, extra_args=("--snapshot-count", SNAPSHOT_COUNT))
    with cluster:
        cluster_id = cluster.status(0).header.cluster_id
        removed: set[int] = set()
        loads: list[WriteLoad] = []
        try:
            for rnd in range(4):
                load = WriteLoad(
                    cluster.live_endpoints(),
                    writers=2,
                    per_writer=3000,
                    max_seconds=120,
                    prefix=b"r%d/" % rnd,
                )
                loads.append(load.start())
                wait_until(lambda ld=load: ld.acked_count() >= 20, timeout=60, what="load")
                name, learner = f"kv{4 + rnd}", rnd % 2 == 0
                cluster.reserve(name)
                new_id = add_member(cluster, cluster.peer_url(name), learner=learner)
                assert new_id not in removed
                cluster.start_joined(name, member_list(cluster.live_endpoints()[0]))
                wait_started(cluster, name, new_id)
                assert cluster.status(cluster.index(name)).header.cluster_id == cluster_id
                if learner:
                    ready = frozenset({errors.LEARNER_NOT_READY().message})
                    req = rpc_pb2.MemberPromoteRequest(ID=new_id)
                    admin(cluster, "MemberPromote", req, retry_on=ready)
                if rnd % 2 == 0:
                    victim = cluster.members[cluster.wait_leader(timeout=60)].name
                else:
                    victim = cluster.members[0].name
                victim_id = cluster.member_id(victim)
                admin(cluster, "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=victim_id))
                removed.add(victim_id)
                cluster.retire(victim)
                cluster.wait_leader(timeout=60)
                before = load.acked_count()
                wait_until(
                    lambda ld=load, n=before: ld.acked_count() > n + 20,
                    timeout=60,
                    what=f"writes after round {rnd}",
                )
                load.stop()
        finally:
            for ld in loads:
                ld.stop()
        cluster.wait_healthy(60)
        assert len(removed) == 4
        for ep in cluster.endpoints:
            voters, learners = voters_and_learners(ep)
            assert len(voters) == 3 and not learners and not voters & removed
        assert_no_acked_write_lost(cluster, loads)
