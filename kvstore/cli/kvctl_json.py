"""`kvctl -w json`: exactly the JSON `etcdctl -w json` (3.4) prints.

Owns: turning kvctl's typed results into etcdctl's JSON documents, so `jq`
scripts written against etcdctl keep working. etcdctl marshals the Go
protobuf structs with encoding/json, which fixes every rule followed here:

  * proto field names as in the Go struct tags (`cluster_id`, `dbSize`,
    `peerURLs`, `granted-ttl`), in proto field order;
  * `omitempty` everywhere protobuf put it: zero numbers, false, empty
    strings, empty lists and absent messages are left out;
  * bytes as base64; enums as numbers (alarm NOSPACE = 1, event DELETE = 1);
  * clientv3 wrapper types that embed `*pb.ResponseHeader` flatten the header
    into the top level (lease grant / time-to-live / leases / keep-alive),
    and some keep Go field names without tags (watch: "Header", "Events",
    "CompactRevision"; endpoint status: "Endpoint", "Status").

Checked side by side against real etcdctl on real etcd in
tests/compat/test_kvctl_json_compat.py.

Must never: talk to the cluster or decide exit codes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

import click

from kvstore.client.types import (
    Alarm,
    DeleteResult,
    Event,
    GetResult,
    HashKVResult,
    Header,
    KeyValue,
    LeaseGrant,
    LeaseKeepAliveResult,
    LeaseLeasesResult,
    LeaseTimeToLive,
    Member,
    MemberAddResult,
    MemberListResult,
    PutResult,
    Status,
    TxnResult,
)
from kvstore.logsetup import go_duration

_ALARMS = {"NONE": 0, "NOSPACE": 1, "CORRUPT": 2}


def echo(doc: Any) -> None:
    """Print one document on one line, as Go's json.Marshal + Println."""
    click.echo(json.dumps(doc, separators=(",", ":"), ensure_ascii=False))


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _omit(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Go's omitempty: drop zero values (0, False, "", empty list/dict, None)."""
    return {k: v for k, v in pairs if v not in (None, 0, False, "", [], {})}


def header(h: Header | None) -> dict[str, Any]:
    if h is None:
        return {}
    return _omit(
        [
            ("cluster_id", h.cluster_id),
            ("member_id", h.member_id),
            ("revision", h.revision),
            ("raft_term", h.raft_term),
        ]
    )


def _header_field(h: Header | None) -> list[tuple[str, Any]]:
    """("header", {...}), or nothing for a header etcd did not send (all
    zero: MoveLeader, Alarm answer without one, and Go omits the nil pointer)."""
    doc = header(h)
    return [("header", doc)] if doc else []


def key_value(kv: KeyValue) -> dict[str, Any]:
    return _omit(
        [
            ("key", _b64(kv.key)),
            ("create_revision", kv.create_revision),
            ("mod_revision", kv.mod_revision),
            ("version", kv.version),
            ("value", _b64(kv.value)),
            ("lease", kv.lease),
        ]
    )


# --- KV ------------------------------------------------------------------------------


def get(r: GetResult) -> dict[str, Any]:
    return {
        **dict(_header_field(r.header)),
        **_omit([("kvs", [key_value(kv) for kv in r.kvs]), ("more", r.more), ("count", r.count)]),
    }


def put(r: PutResult) -> dict[str, Any]:
    prev = key_value(r.prev_kv) if r.prev_kv is not None else None
    return {**dict(_header_field(r.header)), **_omit([("prev_kv", prev)])}


def delete(r: DeleteResult) -> dict[str, Any]:
    return {
        **dict(_header_field(r.header)),
        **_omit([("deleted", r.deleted), ("prev_kvs", [key_value(kv) for kv in r.prev_kvs])]),
    }


def txn(r: TxnResult) -> dict[str, Any]:
    return {
        **dict(_header_field(r.header)),
        **_omit(
            [("succeeded", r.succeeded), ("responses", [_op_response(x) for x in r.responses])]
        ),
    }


def _op_response(r: Any) -> dict[str, Any]:
    """ResponseOp: Go's oneof wrapper struct shows as {"Response": {"ResponseX": ...}}."""
    if isinstance(r, GetResult):
        inner = {"ResponseRange": get(r)}
    elif isinstance(r, PutResult):
        inner = {"ResponsePut": put(r)}
    elif isinstance(r, DeleteResult):
        inner = {"ResponseDeleteRange": delete(r)}
    elif isinstance(r, TxnResult):
        inner = {"ResponseTxn": txn(r)}
    else:
        raise TypeError(type(r).__name__)
    return {"Response": inner}


def result(r: Any) -> dict[str, Any]:
    """Any KV result (get / put / del / txn)."""
    if isinstance(r, TxnResult):
        return txn(r)
    return _op_response(r)["Response"].popitem()[1]


def watch_response(events: Sequence[Event]) -> dict[str, Any]:
    """clientv3.WatchResponse: untagged Go fields, so capitalised names and
    no omitempty at the top (CompactRevision, Canceled, Created always)."""
    first = events[0] if events else None
    h = first.header if first is not None and first.header is not None else None
    if h is None and first is not None:
        h = Header(revision=first.header_revision)
    return {
        "Header": header(h),
        "Events": [_event(e) for e in events] if events else None,
        "CompactRevision": 0,
        "Canceled": False,
        "Created": False,
    }


def _event(e: Event) -> dict[str, Any]:
    return _omit(
        [
            ("type", e.type.value),
            ("kv", key_value(e.kv)),
            ("prev_kv", key_value(e.prev_kv) if e.prev_kv is not None else None),
        ]
    )


# --- lease (clientv3 wrappers embed the header: its fields sit at the top) ------------------


def lease_grant(r: LeaseGrant) -> dict[str, Any]:
    return {**header(r.header), "ID": r.id, "TTL": r.ttl, "Error": ""}


def lease_revoke(h: Header) -> dict[str, Any]:
    return dict(_header_field(h))


def lease_time_to_live(r: LeaseTimeToLive) -> dict[str, Any]:
    return {
        **header(r.header),
        "id": r.id,
        "ttl": r.ttl,
        "granted-ttl": r.granted_ttl,
        "keys": [_b64(k) for k in r.keys] or None,
    }


def lease_leases(r: LeaseLeasesResult) -> dict[str, Any]:
    # clientv3 builds the list with make(): [] when empty, never null.
    return {**header(r.header), "leases": [{"id": i} for i in r.ids]}


def lease_keep_alive(r: LeaseKeepAliveResult) -> dict[str, Any]:
    return {**header(r.header), "ID": r.id, "TTL": r.ttl}


# --- cluster and maintenance -------------------------------------------------------------


def member(m: Member) -> dict[str, Any]:
    return _omit(
        [
            ("ID", m.id),
            ("name", m.name),
            ("peerURLs", list(m.peer_urls)),
            ("clientURLs", list(m.client_urls)),
            ("isLearner", m.is_learner),
        ]
    )


def member_list(r: MemberListResult) -> dict[str, Any]:
    return {
        **dict(_header_field(r.header)),
        **_omit([("members", [member(m) for m in r.members])]),
    }


def member_add(r: MemberAddResult) -> dict[str, Any]:
    return {
        **dict(_header_field(r.header)),
        **_omit([("member", member(r.member)), ("members", [member(m) for m in r.members])]),
    }


def endpoint_status(statuses: Sequence[Status]) -> list[dict[str, Any]]:
    return [
        {
            "Endpoint": st.endpoint,
            "Status": {
                **dict(_header_field(st.header)),
                **_omit(
                    [
                        ("version", st.version),
                        ("dbSize", st.db_size),
                        ("leader", st.leader),
                        ("raftIndex", st.raft_index),
                        ("raftTerm", st.raft_term),
                        ("raftAppliedIndex", st.raft_applied_index),
                        ("errors", list(st.errors)),
                        ("dbSizeInUse", st.db_size_in_use),
                        ("isLearner", st.is_learner),
                    ]
                ),
            },
        }
        for st in statuses
    ]


def endpoint_hashkv(results: Sequence[HashKVResult]) -> list[dict[str, Any]]:
    return [
        {
            "Endpoint": r.endpoint,
            "HashKV": {
                **dict(_header_field(r.header)),
                **_omit([("hash", r.hash), ("compact_revision", r.compact_revision)]),
            },
        }
        for r in results
    ]


def endpoint_health(
    endpoint: str, healthy: bool, took_s: float, error: str | None
) -> dict[str, Any]:
    doc: dict[str, Any] = {"endpoint": endpoint, "health": healthy, "took": go_duration(took_s)}
    if error:
        doc["error"] = error
    return doc


def alarms(items: Sequence[Alarm], h: Header | None = None) -> dict[str, Any]:
    return {
        **dict(_header_field(h)),
        **_omit(
            [
                (
                    "alarms",
                    [
                        _omit([("memberID", a.member_id), ("alarm", _ALARMS.get(a.alarm, 0))])
                        for a in items
                    ],
                )
            ]
        ),
    }


def move_leader(h: Header) -> dict[str, Any]:
    return dict(_header_field(h))


def document(obj: Any) -> Any:
    """The etcdctl JSON document for any kvctl result (dispatch by type)."""
    if isinstance(obj, (GetResult, PutResult, DeleteResult, TxnResult)):
        return result(obj)
    for kind, convert in _CONVERTERS:
        if isinstance(obj, kind):
            return convert(obj)
    if isinstance(obj, list) and obj:
        for kind, convert_list in _LIST_CONVERTERS:
            if all(isinstance(x, kind) for x in obj):
                return convert_list(obj)
    if isinstance(obj, (dict, list, str, int, float, bool)) or obj is None:
        return obj
    raise TypeError(f"no etcdctl JSON form for {type(obj).__name__}")


_CONVERTERS: list[tuple[type, Any]] = [
    (LeaseGrant, lease_grant),
    (LeaseTimeToLive, lease_time_to_live),
    (LeaseLeasesResult, lease_leases),
    (LeaseKeepAliveResult, lease_keep_alive),
    (MemberAddResult, member_add),
    (MemberListResult, member_list),
    (Header, lease_revoke),  # a bare header answer: {"header": {...}}
]
_LIST_CONVERTERS: list[tuple[type, Any]] = [
    (Status, endpoint_status),
    (HashKVResult, endpoint_hashkv),
    (Alarm, alarms),
]
