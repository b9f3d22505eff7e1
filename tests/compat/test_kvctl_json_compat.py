"""`kvctl -w json` prints what `etcdctl -w json` (3.4) prints, command by command.

Both tools run against the SAME cluster (real etcd, and kvstore), one right
after the other:
  * read-only commands must print identical documents (only the fields that
    legitimately move between two calls are masked: "took", a lease's
    remaining "ttl");
  * commands that write are run by each tool on its own key/lease/member, so
    revisions and ids differ: their documents must have the same structure
    (same field names, in the same order, with the same JSON types);
  * commands that print text even with -w json (compaction, defrag) print the
    same text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from click.testing import CliRunner
from compat_harness import run_etcdctl

from kvstore.cli.kvctl import run as kvctl_run
from kvstore.testing.waiting import wait_until

P = "/jsoncompat"


def _kvctl(cluster: Any, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation(input=stdin) as (out, err, _):
        code = kvctl_run(["--endpoints", ",".join(cluster.endpoints), *args])
    return code, out.getvalue().decode(), err.getvalue().decode()


def _etcdctl(cluster: Any, args: list[str], stdin: str | None = None) -> tuple[int, str, str]:
    r = run_etcdctl(cluster, args, stdin)
    return r.returncode, r.stdout, r.stderr


def _docs(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def shape(doc: Any) -> Any:
    """Field names (in order) and JSON types, values dropped. List items are
    sorted by their shape (a new member's place in the list follows its
    random id)."""
    if isinstance(doc, dict):
        return [(k, shape(v)) for k, v in doc.items()]
    if isinstance(doc, list):
        return sorted((shape(x) for x in doc), key=json.dumps)
    return type(doc).__name__


def _mask(doc: Any, fields: tuple[str, ...]) -> Any:
    if isinstance(doc, dict):
        return {k: ("<masked>" if k in fields else _mask(v, fields)) for k, v in doc.items()}
    if isinstance(doc, list) and doc and all(isinstance(x, dict) for x in doc):
        # Lists the server or etcdctl builds from a map or concurrently
        # (leases, endpoint health) come in any order: compare them sorted.
        return sorted((_mask(x, fields) for x in doc), key=lambda x: json.dumps(x, sort_keys=True))
    if isinstance(doc, list):
        return [_mask(x, fields) for x in doc]
    return doc


def both(cluster: Any, *args: str, stdin: str | None = None) -> tuple[list[Any], list[Any]]:
    """(etcdctl's documents, kvctl's documents) for the same arguments."""
    e_code, e_out, e_err = _etcdctl(cluster, [*args, "-w", "json"], stdin)
    k_code, k_out, k_err = _kvctl(cluster, [*args, "-w", "json"], stdin)
    assert e_code == 0, f"etcdctl {args}: {e_err}"
    assert k_code == 0, f"kvctl {args}: {k_err}"
    return _docs(e_out), _docs(k_out)


def same(cluster: Any, *args: str, mask: tuple[str, ...] = (), stdin: str | None = None) -> None:
    etcd, kv = both(cluster, *args, stdin=stdin)
    assert etcd, f"etcdctl printed nothing for {args}"
    # Each tool may be answered by a different member: its id is in the header.
    mask = (*mask, "member_id")
    assert _mask(kv, mask) == _mask(etcd, mask), args


def same_shape(
    cluster: Any, etcd_args: list[str], kv_args: list[str], stdin: str | None = None
) -> tuple[Any, Any]:
    e_code, e_out, e_err = _etcdctl(cluster, [*etcd_args, "-w", "json"], stdin)
    k_code, k_out, k_err = _kvctl(cluster, [*kv_args, "-w", "json"], stdin)
    assert e_code == 0, f"etcdctl {etcd_args}: {e_err}"
    assert k_code == 0, f"kvctl {kv_args}: {k_err}"
    etcd, kv = _docs(e_out), _docs(k_out)
    assert etcd and shape(kv) == shape(etcd), (etcd_args, etcd, kv)
    return etcd, kv


@pytest.fixture(scope="module")
def cluster(compat_cluster):
    _backend, c = compat_cluster
    return c


def test_kv_commands(cluster):
    for who in ("e", "k"):
        _etcdctl(cluster, ["put", f"{P}/{who}/a", "1"])
        _etcdctl(cluster, ["put", f"{P}/{who}/b", "2"])
    same_shape(cluster, ["put", f"{P}/e/a", "x"], ["put", f"{P}/k/a", "x"])
    same_shape(
        cluster, ["put", f"{P}/e/a", "y", "--prev-kv"], ["put", f"{P}/k/a", "y", "--prev-kv"]
    )
    same(cluster, "get", f"{P}/e/a")
    same(cluster, "get", f"{P}/", "--prefix")
    same(cluster, "get", f"{P}/", "--prefix", "--keys-only", "--limit", "1")  # "more": true
    same(cluster, "get", f"{P}/", "--prefix", "--order", "DESCEND", "--sort-by", "MODIFY")
    same(cluster, "get", f"{P}/nothing")
    same(cluster, "del", f"{P}/nothing")
    same_shape(cluster, ["del", f"{P}/e/b", "--prev-kv"], ["del", f"{P}/k/b", "--prev-kv"])
    same_shape(cluster, ["del", f"{P}/e/", "--prefix"], ["del", f"{P}/k/", "--prefix"])


def test_txn(cluster):
    for who in ("e", "k"):
        _etcdctl(cluster, ["put", f"{P}/txn/{who}", "v"])
    # Each tool runs the same txn on its own key (succeeded, then failed branch).
    ok = 'value("{k}") = "v"\n\nput {k} w\nget {k}\ndel {k}-none\n\nget {k}\n\n'
    fail = 'value("{k}") = "nope"\n\nput {k} w\n\nget {k}\nput {k} z --prev-kv\n\n'
    for template in (ok, fail):
        e_in = template.format(k=f"{P}/txn/e")
        k_in = template.format(k=f"{P}/txn/k")
        e_code, e_out, e_err = _etcdctl(cluster, ["txn", "-w", "json"], e_in)
        k_code, k_out, k_err = _kvctl(cluster, ["txn", "-w", "json"], k_in)
        assert e_code == 0 and k_code == 0, (e_err, k_err)
        assert shape(_docs(k_out)) == shape(_docs(e_out)), (e_out, k_out)


def test_lease_commands(cluster):
    (e_grant,), (k_grant,) = same_shape(
        cluster, ["lease", "grant", "600"], ["lease", "grant", "600"]
    )
    e_id, k_id = f"{e_grant['ID']:x}", f"{k_grant['ID']:x}"
    _etcdctl(cluster, ["put", f"{P}/lease/e", "v", f"--lease={e_id}"])
    _etcdctl(cluster, ["put", f"{P}/lease/k", "v", f"--lease={k_id}"])
    same(cluster, "lease", "timetolive", e_id, mask=("ttl",))
    same(cluster, "lease", "timetolive", e_id, "--keys", mask=("ttl",))
    same(cluster, "lease", "list")
    same_shape(
        cluster, ["lease", "keep-alive", "--once", e_id], ["lease", "keep-alive", "--once", k_id]
    )
    same_shape(cluster, ["lease", "revoke", e_id], ["lease", "revoke", k_id])
    same(cluster, "lease", "timetolive", e_id)  # gone: ttl -1, keys null


def test_cluster_and_maintenance_commands(cluster):
    same(cluster, "member", "list")
    same(
        cluster,
        "endpoint",
        "status",
        mask=("raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse"),
    )
    same(cluster, "endpoint", "hashkv")
    same(cluster, "endpoint", "health", mask=("took",))
    same(cluster, "alarm", "list")
    same(cluster, "alarm", "disarm")


def test_member_add_update_remove(cluster):
    docs = {}
    for tool, run, port in (("etcdctl", _etcdctl, 1), ("kvctl", _kvctl, 2)):
        add = ["member", "add", f"json-{tool}", f"--peer-urls=http://127.0.0.1:{port}"]

        def attempt(run=run, add=add) -> str | None:
            # etcd refuses reconfiguration until every voter was connected for 5 s.
            code, out, err = run(cluster, [*add, "--learner", "-w", "json"])
            assert code == 0 or "unhealthy cluster" in err, err
            return out if code == 0 else None

        added = json.loads(wait_until(attempt, timeout=30, what="member add accepted"))
        mid = f"{added['member']['ID']:x}"
        code, updated, err = run(
            cluster,
            ["member", "update", mid, f"--peer-urls=http://127.0.0.1:{port + 10}", "-w", "json"],
        )
        assert code == 0, err
        code, removed, err = run(cluster, ["member", "remove", mid, "-w", "json"])
        assert code == 0, err
        docs[tool] = [added, json.loads(updated), json.loads(removed)]
    assert shape(docs["kvctl"]) == shape(docs["etcdctl"])


def test_move_leader(cluster):
    def leader_and_other() -> tuple[str, str] | None:
        code, out, _ = _etcdctl(cluster, ["endpoint", "status", "-w", "json"])
        if code != 0:
            return None
        statuses = json.loads(out)
        leader = statuses[0]["Status"]["leader"]
        others = [s["Status"]["header"]["member_id"] for s in statuses]
        others = [m for m in others if m != leader]
        return (f"{leader:x}", f"{others[0]:x}") if leader and others else None

    docs = {}
    for tool, run in (("etcdctl", _etcdctl), ("kvctl", _kvctl)):
        _, target = wait_until(leader_and_other, timeout=30, what="a leader")
        code, out, err = run(cluster, ["move-leader", target, "-w", "json"])
        assert code == 0, err
        docs[tool] = json.loads(out)
    assert shape(docs["kvctl"]) == shape(docs["etcdctl"])


def test_watch_prints_one_document_per_response(cluster):
    code, out, _ = _etcdctl(cluster, ["put", f"{P}/watch/a", "1", "-w", "json"])
    start = json.loads(out)["header"]["revision"]
    _etcdctl(cluster, ["put", f"{P}/watch/b", "2"])
    _etcdctl(cluster, ["txn"], f"\nput {P}/watch/a 3\ndel {P}/watch/b\n\n\n")
    args = ["watch", f"{P}/watch/", "--prefix", "--prev-kv", "--rev", str(start), "-w", "json"]
    etcd = _watch_lines(["etcdctl", "--endpoints", ",".join(cluster.endpoints), *args], events=4)
    kv = _watch_lines(
        [sys.executable, "-m", "kvstore.cli.kvctl", "--endpoints", ",".join(cluster.endpoints)]
        + [*args, "--max-events", "4"],
        events=4,
    )
    # Responses may group revisions differently (replay batching is the
    # server's choice); every response has the same fields, and the events
    # are identical.
    assert {json.dumps(shape({**d, "Events": None})) for d in kv} == {
        json.dumps(shape({**d, "Events": None})) for d in etcd
    }
    assert [e for d in kv for e in d["Events"]] == [e for d in etcd for e in d["Events"]]


def _watch_lines(cmd: list[str], events: int) -> list[dict]:
    env = {**os.environ, "ETCDCTL_API": "3", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    docs: list[dict] = []
    try:
        while sum(len(d["Events"]) for d in docs) < events:
            line = proc.stdout.readline()
            assert line, f"{cmd[0]} ended early: {proc.stderr.read()}"
            docs.append(json.loads(line))
    finally:
        proc.kill()
        proc.wait(timeout=30)
    return docs


def test_lock_prints_the_owner_key_as_a_get_response(cluster):
    docs = {}
    for tool, cmd in (
        ("etcdctl", ["etcdctl"]),
        ("kvctl", [sys.executable, "-m", "kvstore.cli.kvctl"]),
    ):
        env = {**os.environ, "ETCDCTL_API": "3", "PYTHONPATH": os.pathsep.join(sys.path)}
        proc = subprocess.Popen(
            [*cmd, "--endpoints", ",".join(cluster.endpoints), "lock", f"{P}/lock/{tool}"]
            + ["-w", "json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            docs[tool] = json.loads(line)
        finally:
            proc.kill()
            proc.wait(timeout=30)
    assert shape(docs["kvctl"]) == shape(docs["etcdctl"])


def test_text_commands_print_etcdctls_text(cluster):
    code, out, _ = _etcdctl(cluster, ["put", f"{P}/compact", "x", "-w", "json"])
    rev = json.loads(out)["header"]["revision"]
    e_code, e_out, _ = _etcdctl(cluster, ["compaction", str(rev - 1), "-w", "json"])
    k_code, k_out, _ = _kvctl(cluster, ["compaction", str(rev), "-w", "json"])
    assert (e_code, k_code) == (0, 0)
    assert e_out == f"compacted revision {rev - 1}\n" and k_out == f"compacted revision {rev}\n"
    ep = cluster.endpoints[0]
    e = _etcdctl_one(cluster, ep, ["defrag", "-w", "json"])
    code, k_out, _ = _kvctl_one(ep, ["defrag", "-w", "json"])
    assert k_out == e == f"Finished defragmenting etcd member[{ep}]\n"


def _etcdctl_one(cluster: Any, ep: str, args: list[str]) -> str:
    return subprocess.run(
        ["etcdctl", "--endpoints", ep, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ETCDCTL_API": "3"},
        check=True,
    ).stdout


def _kvctl_one(ep: str, args: list[str]) -> tuple[int, str, str]:
    runner = CliRunner()
    with runner.isolation() as (out, err, _):
        code = kvctl_run(["--endpoints", ep, *args])
    return code, out.getvalue().decode(), err.getvalue().decode()
