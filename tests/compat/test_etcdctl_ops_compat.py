"""etcdctl 3.4 operator commands against real etcd and kvstore; outputs must match.

Covers what issue 5 lists beyond tests/compat/test_etcdctl_compat.py: member
add (voter and --learner), list, promote (unstarted learner: etcd's error;
started learner: promoted once in sync), remove; endpoint hashkv; snapshot
save; defrag (endpoints and --cluster); move-leader (follower, self, unknown
id, leader not among the endpoints); alarm list / disarm with no alarm.

Each case runs a fixed list of steps on one 3-member cluster per backend
(`compat_cluster`, module scope: this module gets its own clusters). Steps may
name values only known at run time — `{FOLLOWER}` (a follower's id), `{ADDED}`
(the id printed by the last `member add`), `{NEW_PEER}` (a fresh peer URL)... —
and a few steps are actions (start/stop an extra member process). Outputs are
normalised as in compat_harness (ids, ports, terms, sizes, revisions) plus:
hashes become labels in order of first appearance within the case (so "all
members print the same hash" and "same hash as before" are checked, not the
value, which depends on the storage engine), snapshot paths become <file>,
member names given by the cluster's own configuration become <name>, and the
member order inside ETCD_INITIAL_CLUSTER (a Go map order in etcd) is sorted.
Expected outputs are etcd's, recorded in fixtures/etcdctl_ops_etcd.json
(KVSTORE_REGEN_COMPAT=1 rewrites them from a live etcd run).

Every case leaves the cluster with its 3 original voting members.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from compat_harness import (
    ETCDCTL_BIN,
    Normaliser,
    P,
    diff_records,
    record_or_compare,
    run_etcdctl,
)

from kvstore.testing.waiting import free_port, wait_until

pytestmark = [pytest.mark.etcd, pytest.mark.e2e, pytest.mark.timeout(600)]

FIXTURE = Path(__file__).parent / "fixtures" / "etcdctl_ops_etcd.json"
# Answers that mean "not yet" for a step marked retry: etcd refuses membership
# changes until every voter has been connected for 5 s (strict reconfig
# check), and promotion until the learner has caught up.
NOT_YET = ("etcdserver: unhealthy cluster", "in sync with leader")
RETRY_S = 60.0


@dataclass(frozen=True)
class Op:
    """One step: an etcdctl invocation, or an action when `action` is set.

    endpoints: all | first | follower (the client URL of one follower only).
    kind: normalising, as compat_harness kinds plus hash | sorted | snapshot.
    retry: rerun (bounded) while stderr says "not yet" (NOT_YET)."""

    args: tuple[str, ...] = ()
    kind: str = "plain"
    endpoints: str = "all"
    retry: bool = False
    action: str | None = None


def op(*args: str, kind: str = "plain", endpoints: str = "all", retry: bool = False) -> Op:
    return Op(tuple(args), kind, endpoints, retry)


def act(name: str) -> Op:
    return Op(action=name)


@dataclass(frozen=True)
class OpsCase:
    name: str
    steps: tuple[Op, ...]
    doc: str = ""


K = f"{P}/ops"

CASES = [
    OpsCase("alarm_empty", (
        op("alarm", "list"),
        op("alarm", "list", "-w", "json"),
        op("alarm", "disarm"),
        op("alarm", "disarm", "-w", "json"),
    ), "no alarm raised: list and disarm print nothing"),
    OpsCase("hashkv", (
        op("put", f"{K}/hash/a", "1"),
        op("endpoint", "hashkv", kind="hash"),
        op("endpoint", "hashkv", "-w", "json", kind="hash"),
        op("put", f"{K}/hash/a", "2"),
        op("put", f"{K}/hash/b", "3"),
        op("endpoint", "hashkv", kind="hash"),
        op("endpoint", "hashkv", "--rev", "{REV+1}", kind="hash"),
        op("endpoint", "hashkv", "--rev", "{REV+100}", kind="hash"),
        op("compaction", "{REV+2}"),
        op("endpoint", "hashkv", "-w", "json", kind="hash"),
        op("endpoint", "hashkv", "--rev", "{REV+1}", kind="hash"),
    ), "same hash on every member, old revisions, future and compacted revisions"),
    OpsCase("defrag", (
        op("put", f"{K}/defrag/a", "1"),
        op("defrag"),
        op("defrag", "--cluster", kind="sorted"),
        op("get", f"{K}/defrag/a"),
    ), "defrag of every endpoint and of every member (--cluster); data kept"),
    OpsCase("snapshot", (
        op("put", f"{K}/snapshot/a", "1"),
        op("snapshot", "save", "{SNAP}", endpoints="first", kind="snapshot"),
        act("check_snapshot"),
        op("snapshot", "save", "{SNAP}", kind="snapshot"),
        op("snapshot", "save", "{SNAP_BAD_DIR}", endpoints="first", kind="snapshot"),
    ), "save to a file (ends with the SHA-256 of the rest), one endpoint only"),
    OpsCase("move_leader", (
        op("move-leader", "{FOLLOWER}"),
        op("endpoint", "status", kind="status"),
        op("move-leader", "{LEADER}"),
        op("move-leader", "deadbeef"),
        op("move-leader", "{FOLLOWER}", endpoints="follower", kind="anyclient"),
        op("put", f"{K}/move_leader/after", "ok"),
    ), "to a follower, to itself, to an unknown id, leader not among the endpoints"),
    OpsCase("member_learner", (
        op("member", "add", "newl", "--peer-urls", "{NEW_PEER}", "--learner", retry=True),
        op("member", "list", kind="members"),
        op("member", "list", "-w", "json", kind="members"),
        op("member", "promote", "{ADDED}"),
        op("member", "add", "newl2", "--peer-urls", "{NEW_PEER2}", "--learner"),
        op("member", "promote", "{FOLLOWER}"),
        op("member", "promote", "deadbeef"),
        op("member", "remove", "{ADDED}"),
        op("member", "remove", "{ADDED}"),
        op("member", "list", kind="members"),
    ), "unstarted learner: promote refused, second learner refused, remove"),
    OpsCase("member_voter", (
        op("member", "add", "newv", "--peer-urls", "{NEW_PEER}", retry=True),
        op("member", "list", kind="members"),
        op("member", "add", "newv2", "--peer-urls", "{NEW_PEER2}"),
        op("member", "add", "newl", "--peer-urls", "{NEW_PEER2}", "--learner"),
        op("member", "add", "dup", "--peer-urls", "{PEER0}"),
        op("member", "remove", "{ADDED}"),
        op("member", "list", kind="members"),
        op("member", "add", "dup", "--peer-urls", "{PEER0}", retry=True),
        op("member", "remove", "deadbeef"),
        op("endpoint", "status", kind="status"),
    ), "unstarted voter: any add is refused while it is down (even a duplicate URL); "
       "remove; duplicate URL"),
    OpsCase("member_promote_started", (
        op("member", "add", "learner4", "--peer-urls", "{NEW_PEER}", "--learner", retry=True),
        act("start_new_member"),
        op("member", "promote", "{ADDED}", retry=True),
        act("wait_new_member_listed"),
        op("member", "list", kind="members"),
        op("member", "remove", "{ADDED}"),
        act("stop_new_member"),
        op("member", "list", kind="members"),
    ), "a started learner is promoted once in sync, then removed"),
]  # fmt: skip


# ------------------------------------------------------------------ context
@dataclass
class Ctx:
    """Run-time values of one case: placeholders, the extra member, files."""

    backend: str
    cluster: Any
    base: int
    tmp: Path
    values: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    extra_client: str = ""

    def statuses(self) -> list[dict[str, Any]]:
        out = run_etcdctl(self.cluster, ["endpoint", "status", "-w", "json"], None)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def roles(self) -> tuple[int, list[tuple[int, str]]]:
        """(leader id, [(follower id, its endpoint)]) agreed by every member."""

        def agreed() -> tuple[int, list[tuple[int, str]]] | None:
            sts = self.statuses()
            leaders = {s["Status"]["leader"] for s in sts}
            if len(leaders) != 1 or 0 in leaders:
                return None
            (leader,) = leaders
            followers = [
                (s["Status"]["header"]["member_id"], s["Endpoint"])
                for s in sts
                if s["Status"]["header"]["member_id"] != leader
            ]
            return leader, followers

        return wait_until(agreed, timeout=30, interval=0.1, what="one leader")

    def resolve(self, token: str) -> str:
        def sub(m: re.Match[str]) -> str:
            return self.value(m.group(1))

        return re.sub(r"\{([A-Z0-9_+-]+)\}", sub, token)

    def value(self, name: str) -> str:
        if name.startswith("REV"):
            return str(self.base + int(name[3:] or 0))
        if name in self.values:
            return self.values[name]
        if name == "LEADER":
            return f"{self.roles()[0]:x}"
        if name == "FOLLOWER":
            return f"{self.roles()[1][0][0]:x}"
        if name.startswith("NEW_PEER"):
            self.values[name] = f"http://127.0.0.1:{free_port()}"
        elif name == "PEER0":
            self.values[name] = f"http://127.0.0.1:{self.cluster.members[0].peer_port}"
        elif name == "SNAP":
            self.values[name] = str(self.tmp / "backup.db")
        elif name == "SNAP_BAD_DIR":
            self.values[name] = str(self.tmp / "missing" / "backup.db")
        else:
            raise KeyError(name)
        return self.values[name]

    def endpoints(self, which: str) -> list[str]:
        if which == "first":
            return self.cluster.endpoints[:1]
        if which == "follower":
            return [self.roles()[1][0][1]]
        return list(self.cluster.endpoints)


def etcdctl(args: list[str], endpoints: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ETCDCTL_BIN, "--endpoints", ",".join(endpoints), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def run_step(ctx: Ctx, step: Op) -> subprocess.CompletedProcess:
    args = [ctx.resolve(a) for a in step.args]
    endpoints = ctx.endpoints(step.endpoints)

    def attempt() -> subprocess.CompletedProcess | None:
        out = etcdctl(args, endpoints)
        if step.retry and out.returncode != 0 and any(t in out.stderr for t in NOT_YET):
            return None
        return out

    out = wait_until(attempt, timeout=RETRY_S, interval=0.2, what=" ".join(args))
    added = re.search(r"^Member +([0-9a-f]+) added to cluster", out.stdout, re.M)  # %16x
    if added:
        ctx.values["ADDED"] = added.group(1)
        env = dict(ln.split("=", 1) for ln in out.stdout.splitlines() if ln.startswith("ETCD_"))
        ctx.values["INITIAL_CLUSTER"] = env.get("ETCD_INITIAL_CLUSTER", "").strip('"')
        ctx.values["ADDED_NAME"] = env.get("ETCD_NAME", "").strip('"')
    return out


# ------------------------------------------------------------------ actions
def start_new_member(ctx: Ctx) -> None:
    """Start the member just added (`{ADDED}`) as etcd's printout says: with
    ETCD_INITIAL_CLUSTER and --initial-cluster-state existing."""
    from kvstore.devcluster import TOKEN, child_env

    name, peer = ctx.values["ADDED_NAME"], ctx.values["NEW_PEER"]
    client = f"http://127.0.0.1:{free_port()}"
    ctx.extra_client = client.split("://", 1)[1]
    common = [
        "--name", name,
        "--data-dir", str(ctx.tmp / f"{name}.data"),
        "--listen-client-urls", client, "--advertise-client-urls", client,
        "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
        "--initial-cluster", ctx.values["INITIAL_CLUSTER"],
        "--initial-cluster-state", "existing",
    ]  # fmt: skip
    if ctx.backend == "etcd":
        cmd = ["etcd", *common, "--initial-cluster-token", "kvstore-test-etcd"]
        env = None
    else:
        cmd = [sys.executable, "-m", "kvstore.cli.server_cmd", *common]
        cmd += ["--initial-cluster-token", TOKEN]
        env = child_env()
    with open(ctx.tmp / f"{name}.log", "wb") as log:
        ctx.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def stop_new_member(ctx: Ctx) -> None:
    if ctx.proc is not None:
        if ctx.proc.poll() is None:
            ctx.proc.kill()
        ctx.proc.wait(timeout=30)
        ctx.proc = None


def wait_new_member_listed(ctx: Ctx) -> None:
    """The promoted member publishes its name and client URL through Raft."""
    added = ctx.values["ADDED"]

    def listed() -> bool:
        out = run_etcdctl(ctx.cluster, ["member", "list"], None)
        return any(
            ln.startswith(f"{added}, started, ") and ctx.extra_client in ln
            for ln in out.stdout.splitlines()
        )

    wait_until(listed, timeout=RETRY_S, interval=0.2, what="new member started in member list")


def remove_extra_members(ctx: Ctx) -> None:
    """After a failed case: remove members the case added, so that the next
    case starts from the 3 original members (bounded: one try each)."""
    own = {f"http://127.0.0.1:{m.peer_port}" for m in ctx.cluster.members}
    out = run_etcdctl(ctx.cluster, ["member", "list"], None)
    for line in out.stdout.splitlines():
        cols = line.split(", ")
        if len(cols) >= 4 and cols[3] not in own:
            run_etcdctl(ctx.cluster, ["member", "remove", cols[0]], None)


def check_snapshot(ctx: Ctx) -> dict[str, Any]:
    """etcd's snapshot stream ends with the SHA-256 of everything before it."""
    data = Path(ctx.values["SNAP"]).read_bytes()
    return {
        "action": "check_snapshot",
        "sha256_trailer_ok": len(data) > 32 and hashlib.sha256(data[:-32]).digest() == data[-32:],
        "part_file_left": Path(ctx.values["SNAP"] + ".part").exists(),
    }


ACTIONS = {
    "start_new_member": start_new_member,
    "stop_new_member": stop_new_member,
    "wait_new_member_listed": wait_new_member_listed,
    "check_snapshot": check_snapshot,
}


# -------------------------------------------------------------- normalising
_HEX_ID_ANY = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{12,16}\b")
_HASH_LINE = re.compile(r"^(<client\d>), (\d+)$")
_PADDED_ID = re.compile(r" +<id>")
_INITIAL_CLUSTER = re.compile(r'^ETCD_INITIAL_CLUSTER="(.*)"$', re.M)


class OpsNormaliser(Normaliser):
    """compat_harness.Normaliser plus hash labels, member names, paths and
    ids printed with %x (no leading zeros: not always 16 digits)."""

    def __init__(self, cluster: Any, base: int, tmp: Path) -> None:
        super().__init__(cluster.endpoints, base)
        self.names = {m.name for m in cluster.members}
        self.tmp = str(tmp)
        self.hashes: dict[int, str] = {}

    def hash_label(self, value: int) -> str:
        return self.hashes.setdefault(value, f"<hash{len(self.hashes)}>")

    def text(self, text: str) -> str:
        text = text.replace(self.tmp, "<tmp>")
        text = _HEX_ID_ANY.sub("<id>", text)
        text = _INITIAL_CLUSTER.sub(self._initial_cluster, text)
        text = super().text(text)
        # etcdctl prints ids with %16x: shorter ids are padded with spaces.
        return _PADDED_ID.sub(" <id>", text)

    def _initial_cluster(self, m: re.Match[str]) -> str:
        items = []
        for item in m.group(1).split(","):
            name, _, url = item.partition("=")
            items.append(f"{'<name>' if name in self.names else name}={url}")
        return f'ETCD_INITIAL_CLUSTER="{",".join(sorted(items))}"'

    def stdout(self, out: str, kind: str) -> Any:
        data = super().stdout(out, kind)
        if kind == "hash":
            if isinstance(data, list) and data and isinstance(data[0], dict):
                for d in data:
                    hk = d.get("HashKV", {})
                    if "hash" in hk:
                        hk["hash"] = self.hash_label(hk["hash"])
                    if hk.get("compact_revision", -1) > 0:
                        hk["compact_revision"] = self.rev(hk["compact_revision"])
            else:
                data = [self._hash_line(line) for line in data]
        elif kind == "sorted":
            data = sorted(data)
        elif kind == "anyclient":
            data = [re.sub(r"<client\d>", "<client>", line) for line in data]
        return data

    def _hash_line(self, line: str) -> str:
        m = _HASH_LINE.match(line)
        return f"{m.group(1)}, {self.hash_label(int(m.group(2)))}" if m else line

    def stderr(self, err: str, kind: str) -> list[str]:
        lines = super().stderr(err, kind)
        if kind == "anyclient":
            lines = [re.sub(r"<client\d>", "<client>", line) for line in lines]
        if kind == "snapshot":
            # clientv3 and etcdctl log the download steps; keep what they say,
            # not the paths, sizes and durations they carry (already dropped).
            lines = [ln for ln in lines if ln]
        return lines


# -------------------------------------------------------------------- run
def run_ops_case(backend: str, cluster: Any, case: OpsCase, tmp: Path) -> list[dict[str, Any]]:
    from compat_harness import current_revision

    ctx = Ctx(backend, cluster, current_revision(cluster), tmp)
    norm = OpsNormaliser(cluster, ctx.base, tmp)
    records: list[dict[str, Any]] = []
    try:
        for step in case.steps:
            if step.action:
                result = ACTIONS[step.action](ctx)
                records.append(result or {"action": step.action})
                continue
            out = run_step(ctx, step)
            records.append(
                {
                    "args": list(step.args),
                    "endpoints": step.endpoints,
                    "rc": out.returncode,
                    "stdout": norm.stdout(out.stdout, step.kind),
                    "stderr": norm.stderr(out.stderr, step.kind),
                }
            )
    finally:
        stop_new_member(ctx)
        remove_extra_members(ctx)
    return records


def diff_ops(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> list[str]:
    problems = []
    for i, (exp, act_) in enumerate(zip(expected, actual, strict=False)):
        if ("action" in exp or "action" in act_) and exp != act_:
            problems.append(f"step {i}: expected {exp!r}, got {act_!r}")
    plain = [(e, a) for e, a in zip(expected, actual, strict=False) if "action" not in e]
    problems += diff_records([e for e, _ in plain], [a for _, a in plain])
    if len(expected) != len(actual):
        problems.append(f"step count differs: {len(expected)} vs {len(actual)}")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_etcdctl_ops_output_matches_etcd(compat_cluster, case: OpsCase) -> None:
    backend, cluster = compat_cluster
    tmp = Path(tempfile.mkdtemp(prefix=f"ops-{case.name}-"))
    try:
        actual = run_ops_case(backend, cluster, case, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    expected = record_or_compare(backend, FIXTURE, case.name, actual)
    problems = diff_ops(expected, actual)
    assert not problems, f"{backend} differs from etcd in case {case.name}:\n" + "\n".join(problems)
