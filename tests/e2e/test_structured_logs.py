"""Structured logs on real server processes: every line a member writes is one
JSON object (etcd 3.5's default format) through elections, a Raft snapshot
sent to a lagging member and a NOSPACE alarm, with the stable field names
(ts, level, msg, member-id, cluster-id and the event's own ids/terms/indexes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from e2e_load import put_many  # noqa: E402

from kvstore.devcluster import LocalCluster, child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

pytestmark = pytest.mark.e2e

SNAPSHOT_COUNT = 40
READY = "kvstore: ready to serve client requests on "  # stdout, read by tools: not JSON


def json_lines(path: Path) -> list[dict]:
    """Every line of a member's output as JSON (the ready line excepted)."""
    docs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(READY):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{n} is not JSON: {line!r}") from None
        assert isinstance(doc, dict), line
        assert list(doc)[:4] == ["level", "ts", "caller", "msg"], line
        assert doc["level"] in ("debug", "info", "warn", "error"), line
        assert doc["ts"].endswith("Z") and "T" in doc["ts"], line
        docs.append(doc)
    return docs


def _identified(doc: dict) -> bool:
    return len(doc.get("member-id", "")) == 16 and len(doc.get("cluster-id", "")) == 16


def test_logs_are_json_through_elections_snapshots_and_alarms(tmp_path: Path) -> None:
    cluster = LocalCluster(
        3, base_dir=tmp_path / "c", extra_args=("--snapshot-count", str(SNAPSHOT_COUNT))
    )
    with cluster:
        leader = cluster.wait_leader()
        lagging = (leader + 1) % 3
        put_many(cluster.endpoints[leader], 10, b"before/")
        cluster.kill(lagging)
        put_many(cluster.endpoints[leader], 5 * SNAPSHOT_COUNT, b"during/")
        leader_log = cluster.members[leader].log_path
        wait_until(lambda: b"raft log compacted" in leader_log.read_bytes(), timeout=30)
        cluster.restart(lagging, wait=True, timeout=60)
        lagging_log = cluster.members[lagging].log_path
        wait_until(
            lambda: b"installed snapshot at index" in lagging_log.read_bytes(),
            timeout=60,
            what="snapshot installed on the lagging member",
        )
        cluster.kill(leader)  # kill -9: the other two elect a new leader
        new_leader = cluster.wait_leader(timeout=60, exclude=(leader,))
        cluster.restart(leader, wait=True, timeout=60)
        logs = {i: json_lines(m.log_path) for i, m in enumerate(cluster.members)}

    ids = {doc["member-id"] for docs in logs.values() for doc in docs if _identified(doc)}
    assert len(ids) == 3  # each member names itself
    assert len({doc["cluster-id"] for d in logs.values() for doc in d if _identified(doc)}) == 1
    # The election after the kill, as seen by the new leader: who, which term.
    elected = [d for d in logs[new_leader] if "leader-id" in d and d["term"] > 0 and _identified(d)]
    assert any(d["leader-id"] == d["member-id"] and d["role"] == "LEADER" for d in elected)
    # The snapshot: compacted and sent by the leader, received and installed by the follower.
    compacted = [d for d in logs[leader] if "compact-index" in d]
    assert compacted and all(_identified(d) for d in compacted)
    assert compacted[0]["snapshot-index"] >= compacted[0]["compact-index"] > 0
    sent = [d for d in logs[leader] if d["msg"].startswith("sent snapshot")]
    installed = [d for d in logs[lagging] if d["msg"].startswith("installed snapshot")]
    received = [d for d in logs[lagging] if d["msg"].startswith("received snapshot")]
    assert sent and received and installed
    assert sent[0]["remote-peer-id"] == received[0]["member-id"]
    assert received[0]["remote-peer-id"] == sent[0]["member-id"]
    assert installed[0]["snapshot-index"] == received[0]["snapshot-index"] > 0
    assert isinstance(installed[0]["snapshot-term"], int)
    # Startup: one line each for what an operator needs.
    startup = {d["msg"].split(" ")[0] for d in logs[new_leader] if d["caller"].startswith("cli/")}
    for first_word in ("kvstore", "member", "cluster", "data", "listening", "client/peer"):
        assert first_word in startup
    assert any(d.get("tls") is False for d in logs[new_leader])
    assert any(d.get("auth") is False for d in logs[new_leader])


def test_nospace_alarm_is_a_json_warning_with_sizes(tmp_path: Path) -> None:
    with (
        LocalCluster(1, base_dir=tmp_path, extra_args=("--quota-backend-bytes", "1")) as cluster,
        grpc.insecure_channel(cluster.endpoints[0]) as ch,
    ):
        with pytest.raises(grpc.RpcError) as refused:
            rpc_pb2_grpc.KVStub(ch).Put(rpc_pb2.PutRequest(key=b"k", value=b"v"), timeout=10)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        log = cluster.members[0].log_path
        wait_until(lambda: b"NOSPACE" in log.read_bytes(), timeout=30, what="alarm logged")
        docs = json_lines(log)
    alarm = [d for d in docs if "quota-bytes" in d]
    assert alarm and alarm[0]["level"] == "warn" and _identified(alarm[0])
    assert alarm[0]["quota-bytes"] == 1 and alarm[0]["db-size-bytes"] > 1


@pytest.mark.parametrize(
    ("args", "stream"),
    [(("--log-format", "text"), "stderr"), (("--log-outputs", "stdout"), "stdout")],
)
def test_log_format_and_outputs_flags(tmp_path: Path, args: tuple[str, ...], stream: str) -> None:
    client, peer = free_port(), free_port()
    cmd = [
        sys.executable, "-m", "kvstore.cli.server_cmd", "--name", "n1",
        "--data-dir", str(tmp_path / "n1"),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"n1=http://127.0.0.1:{peer}", *args,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env()
    )
    before: list[str] = []
    try:
        assert proc.stdout is not None
        # The ready line is on stdout in every format (first there unless the
        # logs go to stdout too).
        while not (line := proc.stdout.readline()).startswith(READY):
            assert line, "exited before the ready line"
            before.append(line)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert before == [] or stream == "stdout"
    lines = before + out.splitlines() if stream == "stdout" else err.splitlines()
    assert any("shutting down" in line for line in lines)
    if "text" in args:
        assert all(not line.startswith("{") for line in lines) and " INFO kvstore" in err
    else:
        assert all(json.loads(line)["msg"] for line in lines) and err == ""


def test_bad_log_output_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = str(tmp_path / "missing-dir" / "x.log")
    r = subprocess.run(
        [sys.executable, "-m", "kvstore.cli.server_cmd", "--log-outputs", bad],
        capture_output=True, text=True, env=child_env(), timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("kvstore: error: --log-outputs")
