"""The three-member cluster of docker-compose.yml, driven from the host.

One compose project per session (unique name, free host ports), built from the
offline image. Clients reach the members only through the published client
ports, as a user would: etcdctl and raw gRPC stubs. Failures are real ones:
`docker kill` of the leader's container, `docker network disconnect` of a
member, `down`/`up` of the whole project. Each test leaves the cluster whole
(finally: start / reconnect), and the `cluster` fixture waits until all three
members are healthy again before the next test.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dockerkit import SERVICES, ComposeCluster, get_prefix, put, run  # noqa: E402

from kvstore.pb import rpc_pb2, rpc_pb2_grpc  # noqa: E402
from kvstore.testing.waiting import wait_until  # noqa: E402

pytestmark = [pytest.mark.docker, pytest.mark.e2e, pytest.mark.timeout(1200)]

WRITES = 20


def prefix() -> bytes:
    return f"t-{uuid.uuid4().hex[:8]}/".encode()


def put_with_retry(cluster: ComposeCluster, services: list[str], key: bytes, value: bytes) -> None:
    """Put through the first of `services` that acknowledges it (an election may
    be in progress); fail after the deadline."""

    def attempt() -> bool:
        for svc in services:
            try:
                put(cluster.endpoint(svc), key, value, timeout=3)
                return True
            except grpc.RpcError:
                continue
        return False

    wait_until(attempt, timeout=60, interval=0.2, what=f"put {key!r} via {services}")


def wait_converged(cluster: ComposeCluster, pfx: bytes, expected: dict[bytes, bytes]) -> None:
    """Every member's local (serializable) view of `pfx` holds every acknowledged
    write, and all three views are identical."""

    def converged() -> bool:
        views = [get_prefix(cluster.endpoint(svc), pfx) for svc in SERVICES]
        return all(v == views[0] for v in views) and expected.items() <= views[0].items()

    try:
        wait_until(converged, timeout=60, interval=0.25, what=f"{pfx!r} converged")
    except AssertionError as exc:
        views = {}
        for svc in SERVICES:
            try:
                views[svc] = len(get_prefix(cluster.endpoint(svc), pfx))
            except grpc.RpcError as err:
                views[svc] = err.code().name
        raise AssertionError(f"{exc}; keys per member {views}, expected {len(expected)}") from exc


def test_put_and_get_through_every_published_port(cluster: ComposeCluster) -> None:
    pfx = prefix()
    key = (pfx + b"etcdctl").decode()
    cluster.etcdctl("put", key, "from-etcdctl", endpoints=[cluster.endpoint("kv1")])
    for svc in SERVICES:  # linearizable reads, each member on its own port
        out = cluster.etcdctl("get", key, "--print-value-only", endpoints=[cluster.endpoint(svc)])
        assert out.stdout.strip() == "from-etcdctl", svc
    put(cluster.endpoint("kv2"), pfx + b"grpc", b"from-grpc")
    with grpc.insecure_channel(cluster.endpoint("kv3")) as channel:
        resp = rpc_pb2_grpc.KVStub(channel).Range(
            rpc_pb2.RangeRequest(key=pfx + b"grpc"), timeout=5
        )
    assert [kv.value for kv in resp.kvs] == [b"from-grpc"]
    wait_converged(cluster, pfx, {pfx + b"etcdctl": b"from-etcdctl", pfx + b"grpc": b"from-grpc"})


def test_etcdctl_watch_through_a_published_port(cluster: ComposeCluster) -> None:
    key = prefix() + b"watched"
    rev = put(cluster.endpoint("kv1"), key, b"first")
    # From `rev`, so the watch sees both writes however late it starts.
    proc = subprocess.Popen(
        ["etcdctl", "--endpoints", cluster.endpoint("kv3"), "watch", key.decode(),
         "--rev", str(rev)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "ETCDCTL_API": "3"},
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line.rstrip("\n")) for line in proc.stdout], daemon=True
    )
    reader.start()
    seen: list[str] = []

    def got(*values: str) -> bool:
        while not lines.empty():
            seen.append(lines.get_nowait())
        return all(v in seen for v in values)

    try:
        wait_until(lambda: got("first"), timeout=30, what="the replayed event")
        put(cluster.endpoint("kv2"), key, b"second")
        wait_until(lambda: got("first", "second"), timeout=30, what="the live event")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert seen[: seen.index("second") + 1] == ["PUT", key.decode(), "first",
                                                "PUT", key.decode(), "second"]  # fmt: skip


def test_grpc_watch_stream_through_a_published_port(cluster: ComposeCluster) -> None:
    key = prefix() + b"stream"
    requests: queue.Queue[rpc_pb2.WatchRequest | None] = queue.Queue()

    def request_iter() -> Iterator[rpc_pb2.WatchRequest]:
        while (req := requests.get()) is not None:
            yield req

    create = rpc_pb2.WatchCreateRequest(key=key)
    requests.put(rpc_pb2.WatchRequest(create_request=create))
    with grpc.insecure_channel(cluster.endpoint("kv2")) as channel:
        responses = rpc_pb2_grpc.WatchStub(channel).Watch(request_iter(), timeout=60)
        try:
            assert next(responses).created
            put(cluster.endpoint("kv1"), key, b"v1")
            resp = next(responses)
            while not resp.events:  # progress notifications carry no events
                resp = next(responses)
            assert [(e.kv.key, e.kv.value) for e in resp.events] == [(key, b"v1")]
        finally:
            requests.put(None)
            responses.cancel()


def test_leader_killed_writes_continue_and_it_catches_up(cluster: ComposeCluster) -> None:
    pfx = prefix()
    acked: dict[bytes, bytes] = {}
    for i in range(5):  # data the killed member already has
        put(cluster.endpoint(SERVICES[i % 3]), pfx + b"before-%d" % i, b"b%d" % i)
        acked[pfx + b"before-%d" % i] = b"b%d" % i
    leader = cluster.leader()
    survivors = [s for s in SERVICES if s != leader]
    cluster.kill(leader)
    try:
        for i in range(WRITES):
            key, value = pfx + b"during-%02d" % i, b"d%d" % i
            # Alternate the entry point; retried while the survivors elect a leader.
            put_with_retry(cluster, survivors[i % 2 :] + survivors[: i % 2], key, value)
            acked[key] = value
        assert cluster.leader(survivors) in survivors
        for svc in survivors:
            assert acked.items() <= get_prefix(cluster.endpoint(svc), pfx).items(), svc
    finally:
        cluster.start(leader)
    cluster.wait_healthy()
    wait_converged(cluster, pfx, acked)


def test_a_member_that_exits_is_restarted_by_its_restart_policy(cluster: ComposeCluster) -> None:
    """restart: unless-stopped — a member process that ends (here: SIGTERM to PID 1 from
    inside, a clean exit 0) comes back by itself and rejoins with its data."""
    pfx = prefix()
    put(cluster.endpoint("kv1"), pfx + b"before", b"1")
    victim = "kv3"
    cid = cluster.container(victim)

    def restarts() -> int:
        return int(run(["docker", "inspect", "-f", "{{.RestartCount}}", cid]).stdout)

    before = restarts()
    cluster.exec_python(victim, "import os, signal; os.kill(1, signal.SIGTERM)")
    wait_until(lambda: restarts() > before, timeout=60, interval=0.25, what="docker restart")
    put_with_retry(cluster, ["kv1", "kv2"], pfx + b"after", b"2")
    cluster.wait_healthy()
    wait_converged(cluster, pfx, {pfx + b"before": b"1", pfx + b"after": b"2"})


def test_down_and_up_keeps_the_data_in_volumes(cluster: ComposeCluster) -> None:
    pfx = prefix()
    data = {pfx + b"k%d" % i: b"v%d" % i for i in range(5)}
    for i, (key, value) in enumerate(data.items()):
        put(cluster.endpoint(SERVICES[i % 3]), key, value)
    cluster.down()
    assert cluster.containers() == []
    assert len(cluster.volumes()) == 3
    cluster.up()
    cluster.wait_healthy()
    wait_converged(cluster, pfx, data)
    for svc in SERVICES:
        got = cluster.etcdctl("get", pfx.decode(), "--prefix", "--print-value-only",
                              endpoints=[cluster.endpoint(svc)])  # fmt: skip
        assert got.stdout.split() == [v.decode() for v in data.values()]


MINORITY_PUT = """
import grpc
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
with grpc.insecure_channel("127.0.0.1:2379") as ch:
    try:
        rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=%r, value=b"minority"), timeout=5)
        print("ACKED")
    except grpc.RpcError as e:
        print("ERR", e.code().name, e.details())
"""

LOCAL_HEALTH = """
import urllib.request, urllib.error
try:
    print(urllib.request.urlopen("http://127.0.0.1:2381/health", timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
"""


def test_network_cut_minority_refuses_writes_majority_accepts(cluster: ComposeCluster) -> None:
    pfx = prefix()
    victim = cluster.leader()  # cut off the leader: the majority must elect a new one
    majority = [s for s in SERVICES if s != victim]
    acked: dict[bytes, bytes] = {}
    cluster.disconnect(victim)
    try:
        # The cut-off member is reachable only from inside its own container.
        minority = cluster.exec_python(victim, MINORITY_PUT % (pfx + b"minority"))
        assert minority.stdout.startswith("ERR"), minority.stdout + minority.stderr
        for i in range(WRITES // 2):
            key, value = pfx + b"majority-%02d" % i, b"m%d" % i
            put_with_retry(cluster, majority[i % 2 :] + majority[: i % 2], key, value)
            acked[key] = value
        # Alone, the old leader steps down (check quorum) and reports no leader.
        wait_until(
            lambda: cluster.exec_python(victim, LOCAL_HEALTH).stdout.strip() == "503",
            timeout=60, interval=0.5, what=f"{victim} /health 503",
        )  # fmt: skip
    finally:
        cluster.connect(victim)
    cluster.wait_healthy()
    wait_converged(cluster, pfx, acked)
    # The unacknowledged write never reached a majority, so it can never commit.
    for svc in SERVICES:
        assert pfx + b"minority" not in get_prefix(cluster.endpoint(svc), pfx), svc


def test_zz_down_v_removes_containers_volumes_and_network(cluster: ComposeCluster) -> None:
    """Last in this module (it empties the cluster; a later test would bring it back)."""
    assert len(cluster.volumes()) == 3
    cluster.down(volumes=True)
    assert cluster.containers() == []
    assert cluster.volumes() == []
    assert cluster.network_names() == []
