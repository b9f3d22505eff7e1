"""The `kvstore` command on bad flags and bad data dirs: one clear line on
stderr, a non-zero exit, no traceback, and the data dir left untouched."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from kvstore.devcluster import child_env
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.testing.waiting import free_port, wait_until

pytestmark = pytest.mark.e2e

CMD = [sys.executable, "-m", "kvstore.cli.server_cmd"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CMD, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**child_env(), **(env or {})},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert fragment in lines[0], proc.stderr


def snapshot_tree(path: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def node_args(tmp: Path, name: str = "kv1", client: int = 0, peer: int = 0) -> list[str]:
    client = client or free_port()
    peer = peer or free_port()
    return [
        "--name", name,
        "--data-dir", str(tmp / "data"),
        "--listen-client-urls", f"http://127.0.0.1:{client}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
        "--initial-cluster", f"{name}=http://127.0.0.1:{peer}",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--election-timeout", "100"], "at least 5 times"),
        (["--initial-cluster-state", "maybe"], "--initial-cluster-state"),
        (["--name", "kv9", "--initial-cluster", "kv1=http://127.0.0.1:1"], "kv9 not found"),
        (["--listen-client-urls", "nonsense"], "invalid URL"),
        (["--no-such-flag"], "no-such-flag"),
        (["--heartbeat-interval", "abc"], "heartbeat-interval"),
    ],
)
def test_bad_flags_give_one_line_and_nonzero_exit(tmp_path: Path, args, fragment) -> None:  # noqa: ANN001
    proc = run(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "default.kvstore").exists()  # nothing created


def test_flags_also_come_from_the_environment(tmp_path: Path) -> None:
    proc = run(cwd=tmp_path, env={"KVSTORE_ELECTION_TIMEOUT": "100"})
    assert_one_line_error(proc, "at least 5 times")


def test_data_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("not a dir")
    proc = run(*node_args(tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, "not a directory")
    assert (tmp_path / "data").read_text() == "not a dir"


def test_foreign_nonempty_dir_is_refused_and_untouched(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "precious.txt").write_text("keep me")
    before = snapshot_tree(data)
    proc = run(*node_args(tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, str(data))
    assert snapshot_tree(data) == before


def test_corrupt_database_is_refused_with_the_dir_named(tmp_path: Path) -> None:
    db = tmp_path / "data" / "db"
    db.mkdir(parents=True)
    (db / "CURRENT").write_text("garbage\n")
    (db / "MANIFEST-000001").write_bytes(b"\x00garbage" * 10)
    before = snapshot_tree(tmp_path / "data")
    proc = run(*node_args(tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, str(tmp_path / "data"))
    assert snapshot_tree(tmp_path / "data") == before


def start_and_stop(
    tmp_path: Path, args: list[str], while_running: Callable[[], object] | None = None
) -> object:
    """Run a node until its ready line, call `while_running()`, then SIGTERM
    it; it must exit 0. Returns what `while_running` returned."""
    proc = subprocess.Popen(
        [*CMD, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=child_env(),
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert "ready to serve client requests" in line, proc.stderr.read() if proc.stderr else ""
        seen = while_running() if while_running is not None else None
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        return seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_data_dir_of_another_member_is_refused_and_untouched(tmp_path: Path) -> None:
    start_and_stop(tmp_path, node_args(tmp_path, "kv1"))
    before = snapshot_tree(tmp_path / "data")
    proc = run(*node_args(tmp_path, "kv2"), cwd=tmp_path)
    assert_one_line_error(proc, "belongs to member")
    assert snapshot_tree(tmp_path / "data") == before


def test_client_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = run(*node_args(tmp_path, client=port), cwd=tmp_path)
    assert_one_line_error(proc, f"127.0.0.1:{port}")


def _client_address(args: list[str]) -> str:
    return args[args.index("--listen-client-urls") + 1].split("://", 1)[1]


def test_sigterm_is_a_graceful_exit_and_restart_keeps_identity(tmp_path: Path) -> None:
    args = node_args(tmp_path)
    address = _client_address(args)

    def identity(put: bool) -> tuple[int, int, list[bytes]]:
        """(member id, cluster id, values of key "k") as the running node answers."""
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            kv = rpc_pb2_grpc.KVStub(channel)
            if put:
                kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"before restart"), timeout=30)
            got = kv.Range(rpc_pb2.RangeRequest(key=b"k"), timeout=30)
            status = rpc_pb2_grpc.MaintenanceStub(channel).Status(
                rpc_pb2.StatusRequest(), timeout=30
            )
        return status.header.member_id, status.header.cluster_id, [x.value for x in got.kvs]

    first = start_and_stop(tmp_path, args, lambda: identity(put=True))
    # Same dir, same flags: recovers as the same member of the same cluster,
    # with its data.
    again = start_and_stop(tmp_path, args, lambda: identity(put=False))
    assert isinstance(first, tuple) and first[0] != 0 and first[1] != 0
    assert first == again
    assert again[2] == [b"before restart"]


def test_ready_line_then_health_over_http(tmp_path: Path) -> None:
    import json
    import urllib.request

    metrics = free_port()
    args = [*node_args(tmp_path), "--listen-metrics-urls", f"http://127.0.0.1:{metrics}"]
    proc = subprocess.Popen(
        [*CMD, *args], stdout=subprocess.PIPE, text=True, cwd=tmp_path, env=child_env()
    )
    try:
        assert "ready" in (proc.stdout.readline() if proc.stdout else "")

        def health() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health", timeout=2) as r:
                return json.loads(r.read())

        assert wait_until(lambda: health() == {"health": "true"}, timeout=30)
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/version", timeout=2) as r:
            assert json.loads(r.read())["etcdserver"].startswith("3.4.")
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=2) as r:
            assert b"etcd_server_has_leader 1.0" in r.read()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
