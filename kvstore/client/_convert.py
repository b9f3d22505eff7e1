"""Protobuf responses -> the typed results of `types.py`.

Owns: every read of a response message's fields, so that a tolerance rule
("real etcd omits the header here") is written once.

Must never: perform I/O or raise for missing optional fields — proto3 fields
default to zero and etcd leaves several headers out (ETCD_API §0.5).
"""

from __future__ import annotations

from kvstore.client.types import (
    Alarm,
    DeleteResult,
    Event,
    EventType,
    GetResult,
    HashKVResult,
    Header,
    KeyValue,
    LeaseGrant,
    LeaseTimeToLive,
    Member,
    MemberAddResult,
    MemberListResult,
    PutResult,
    Status,
    TxnResult,
)
from kvstore.pb import kv_pb2, rpc_pb2

_ALARMS = {0: "NONE", 1: "NOSPACE", 2: "CORRUPT"}


def header(h: rpc_pb2.ResponseHeader) -> Header:
    return Header(h.cluster_id, h.member_id, h.revision, h.raft_term)


def key_value(kv: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


def get_result(r: rpc_pb2.RangeResponse) -> GetResult:
    return GetResult(header(r.header), tuple(key_value(kv) for kv in r.kvs), r.more, r.count)


def put_result(r: rpc_pb2.PutResponse) -> PutResult:
    return PutResult(header(r.header), key_value(r.prev_kv) if r.HasField("prev_kv") else None)


def delete_result(r: rpc_pb2.DeleteRangeResponse) -> DeleteResult:
    return DeleteResult(header(r.header), r.deleted, tuple(key_value(kv) for kv in r.prev_kvs))


def txn_result(r: rpc_pb2.TxnResponse) -> TxnResult:
    return TxnResult(header(r.header), r.succeeded, tuple(_response_op(op) for op in r.responses))


def _response_op(op: rpc_pb2.ResponseOp):
    kind = op.WhichOneof("response")
    if kind == "response_range":
        return get_result(op.response_range)
    if kind == "response_put":
        return put_result(op.response_put)
    if kind == "response_delete_range":
        return delete_result(op.response_delete_range)
    if kind == "response_txn":
        return txn_result(op.response_txn)
    raise ValueError(f"unknown txn response op {kind!r}")


def events(r: rpc_pb2.WatchResponse) -> list[Event]:
    rev = r.header.revision
    h = header(r.header)
    return [
        Event(
            EventType(e.type),
            key_value(e.kv),
            key_value(e.prev_kv) if e.HasField("prev_kv") else None,
            rev,
            h,
        )
        for e in r.events
    ]


def lease_grant(r: rpc_pb2.LeaseGrantResponse) -> LeaseGrant:
    return LeaseGrant(header(r.header), r.ID, r.TTL)


def lease_ttl(r: rpc_pb2.LeaseTimeToLiveResponse) -> LeaseTimeToLive:
    return LeaseTimeToLive(header(r.header), r.ID, r.TTL, r.grantedTTL, tuple(r.keys))


def member(m: rpc_pb2.Member) -> Member:
    return Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs), m.isLearner)


def member_list(r) -> MemberListResult:
    """MemberList/Remove/Update/Promote responses all carry `members`."""
    return MemberListResult(header(r.header), tuple(member(m) for m in r.members))


def member_add(r: rpc_pb2.MemberAddResponse) -> MemberAddResult:
    return MemberAddResult(header(r.header), member(r.member), tuple(member(m) for m in r.members))


def status(endpoint: str, r: rpc_pb2.StatusResponse) -> Status:
    return Status(
        header=header(r.header),
        endpoint=endpoint,
        version=r.version,
        db_size=r.dbSize,
        leader=r.leader,
        raft_index=r.raftIndex,
        raft_term=r.raftTerm,
        raft_applied_index=r.raftAppliedIndex,
        errors=tuple(r.errors),
        db_size_in_use=r.dbSizeInUse,
        is_learner=r.isLearner,
    )


def alarms(r: rpc_pb2.AlarmResponse) -> list[Alarm]:
    return [Alarm(a.memberID, _ALARMS.get(a.alarm, str(a.alarm))) for a in r.alarms]


def hash_kv(endpoint: str, r: rpc_pb2.HashKVResponse) -> HashKVResult:
    return HashKVResult(header(r.header), endpoint, r.hash, r.compact_revision)
