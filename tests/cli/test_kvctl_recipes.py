"""kvctl lock / elect (real processes, released on SIGTERM) and config load/dump."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from kvstore.cli import kvctl_config


def _spawn(cluster, *args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvstore.cli.kvctl",
            "--endpoints",
            ",".join(cluster.endpoints),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _stop(proc: subprocess.Popen) -> tuple[int, str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


@pytest.mark.integration
def test_lock_holds_until_sigterm_and_runs_commands(cluster, kvctl, ns, tmp_path):
    name = ns + "lk"
    holder = _spawn(cluster, "lock", name)
    try:
        key = holder.stdout.readline().rstrip("\n")
        assert key.startswith(name + "/")
        assert kvctl("get", key, "--keys-only").out == f"{key}\n\n"
        out = tmp_path / "env"
        # A second contender waits: run it with a command after the holder is stopped.
        code, _, err = _stop(holder)
        assert code == 0, err
        assert kvctl("get", name + "/", "--prefix", "--count-only").out == "0\n"
        r = kvctl("lock", name, "--", "sh", "-c", f'echo "$ETCD_LOCK_KEY $ETCD_LOCK_REV" > {out}')
        assert r.code == 0, r.err
        lock_key, rev = out.read_text().split()
        assert lock_key.startswith(name + "/") and int(rev) > 0
        failing = kvctl("lock", name, "--", "sh", "-c", "exit 7")
        assert failing.code == 7
        assert kvctl("get", name + "/", "--prefix", "--count-only").out == "0\n"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


@pytest.mark.integration
def test_elect_campaign_and_observe(cluster, kvctl, ns):
    name = ns + "el"
    leader = _spawn(cluster, "elect", name, "first")
    observer = None
    try:
        key = leader.stdout.readline().rstrip("\n")
        assert key.startswith(name + "/") and leader.stdout.readline() == "first\n"
        observer = _spawn(cluster, "elect", "-l", name)
        assert observer.stdout.readline() == key + "\n"
        assert observer.stdout.readline() == "first\n"
        code, _, err = _stop(leader)
        assert code == 0, err
        assert kvctl("get", name + "/", "--prefix", "--count-only").out == "0\n"
    finally:
        for p in (leader, observer):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()


def test_config_load_dry_run_apply_and_dump_roundtrip(kvctl, ns, tmp_path):
    prefix = ns + "app"
    doc = "db:\n  host: db1\n  port: 5432\n  tls: true\nreplicas: [a, b]\nempty: null\n"
    dry = kvctl("config", "load", "-", "--prefix", prefix, "--dry-run", input=doc)
    assert dry.code == 0 and f"+ {prefix}/db/host = db1" in dry.out
    assert dry.out.endswith("6 to add, 0 to change, 0 to delete\n")
    assert kvctl("get", prefix, "--prefix", "--count-only").out == "0\n"
    applied = kvctl("config", "load", "-", "--prefix", prefix, input=doc)
    assert applied.code == 0 and "applied at revision" in applied.out
    assert kvctl("get", f"{prefix}/replicas/1", "--print-value-only").out == "b\n"
    dumped = json.loads(
        kvctl("config", "dump", "--prefix", prefix, "--format", "json", "--typed").out
    )
    assert dumped == {
        "db": {"host": "db1", "port": 5432, "tls": True},
        "replicas": ["a", "b"],
        "empty": None,
    }
    f = tmp_path / "cfg.yaml"
    f.write_text(kvctl("config", "dump", "--prefix", prefix).out)
    again = kvctl("config", "load", str(f), "--prefix", prefix, "--prune")
    assert again.out == "0 to add, 0 to change, 0 to delete\n"
    change = kvctl("config", "load", "-", "--prefix", prefix, "--prune", input="db:\n  host: db2\n")
    assert change.code == 0
    assert f"~ {prefix}/db/host: db1 -> db2" in change.out and f"- {prefix}/db/port" in change.out
    assert kvctl("get", prefix, "--prefix", "--keys-only").out == f"{prefix}/db/host\n\n"


def test_config_load_fails_with_5_when_keys_change_concurrently(kvctl, ns, monkeypatch):
    prefix = ns + "app"
    kvctl("put", f"{prefix}/x", "1")
    real = kvctl_config.compute_diff

    def racing(*args, **kwargs):
        diff = real(*args, **kwargs)
        kvctl("put", f"{prefix}/x", "concurrent")  # another writer sneaks in
        return diff

    monkeypatch.setattr(kvctl_config, "compute_diff", racing)
    r = kvctl("config", "load", "-", "--prefix", prefix, input="x: 2\ny: 3\n")
    assert r.code == 5 and "changed concurrently" in r.err
    monkeypatch.undo()
    assert kvctl("get", f"{prefix}/x", "--print-value-only").out == "concurrent\n"
    assert kvctl("get", f"{prefix}/y").out == ""  # all or nothing


def test_config_load_over_txn_limit_needs_batch(kvctl, ns):
    prefix = ns + "big"
    doc = json.dumps({f"k{i:03d}": i for i in range(200)})
    r = kvctl("config", "load", "-", "--prefix", prefix, "--format", "json", input=doc)
    assert r.code == 2 and "--batch" in r.err
    r = kvctl("config", "load", "-", "--prefix", prefix, "--format", "json", "--batch", input=doc)
    assert r.code == 0
    assert kvctl("get", prefix, "--prefix", "--count-only").out == "200\n"


def test_config_flatten_and_unflatten_are_inverse():
    tree = {"a": {"b": "1", "c": ["x", {"d": "y"}]}, "e": ""}
    flat = kvctl_config.flatten(tree, "/p/")
    assert flat == {"/p/a/b": "1", "/p/a/c/0": "x", "/p/a/c/1/d": "y", "/p/e": ""}
    assert kvctl_config.unflatten(flat, "/p") == tree


@pytest.mark.integration
def test_lease_keep_alive_renews_until_interrupted(cluster, kvctl):
    # TTL long enough to survive the child's start-up on a loaded machine.
    lid = kvctl("lease", "grant", "5").out.split()[1]
    proc = _spawn(cluster, "lease", "keep-alive", lid)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # one TTL/3 period apart
        assert all(line.startswith(f"lease {lid} keepalived with TTL(") for line in lines)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "remaining" in kvctl("lease", "timetolive", lid).out
    kvctl("lease", "revoke", lid)
