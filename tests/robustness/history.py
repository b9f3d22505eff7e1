"""Recorded history of a robustness run (JSON-able) and its checking.

Owns: the record shapes the traffic writes (operations, watch streams,
leases, compactions, faults), their (de)serialisation, the conversion to the
checkers' types in kvstore.testing.checkers, and `check(history)`, which
runs every checker and returns the anomalies as text.

Never: talks to a server. Keys and values are ASCII str in the records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kvstore.testing.checkers import lease as lease_check
from kvstore.testing.checkers import linearizability as lin
from kvstore.testing.checkers import watch as watch_check

# The bound the server documents for a key outliving its lease, beyond the
# latest instant its lease can expire (tests/e2e/test_watch_lease_failover.py):
# checkpoint interval (2 s) + 2 election timeouts (2 s) + 2 s of scheduling.
# A leader change may restart the clock at up to the full TTL (see
# kvstore/testing/checkers/lease.py), so leader changes are recorded too.
LEASE_BOUND_S = 2.0 + 2 * 1.0 + 2.0


@dataclass
class OpRecord:
    client: int
    kind: str  # put | get | delete | cas
    key: str
    arg: Any  # put: value; cas: [expect or None, new]
    output: Any  # put "ok"; get value or None; delete count; cas bool; None if unknown
    call: float
    ret: float | None  # None = indeterminate (no answer)
    revision: int = 0  # header revision of the answer
    mod_revision: int = 0  # get: the key's mod_revision
    serializable: bool = False
    error: str = ""
    endpoint: str = ""


@dataclass
class History:
    seed: int
    ops: list[OpRecord] = field(default_factory=list)
    watches: list[dict[str, Any]] = field(default_factory=list)
    leases: list[dict[str, Any]] = field(default_factory=list)
    compactions: list[dict[str, Any]] = field(default_factory=list)
    faults: list[dict[str, Any]] = field(default_factory=list)
    # [time first seen, term, leader member id] for each new (term, leader)
    leader_changes: list[list[Any]] = field(default_factory=list)
    final_revision: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> History:
        h = cls(seed=d["seed"])
        h.ops = [OpRecord(**o) for o in d["ops"]]
        for name in ("watches", "leases", "compactions", "faults", "notes", "leader_changes"):
            setattr(h, name, d.get(name, []))
        h.final_revision = d.get("final_revision", 0)
        return h

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: Path) -> History:
        return cls.from_json(json.loads(path.read_text()))


# ------------------------------------------------------------------ conversion
def _b(s: str | None) -> bytes | None:
    return None if s is None else s.encode()


def to_watch_records(h: History) -> list[watch_check.WatchRecord]:
    out = []
    for w in h.watches:
        rec = watch_check.WatchRecord(
            name=w["name"],
            key=w["key"].encode(),
            range_end=w["range_end"].encode(),
            prev_kv=w["prev_kv"],
            segments=[watch_check.Segment(t, rev) for t, rev in w["segments"]],
            covers_all=w.get("covers_all", False),
        )
        for r in w["responses"]:
            events = tuple(_event(e) for e in r["events"])
            rec.responses.append(
                watch_check.Response(
                    time=r["t"],
                    header_revision=r["rev"],
                    events=events,
                    progress=r.get("progress", False),
                    created=r.get("created", False),
                    canceled=r.get("canceled", False),
                    compact_revision=r.get("compact", 0),
                    segment=r.get("segment", 0),
                )
            )
        out.append(rec)
    return out


def _kv(t: list[Any] | None) -> watch_check.KV | None:
    if t is None:
        return None
    key, value, mod, create, version, lease = t
    return watch_check.KV(key.encode(), value.encode(), mod, create, version, lease)


def _event(e: list[Any]) -> watch_check.Event:
    typ, kv, prev = e
    return watch_check.Event(typ, _kv(kv), _kv(prev))  # type: ignore[arg-type]


def observed_values(watches: list[watch_check.WatchRecord]) -> set[tuple[bytes, bytes]]:
    return {(e.key, e.kv.value) for w in watches for _, e in w.events() if e.type == "PUT"}


def to_operations(
    h: History, prune_unobserved: set[tuple[bytes, bytes]] | None
) -> tuple[list[lin.Operation], int]:
    """Linearizable-checkable operations. With `prune_unobserved` (the (key,
    value) pairs every write that took effect must appear in), indeterminate
    writes whose value never appeared are dropped: they did not happen."""
    ops: list[lin.Operation] = []
    pruned = 0
    for i, o in enumerate(h.ops):
        if o.serializable:
            continue
        key = o.key.encode()
        pending = o.ret is None
        if o.kind == "get" and pending:
            continue  # a failed read has no effect
        if o.kind == "put":
            arg: Any = o.arg.encode()
        elif o.kind == "cas":
            arg = (_b(o.arg[0]), o.arg[1].encode())
        else:
            arg = None
        if pending and prune_unobserved is not None and o.kind in ("put", "cas"):
            new = arg if o.kind == "put" else arg[1]
            if (key, new) not in prune_unobserved:
                pruned += 1
                continue
        if pending:
            output: Any = lin.UNKNOWN
        elif o.kind == "get":
            output = _b(o.output)
        else:
            output = o.output
        meta = {"revision": o.revision} if (not pending and o.revision) else {}
        ops.append(
            lin.Operation(
                o.client,
                o.kind,
                key,
                arg,
                output,
                o.call,
                lin.INF if pending else float(o.ret),  # type: ignore[arg-type]
                op_id=i,
                meta=meta,
            )
        )
    return ops, pruned


def completed_writes(h: History) -> list[watch_check.Write]:
    out = []
    for o in h.ops:
        if o.ret is None or o.serializable:
            continue
        if o.kind == "put":
            out.append(watch_check.Write(o.key.encode(), o.revision, o.arg.encode()))
        elif o.kind == "delete" and o.output == 1:
            out.append(watch_check.Write(o.key.encode(), o.revision, None))
        elif o.kind == "cas" and o.output is True:
            out.append(watch_check.Write(o.key.encode(), o.revision, o.arg[1].encode()))
    return out


def to_lease_records(h: History) -> list[lease_check.LeaseRecord]:
    out = []
    for d in h.leases:
        out.append(
            lease_check.LeaseRecord(
                lease_id=d["id"],
                ttl_s=d["ttl"],
                grant_call=d["grant_call"],
                grant_ret=d["grant_ret"],
                keys={k.encode(): t for k, t in d["keys"].items()},
                renewals=[lease_check.Renewal(*r) for r in d["renewals"]],
                revoke_call=d.get("revoke_call"),
                revoke_ok=d.get("revoke_ok", False),
                observations=[
                    lease_check.Observation(k.encode(), c, r, p) for k, c, r, p in d["observations"]
                ],
            )
        )
    return out


# -------------------------------------------------------------------- checking
@dataclass
class CheckResult:
    anomalies: list[str]
    stats: dict[str, Any]


def check(h: History, lease_bound_s: float = LEASE_BOUND_S) -> CheckResult:
    anomalies: list[str] = []
    stats: dict[str, Any] = {}
    watches = to_watch_records(h)
    all_watch = next((w for w in watches if w.covers_all), None)
    compactions = [watch_check.Compaction(c["revision"], c["completed"]) for c in h.compactions]
    complete_from = 2 if all_watch is not None and all_watch.start_revision <= 2 else None
    violations = watch_check.check_watches(watches, completed_writes(h), compactions, complete_from)
    anomalies += [f"watch: {v}" for v in violations]

    # Prune only when the covers-all watch is sound and vouched for the end.
    prune = None
    if (
        all_watch is not None
        and not violations
        and all_watch.vouched_revision() >= h.final_revision > 0
        and all_watch.start_revision <= 2
    ):
        prune = observed_values(watches)
    ops, pruned = to_operations(h, prune)
    result = lin.check_history(ops)
    stats.update(
        operations=len(h.ops),
        checked_operations=len(ops),
        indeterminate=sum(1 for o in ops if o.pending),
        pruned_unobserved_writes=pruned,
        keys=len(result.keys),
        watch_events=sum(len(w.events()) for w in watches),
        leases=len(h.leases),
    )
    if not result.ok:
        anomalies.append("linearizability:\n" + result.describe())
    anomalies += [f"revision order: {v}" for v in lin.check_real_time_revisions(ops)[:20]]
    anomalies += _serializable_reads(h)
    promotions = [t for t, _, _ in h.leader_changes]
    leases = lease_check.check_leases(to_lease_records(h), lease_bound_s, promotions)
    anomalies += [f"lease: {v}" for v in leases]
    stats["leader_changes"] = len(h.leader_changes)
    return CheckResult(anomalies, stats)


def _serializable_reads(h: History) -> list[str]:
    """A serializable read may be stale but never invents a value: it returns
    nothing or a value some put/cas of that key was invoked with before."""
    first_call: dict[tuple[str, str], float] = {}
    for o in h.ops:
        if o.kind == "put":
            k = (o.key, o.arg)
        elif o.kind == "cas":
            k = (o.key, o.arg[1])
        else:
            continue
        first_call[k] = min(first_call.get(k, o.call), o.call)
    out = []
    for o in h.ops:
        if o.kind == "get" and o.serializable and o.ret is not None and o.output is not None:
            t = first_call.get((o.key, o.output))
            if t is None or t > o.ret:
                out.append(f"serializable read of {o.key}={o.output!r} that was never written")
    return out
