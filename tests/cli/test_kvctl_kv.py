"""kvctl KV verbs: put/get/del/txn/compaction/watch, output formats, exit codes."""

from __future__ import annotations

import base64
import json
import shutil

import pytest

from kvstore.cli.kvctl import hoist_global_options


def _etcdctl(cluster, *args, input=None):
    return cluster.etcdctl(*args, input=input)


@pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")
def test_simple_output_matches_etcdctl(cluster, kvctl, ns):
    """The same command sequence through kvctl and etcdctl prints the same text."""

    def script(k):
        return [
            ("put", f"{k}a", "1"),
            ("put", f"{k}a", "2", "--prev-kv"),
            ("put", f"{k}b", "x y"),
            ("get", k, "--prefix"),
            ("get", k, "--prefix", "--keys-only"),
            ("get", k, "--prefix", "--print-value-only"),
            ("get", f"{k}zz"),
            ("get", k, "--prefix", "--limit", "1", "--order", "DESCEND", "--sort-by", "VALUE"),
            ("del", f"{k}b", "--prev-kv"),
            ("del", f"{k}nothing"),
        ]

    ours = [kvctl(*cmd) for cmd in script(ns + "ours/")]
    theirs = [_etcdctl(cluster, *cmd) for cmd in script(ns + "etcd/")]
    for cmd, o, t in zip(script(""), ours, theirs, strict=True):
        assert (o.code, o.out.replace("ours/", "etcd/")) == (t.returncode, t.stdout), cmd
    txn = 'value("{k}a") = "2"\n\nput {k}a 3\nget {k}a\ndel {k}b\n\nget {k}a\n\n'
    o = kvctl("txn", input=txn.format(k=ns + "ours/"))
    t = _etcdctl(cluster, "txn", input=txn.format(k=ns + "etcd/"))
    assert o.out.replace("ours/", "etcd/") == t.stdout == f"SUCCESS\n\nOK\n\n{ns}etcd/a\n3\n\n0\n"


def test_put_reads_value_from_stdin_and_get_flags(kvctl, ns):
    assert kvctl("put", ns + "k", input="from stdin").out == "OK\n"
    assert kvctl("get", ns + "k", "--print-value-only").out == "from stdin\n"
    for i in range(3):
        kvctl("put", f"{ns}{i}", f"v{i}")
    assert kvctl("get", ns + "0", ns + "2").out == f"{ns}0\nv0\n{ns}1\nv1\n"
    assert kvctl("get", ns + "1", "--from-key", "--limit", "1").out == f"{ns}1\nv1\n"
    assert kvctl("get", ns, "--prefix", "--count-only").out == "4\n"
    assert kvctl("get", ns + "0", "--consistency", "s").out == f"{ns}0\nv0\n"
    first = json.loads(kvctl("get", ns + "0", "-w", "json").out)
    rev = first["kvs"][0]["mod_revision"]
    kvctl("put", ns + "0", "changed")
    assert kvctl("get", ns + "0", "--rev", str(rev), "--print-value-only").out == "v0\n"


def test_json_output_is_etcdctl_shaped(kvctl, ns):
    kvctl("put", ns + "k", "v")
    doc = json.loads(kvctl("-w", "json", "get", ns + "k").out)
    assert doc["count"] == 1 and doc["header"]["revision"] > 0
    kv = doc["kvs"][0]
    assert base64.b64decode(kv["key"]) == (ns + "k").encode()
    assert base64.b64decode(kv["value"]) == b"v" and kv["version"] == 1


def test_table_output_lists_every_key(kvctl, ns):
    kvctl("put", ns + "a", "1")
    kvctl("put", ns + "b", "2")
    out = kvctl("get", ns, "--prefix", "-w", "table").out
    assert "KEY" in out and f"{ns}a" in out and f"{ns}b" in out and out.startswith("+")


def test_global_options_may_follow_the_verb():
    assert hoist_global_options(["get", "k", "-w", "json", "--endpoints=a:1"]) == [
        "-w",
        "json",
        "--endpoints=a:1",
        "get",
        "k",
    ]
    assert hoist_global_options(["lock", "n", "--", "cmd", "-w", "x"]) == [
        "lock",
        "n",
        "--",
        "cmd",
        "-w",
        "x",
    ]


def test_txn_from_file_interactive_and_failure_branch(kvctl, ns, tmp_path):
    kvctl("put", ns + "k", "v")
    f = tmp_path / "txn.txt"
    f.write_text(f'create("{ns}k") = "0"\n\nput {ns}k never\n\nget {ns}k\n')
    r = kvctl("txn", "--file", str(f))
    assert r.code == 0 and r.out == f"FAILURE\n\n{ns}k\nv\n"
    r = kvctl("txn", "-i", input=f'mod("{ns}k") > "0"\n\nput {ns}k w\n\n\n')
    assert r.code == 0
    assert r.out.startswith("compares:\nsuccess requests (get, put, del):\n")
    assert r.out.endswith("SUCCESS\n\nOK\n")
    assert kvctl("get", ns + "k", "--print-value-only").out == "w\n"


def test_del_prefix_and_compaction_errors(kvctl, ns):
    kvctl("put", ns + "a", "1")
    rev = json.loads(kvctl("-w", "json", "put", ns + "b", "2").out)["header"]["revision"]
    assert kvctl("del", ns, "--prefix").out == "2\n"
    r = kvctl("compaction", str(rev))
    assert (r.code, r.out) == (0, f"compacted revision {rev}\n")
    again = kvctl("compaction", str(rev))
    assert again.code == 2 and again.out == ""
    assert again.err == "Error: etcdserver: mvcc: required revision has been compacted\n"


def test_bad_input_exits_2_with_one_line(kvctl, ns):
    r = kvctl("txn", input="not a compare\n\n")
    assert (r.code, r.err) == (2, "Error: malformed comparison: not a compare\n")
    r = kvctl("get", ns, "x", "--prefix")
    assert r.code == 2 and r.err.count("\n") == 1 and "Traceback" not in r.err
    assert kvctl("get").code == 2
    assert kvctl("put", ns + "k", "v", "--lease", "zz").code == 2


def test_unreachable_cluster_exits_3():
    from click.testing import CliRunner

    from kvstore.cli.kvctl import run
    from kvstore.testing.waiting import free_port

    with CliRunner().isolation() as (_out, err, _):
        code = run(
            ["--endpoints", f"127.0.0.1:{free_port()}", "--dial-timeout", "200ms", "get", "k"]
        )
    assert code == 3
    assert err.getvalue().decode().startswith("Error: could not connect to any endpoint")


def test_watch_prints_events_and_runs_exec(kvctl, ns, tmp_path):
    rev = json.loads(kvctl("-w", "json", "put", ns + "k", "1").out)["header"]["revision"]
    kvctl("del", ns + "k")
    r = kvctl("watch", ns, "--prefix", "--rev", str(rev), "--prev-kv", "--max-events", "2")
    assert r.code == 0
    assert r.out == f"PUT\n{ns}k\n1\nDELETE\n{ns}k\n1\n{ns}k\n\n"
    log = tmp_path / "events"
    cmd = f"sh -c 'echo $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE >> {log}'"
    r = kvctl("watch", ns + "k", "--rev", str(rev), "--max-events", "2", "--exec", cmd)
    assert r.code == 0
    assert log.read_text() == f"PUT {ns}k 1\nDELETE {ns}k\n"


def test_interactive_watch_reads_watch_commands(kvctl, ns):
    rev = json.loads(kvctl("-w", "json", "put", ns + "a", "1").out)["header"]["revision"]
    kvctl("put", ns + "b", "2")
    r = kvctl(
        "watch",
        "-i",
        "--max-events",
        "2",
        input=f"watch --rev {rev} {ns}a\nwatch --prefix --rev {rev} {ns}b\n",
    )
    assert r.code == 0
    assert f"PUT\n{ns}a\n1\n" in r.out and f"PUT\n{ns}b\n2\n" in r.out


def test_endpoints_from_environment_and_version(cluster, ns):
    from click.testing import CliRunner

    from kvstore.cli.kvctl import run

    env = {"KVCTL_ENDPOINTS": ",".join(cluster.endpoints)}
    with CliRunner().isolation(env=env) as (out, _err, _):
        assert run(["put", ns + "env", "v"]) == 0
        assert run(["version"]) == 0
    text = out.getvalue().decode()
    assert text.startswith("OK\nkvctl version: ") and text.endswith("API version: 3.4\n")


def test_table_is_rejected_in_one_line_where_unsupported(kvctl, ns):
    r = kvctl("put", ns + "k", "v", "-w", "table")
    assert (r.code, r.err) == (2, "Error: table not supported as output format\n")
