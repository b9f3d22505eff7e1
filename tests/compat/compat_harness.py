"""etcdctl compatibility harness: scripted etcdctl sessions and output normalising.

Owns: the command cases (`CASES`), running them with real `etcdctl` 3.4
(ETCDCTL_API=3) against any cluster object with `.endpoints` (EtcdCluster,
LocalCluster), and turning the raw outputs into a form where only the
legitimately different parts are masked: member/cluster/lease ids, raft
term/index columns, db sizes, ports, latencies and absolute revisions
(rewritten relative to the revision the case started at, so cases are
independent of each other and of order).
Never: hard-codes what a server should answer — expected outputs come from
real etcd, recorded in fixtures/etcdctl_etcd.json (regenerate with
KVSTORE_REGEN_COMPAT=1) and checked live against etcd on every etcd run.

Key space: every case writes under "/compat/<case>/", except the from-key
case, which uses "~~fk/" (sorts after every "/compat" key, so `--from-key`
sees only its own keys), and txn_bad's from-key delete, which uses "~~zz/"
(after "~~fk/") and removes what it wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FIXTURE = Path(__file__).parent / "fixtures" / "etcdctl_etcd.json"
REGEN_ENV = "KVSTORE_REGEN_COMPAT"
ETCDCTL_BIN = os.environ.get("ETCDCTL_BIN", "etcdctl")
BIG_VALUE_BYTES = 1_600_000  # > --max-request-bytes (1.5 MiB), < gRPC limit (2 MiB)

_REV_TOKEN = re.compile(r"REV([+-]\d+)?")


@dataclass(frozen=True)
class Step:
    """One etcdctl invocation. `args` may contain REV / REV+n tokens (the
    case's base revision plus n); `stdin` is fed as standard input; `kind`
    selects extra normalising for outputs that differ legitimately."""

    args: tuple[str, ...]
    stdin: str | None = None
    kind: str = "plain"  # plain | status | health | members
    stdin_label: str | None = None  # short description of a huge stdin for the fixture

    def render(self, base: int) -> list[str]:
        def sub(m: re.Match[str]) -> str:
            return str(base + int(m.group(1) or 0))

        return [_REV_TOKEN.sub(sub, a) if _REV_TOKEN.fullmatch(a) else a for a in self.args]


def s(*args: str, stdin: str | None = None, kind: str = "plain", label: str | None = None) -> Step:
    return Step(tuple(args), stdin, kind, label)


def txn(*lines: str) -> str:
    """etcdctl's interactive txn input, one line per argument: compares,
    "", success ops, "", failure ops, "" (a blank line ends each block)."""
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    doc: str = ""


P = "/compat"


def _cases() -> list[Case]:
    put_ops_129 = "".join(f"put {P}/txnlimit/k{i} v\n" for i in range(129))
    put_ops_128 = "".join(f"put {P}/txnlimit/k{i} v\n" for i in range(128))
    big = "x" * BIG_VALUE_BYTES
    return [
        Case("put_get", (
            s("put", f"{P}/put_get/k1", "v1"),
            s("put", f"{P}/put_get/k2", ""),
            s("put", f"{P}/put_get/k1", "v1b"),
            s("get", f"{P}/put_get/k1"),
            s("get", f"{P}/put_get/k2"),
            s("get", f"{P}/put_get/k1", "-w", "json"),
            s("get", f"{P}/put_get/absent"),
            s("get", f"{P}/put_get/absent", "-w", "json"),
            s("put", f"{P}/put_get/k1", "v1c", "--prev-kv"),
            s("put", f"{P}/put_get/k1", "--ignore-value"),
            s("get", f"{P}/put_get/k1", "-w", "json"),
            s("put", f"{P}/put_get/absent", "--ignore-value"),
        ), "single-key put/get, empty value, json fields, prev-kv, ignore-value"),
        Case("get_range", (
            s("put", f"{P}/get_range/a", "3"),
            s("put", f"{P}/get_range/c", "1"),
            s("put", f"{P}/get_range/b", "2"),
            s("put", f"{P}/get_range/a", "4"),
            s("put", f"{P}/get_range0", "outside"),
            s("get", f"{P}/get_range/", "--prefix"),
            s("get", f"{P}/get_range/", "--prefix", "--limit", "2"),
            s("get", f"{P}/get_range/", "--prefix", "--limit", "2", "-w", "json"),
            s("get", f"{P}/get_range/", "--prefix", "--sort-by", "MODIFY", "--order", "DESCEND"),
            s("get", f"{P}/get_range/", "--prefix", "--sort-by", "VALUE", "--order", "ASCEND"),
            s("get", f"{P}/get_range/", "--prefix", "--sort-by", "CREATE", "--order", "DESCEND"),
            s("get", f"{P}/get_range/", "--prefix", "--sort-by", "VERSION", "--order", "DESCEND"),
            s("get", f"{P}/get_range/", "--prefix", "--order", "DESCEND"),
            s("get", f"{P}/get_range/", "--prefix", "--keys-only"),
            s("get", f"{P}/get_range/", "--prefix", "--print-value-only"),
            s("get", f"{P}/get_range/", "--prefix", "--keys-only", "-w", "json"),
            s("get", f"{P}/get_range/a", f"{P}/get_range/c"),
            s("get", f"{P}/get_range/c", f"{P}/get_range/a"),
            s("get", f"{P}/get_range/", "--prefix", "-w", "fields"),
        ), "prefix, limit (count ignores it), sort orders, keys-only, explicit/inverted range"),
        Case("get_from_key", (
            s("put", "~~fk/a", "1"),
            s("put", "~~fk/b", "2"),
            s("put", "~~fk/c", "3"),
            s("get", "~~fk/b", "--from-key"),
            s("get", "~~fk/", "--from-key", "--limit", "1"),
            s("get", "~~fk/", "--from-key", "--keys-only", "--order", "DESCEND"),
        ), "from-key (range_end \\0)"),
        Case("get_rev", (
            s("put", f"{P}/get_rev/x", "v1"),
            s("put", f"{P}/get_rev/x", "v2"),
            s("del", f"{P}/get_rev/x"),
            s("put", f"{P}/get_rev/x", "v3"),
            s("get", f"{P}/get_rev/x", "--rev", "REV+1"),
            s("get", f"{P}/get_rev/x", "--rev", "REV+2", "-w", "json"),
            s("get", f"{P}/get_rev/x", "--rev", "REV+3"),
            s("get", f"{P}/get_rev/x", "-w", "json"),
            s("get", f"{P}/get_rev/x", "--rev", "REV+1000"),
            s("put", f"{P}/get_rev/after", "ok"),
        ), "historical reads, deleted-then-recreated key, future revision error"),
        Case("delete", (
            s("put", f"{P}/delete/a", "1"),
            s("put", f"{P}/delete/b", "2"),
            s("put", f"{P}/delete/c", "3"),
            s("put", f"{P}/delete/d/1", "4"),
            s("put", f"{P}/delete/d/2", "5"),
            s("del", f"{P}/delete/a"),
            s("del", f"{P}/delete/a"),
            s("del", f"{P}/delete/b", "--prev-kv"),
            s("del", f"{P}/delete/d/", "--prefix", "--prev-kv"),
            s("del", f"{P}/delete/", "--prefix"),
            s("get", f"{P}/delete/", "--prefix", "-w", "json"),
        ), "del single/absent/prefix, prev-kv"),
        Case("txn", (
            s("put", f"{P}/txn/k", "v"),
            s("txn", stdin=txn(f'value("{P}/txn/k") = "v"', "",
                                  f"put {P}/txn/k v2", f"put {P}/txn/other o", "",
                                  f"put {P}/txn/k fail", "")),
            s("get", f"{P}/txn/", "--prefix"),
            s("txn", stdin=txn(f'value("{P}/txn/k") = "v"', "",
                                  f"put {P}/txn/k v3", "",
                                  f"get {P}/txn/k", f"put {P}/txn/failed yes", "")),
            s("txn", "-w", "json", stdin=txn(f'version("{P}/txn/k") = "2"',
                                             f'create("{P}/txn/absent") = "0"', "",
                                             f"get {P}/txn/k", f"put {P}/txn/k v4",
                                             f"del {P}/txn/other", "", "")),
            s("txn", stdin=txn(f'mod("{P}/txn/k") > "0"', f'value("{P}/txn/absent") != "x"',
                                  "", f"put {P}/txn/k never", "",
                                  f"get {P}/txn/k --print-value-only", "")),
            s("txn", stdin=txn("", f"put {P}/txn/noc 1", "", "")),
            s("get", f"{P}/txn/", "--prefix", "-w", "json"),
        ), "compares (value/version/create/mod, !=, missing key), both branches, json"),
        Case("txn_bad", (
            s("txn", stdin=txn("", f"put {P}/txn_bad/a 1", f"put {P}/txn_bad/a 2", "", "")),
            s("txn", stdin=txn("", f"del {P}/txn_bad/ --prefix", f"put {P}/txn_bad/x 1", "", "")),
            s("txn", stdin=txn("", f"del {P}/txn_bad/a", f"put {P}/txn_bad/a 1", "", "")),
            # etcd 3.4 sees no overlap between a put and a from-key delete
            # (range_end "\0" is an empty affine interval in its checkIntervals).
            s("txn", stdin=txn("", "del ~~zz/a --from-key", "put ~~zz/b 1", "", "")),
            s("del", "~~zz/", "--prefix"),
            s("txn", stdin=txn("", f"get {P}/txn_bad/a", f"put {P}/txn_bad/a 1",
                               f"put {P}/txn_bad/b 1", "", f"put {P}/txn_bad/a 2", "")),
            s("txn", stdin=txn("", 'put "" 1', "", "")),
            s("txn", stdin=txn('value("") = "x"', "", f"put {P}/txn_bad/c 1", "", "")),
            s("txn", stdin="\n" + put_ops_129 + "\n\n", label="129 puts in success"),
            s("txn", stdin="\n" + put_ops_128 + "\n\n", label="128 puts in success"),
            s("get", f"{P}/txnlimit/", "--prefix", "--limit", "1", "-w", "json"),
            s("get", f"{P}/txn_bad/", "--prefix"),
        ), "duplicate keys (put/put, put in deleted range, from-key delete), empty keys, "
           "128 ok / 129 refused"),
        Case("compaction", (
            s("put", f"{P}/compaction/k", "v1"),
            s("put", f"{P}/compaction/k", "v2"),
            s("put", f"{P}/compaction/k", "v3"),
            s("get", f"{P}/compaction/k", "--rev", "REV+1"),
            s("compaction", "REV+2"),
            s("get", f"{P}/compaction/k", "--rev", "REV+1"),
            s("get", f"{P}/compaction/k", "--rev", "REV+2"),
            s("compaction", "REV+1"),
            s("compaction", "REV+2"),
            s("compaction", "REV+100"),
            s("get", f"{P}/compaction/k", "-w", "json"),
        ), "compaction, reads below it, repeated and future compaction"),
        Case("bad_input", (
            s("put", "", "x"),
            s("get", ""),
            s("del", ""),
            s("put", f"{P}/bad_input/big", stdin=big, label=f"{BIG_VALUE_BYTES} bytes"),
            s("get", f"{P}/bad_input/big"),
            s("get", f"{P}/bad_input/z", f"{P}/bad_input/a"),
            s("get", f"{P}/bad_input/k", "--rev", "REV+1000000"),
            s("put", f"{P}/bad_input/after", "still-serving"),
            s("get", f"{P}/bad_input/after"),
        ), "errors (empty key, request too large, future rev) leave the node serving"),
        Case("cluster_info", (
            s("endpoint", "status", kind="status"),
            s("endpoint", "status", "-w", "json", kind="status"),
            s("endpoint", "health", kind="health"),
            s("member", "list", kind="members"),
            s("member", "list", "-w", "json", kind="members"),
        ), "endpoint status/health, member list (ids, sizes, terms masked)"),
    ]  # fmt: skip


CASES: list[Case] = _cases()


# ---------------------------------------------------------------- running
def run_etcdctl(cluster: Any, args: list[str], stdin: str | None) -> subprocess.CompletedProcess:
    """Through the cluster's own helper when it has one, else etcdctl directly."""
    helper = getattr(cluster, "etcdctl", None)
    if helper is not None:
        return helper(*args, input=stdin)
    return subprocess.run(
        [ETCDCTL_BIN, "--endpoints", ",".join(cluster.endpoints), *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=30,
        env={**os.environ, "ETCDCTL_API": "3"},
    )


def current_revision(cluster: Any) -> int:
    out = run_etcdctl(cluster, ["get", f"{P}/__revision_probe__", "-w", "json"], None)
    if out.returncode != 0:
        raise RuntimeError(f"cannot read the revision: {out.stderr.strip()}")
    return int(json.loads(out.stdout)["header"]["revision"])


def run_case(cluster: Any, case: Case) -> list[dict[str, Any]]:
    """Run every step; return normalised records (what the fixture stores)."""
    base = current_revision(cluster)
    norm = Normaliser(cluster.endpoints, base)
    records = []
    for step in case.steps:
        args = step.render(base)
        out = run_etcdctl(cluster, args, step.stdin)
        records.append(
            {
                "args": list(step.args),
                "stdin": step.stdin_label or step.stdin,
                "rc": out.returncode,
                "stdout": norm.stdout(out.stdout, step.kind),
                "stderr": norm.stderr(out.stderr, step.kind),
            }
        )
    return records


# ------------------------------------------------------------ normalising
_HEX_ID = re.compile(r"\b[0-9a-f]{16}\b")
_ADDR = re.compile(r"127\.0\.0\.1:(\d+)")
_TOOK = re.compile(r"took = [0-9.]+[a-zµ]+")
_COMPACTED_REV = re.compile(r"^compacted revision (\d+)$", re.M)
# `-w fields` lines: "Name" : value
_FIELD_LINE = re.compile(r'^"(\w+)" : (\d+)$', re.M)
_FIELD_MASK = {"ClusterID": "<id>", "MemberID": "<id>", "RaftTerm": "<n>"}
_FIELD_REVS = {"Revision", "CreateRevision", "ModRevision"}

# JSON fields whose values legitimately differ between servers.
_ID_FIELDS = {"cluster_id", "member_id", "ID", "leader", "memberID"}
_MASK_FIELDS = {"raft_term", "raftTerm", "raftIndex", "raftAppliedIndex", "dbSize", "dbSizeInUse"}
_REV_FIELDS = {"revision", "create_revision", "mod_revision"}


class Normaliser:
    def __init__(self, endpoints: list[str], base: int) -> None:
        self.base = base
        self.ports = {ep.rsplit(":", 1)[1]: i for i, ep in enumerate(endpoints)}

    def rev(self, value: int) -> str | int:
        # Revision 0 means "none" (e.g. MemberList header); keep it literal.
        return f"REV{value - self.base:+d}" if value else 0

    def addr(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            i = self.ports.get(m.group(1))
            return f"<client{i}>" if i is not None else "<peer>"

        return _ADDR.sub(sub, text)

    def text(self, text: str) -> str:
        text = self.addr(text)
        text = _HEX_ID.sub("<id>", text)
        text = _TOOK.sub("took = <dur>", text)
        text = _COMPACTED_REV.sub(lambda m: f"compacted revision {self.rev(int(m.group(1)))}", text)
        return _FIELD_LINE.sub(self._field, text)

    def _field(self, m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if name in _FIELD_MASK:
            value = _FIELD_MASK[name]
        elif name in _FIELD_REVS:
            value = str(self.rev(int(value)))
        return f'"{name}" : {value}'

    def json_value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: self.json_value(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json_value(v) for v in value]
        if key in _ID_FIELDS:
            return "<id>"
        if key in _MASK_FIELDS:
            return "<n>"
        if key in _REV_FIELDS and isinstance(value, int):
            return self.rev(value)
        if key == "Endpoint" or (isinstance(value, str) and "127.0.0.1:" in value):
            return self.addr(value)
        return value

    def stdout(self, out: str, kind: str) -> list[str] | Any:
        stripped = out.strip()
        if stripped[:1] in ("{", "["):
            try:
                data = self.json_value(json.loads(stripped))
            except json.JSONDecodeError:
                pass
            else:
                if isinstance(data, list):  # one entry per endpoint: order by content
                    data = sorted(data, key=lambda d: json.dumps(_no_endpoint(d), sort_keys=True))
                    data = [_no_endpoint(d) for d in data]
                if kind == "members" and isinstance(data, dict):
                    data["members"] = sorted(
                        (_mask_name(m) for m in data.get("members", [])),
                        key=lambda m: json.dumps(m, sort_keys=True),
                    )
                return data
        lines = self.text(out).splitlines()
        if kind == "status":
            lines = sorted(_mask_status_line(line) for line in lines)
        elif kind == "members":
            lines = sorted(_mask_member_line(line) for line in lines)
        return lines

    def stderr(self, err: str, kind: str) -> list[str]:
        lines = []
        for line in err.splitlines():
            if line.startswith("{") and '"level"' in line:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    pass
                else:
                    # Drop ts / caller / target (uuid + endpoint): keep what the
                    # server decided — gRPC code and message — and the attempt.
                    line = f"{rec.get('level')}: {rec.get('msg')}: attempt {rec.get('attempt')}: "
                    line += str(rec.get("error"))
            lines.append(self.text(line))
        if kind == "health":
            lines = sorted(re.sub(r"<client\d>", "<client>", line) for line in lines)
        return lines


def _no_endpoint(d: Any) -> Any:
    if isinstance(d, dict) and "Endpoint" in d:
        return {**d, "Endpoint": "<client>"}
    return d


def _mask_name(member: dict[str, Any]) -> dict[str, Any]:
    # Member names come from each cluster's configuration, not the server.
    return {**member, "name": "<name>" if member.get("name") else ""}


def _mask_status_line(line: str) -> str:
    # ENDPOINT, ID, VERSION, DB SIZE, IS LEADER, IS LEARNER, RAFT TERM,
    # RAFT INDEX, RAFT APPLIED INDEX, ERRORS
    cols = line.split(", ")
    if len(cols) >= 9:
        cols[0] = "<client>"
        cols[1] = "<id>"  # %x: no leading zeros, so not always 16 digits
        cols[3] = "<size>"
        cols[6] = cols[7] = cols[8] = "<n>"
    return ", ".join(cols)


def _mask_member_line(line: str) -> str:
    # ID, STATUS, NAME, PEER ADDRS, CLIENT ADDRS, IS LEARNER
    cols = line.split(", ")
    if len(cols) >= 6:
        cols[0] = "<id>"
        cols[2] = "<name>" if cols[2] else ""
        cols[4] = re.sub(r"<client\d>", "<client>", cols[4])
    return ", ".join(cols)


# ---------------------------------------------------------------- fixtures
def load_fixture(path: Path = FIXTURE) -> dict[str, Any]:
    if not path.exists():
        return {}
    return json.loads(path.read_text())


def save_fixture(data: dict[str, Any], path: Path = FIXTURE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


def record_or_compare(backend: str, path: Path, name: str, actual: Any) -> Any:
    """etcd + KVSTORE_REGEN_COMPAT=1: store `actual` as the expectation and
    return it; otherwise return the recorded etcd expectation (fail if none)."""
    if backend == "etcd" and os.environ.get(REGEN_ENV):
        data = load_fixture(path)
        data[name] = actual
        save_fixture(data, path)
        return actual
    data = load_fixture(path)
    if name not in data:
        raise AssertionError(f"no recorded etcd result for {name}: run with {REGEN_ENV}=1")
    return data[name]


def diff_records(expected: list[dict[str, Any]], actual: list[dict[str, Any]]) -> list[str]:
    """Human-readable mismatches, one per differing step field."""
    problems: list[str] = []
    for i, (exp, act) in enumerate(zip(expected, actual, strict=False)):
        for fld in ("rc", "stdout", "stderr"):
            if exp[fld] != act[fld]:
                problems.append(
                    f"step {i} etcdctl {' '.join(exp['args'])}: {fld}\n"
                    f"  expected (etcd): {exp[fld]!r}\n  actual:          {act[fld]!r}"
                )
    if len(expected) != len(actual):
        problems.append(f"step count differs: {len(expected)} vs {len(actual)}")
    return problems
