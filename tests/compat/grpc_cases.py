"""Raw gRPC requests etcdctl cannot express, answered by etcd and by kvstore.

Owns: `GRPC_CASES` (nested txns, empty RequestOps, ignore_* flags, size
limits on reads vs writes, the 2 MiB transport limit) and `call_case`,
which sends one request to the first endpoint and reduces the answer to
{"code": ..., "details": ...} plus a short summary of successful replies.
Expected results come from real etcd (fixtures/grpc_etcd.json), never from
this file.

Keys live under "/grpc/<case>/"; every case is independent of the others.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from kvstore.pb import rpc_pb2, rpc_pb2_grpc

R = rpc_pb2
BIG = 1_600_000  # > 1.5 MiB request limit, < 2 MiB transport limit


def put(key: str, value: bytes = b"v", **kw: Any) -> R.RequestOp:
    return R.RequestOp(request_put=R.PutRequest(key=key.encode(), value=value, **kw))


def get(key: str | bytes) -> R.RequestOp:
    k = key.encode() if isinstance(key, str) else key
    return R.RequestOp(request_range=R.RangeRequest(key=k))


def delete(key: str, range_end: bytes = b"") -> R.RequestOp:
    return R.RequestOp(
        request_delete_range=R.DeleteRangeRequest(key=key.encode(), range_end=range_end)
    )


def nested(success=(), failure=(), compare=()) -> R.RequestOp:
    return R.RequestOp(
        request_txn=R.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)
        )
    )


def txn(success=(), failure=(), compare=()) -> R.TxnRequest:
    return R.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


@dataclass(frozen=True)
class GrpcCase:
    name: str
    method: str  # KV method name
    build: Callable[[str], Any]  # key prefix -> request


def _cases() -> list[GrpcCase]:
    c = GrpcCase
    return [
        c("put_ignore_value_with_value", "Put",
          lambda p: R.PutRequest(key=f"{p}k".encode(), value=b"v", ignore_value=True)),
        c("put_ignore_lease_with_lease", "Put",
          lambda p: R.PutRequest(key=f"{p}k".encode(), lease=1, ignore_lease=True)),
        c("put_ignore_value_missing_key", "Put",
          lambda p: R.PutRequest(key=f"{p}absent".encode(), ignore_value=True)),
        c("put_empty_key_and_ignore_value", "Put",
          lambda p: R.PutRequest(key=b"", value=b"v", ignore_value=True)),
        c("range_empty_key_with_range_end", "Range",
          lambda p: R.RangeRequest(key=b"", range_end=b"z")),
        c("range_inverted", "Range",
          lambda p: R.RangeRequest(key=f"{p}z".encode(), range_end=f"{p}a".encode())),
        c("range_huge_key_not_size_checked", "Range",
          lambda p: R.RangeRequest(key=b"k" * BIG)),
        c("delete_huge_key_too_large", "DeleteRange",
          lambda p: R.DeleteRangeRequest(key=b"k" * BIG)),
        c("put_huge_too_large", "Put",
          lambda p: R.PutRequest(key=f"{p}big".encode(), value=b"x" * BIG)),
        c("put_over_transport_limit", "Put",
          lambda p: R.PutRequest(key=f"{p}huge".encode(), value=b"x" * 2_200_000)),
        c("txn_read_only_huge_not_size_checked", "Txn",
          lambda p: txn(success=[get(b"k" * BIG)])),
        c("txn_put_huge_too_large", "Txn",
          lambda p: txn(success=[put(f"{p}big", b"x" * BIG)])),
        c("txn_empty_request_op", "Txn", lambda p: txn(success=[R.RequestOp()])),
        c("txn_nested_empty_request_op", "Txn",
          lambda p: txn(failure=[nested(success=[R.RequestOp()])])),
        c("txn_compare_empty_key_nested", "Txn",
          lambda p: txn(success=[nested(compare=[R.Compare(key=b"")])])),
        c("txn_too_many_before_empty_key", "Txn",
          lambda p: txn(compare=[R.Compare(key=b"")],
                        success=[put(f"{p}{i}") for i in range(129)])),
        c("txn_128_compares", "Txn",
          lambda p: txn(compare=[R.Compare(key=f"{p}{i}".encode()) for i in range(128)])),
        c("txn_129_failure_ops", "Txn",
          lambda p: txn(failure=[put(f"{p}{i}") for i in range(129)])),
        c("txn_nested_budget_28_ok", "Txn",
          lambda p: txn(success=[nested(success=[put(f"{p}n{i}") for i in range(28)])]
                        + [put(f"{p}p{i}") for i in range(99)])),
        c("txn_nested_budget_29_refused", "Txn",
          lambda p: txn(success=[nested(success=[put(f"{p}n{i}") for i in range(29)])]
                        + [put(f"{p}p{i}") for i in range(99)])),
        c("txn_get_then_put_same_key", "Txn",
          lambda p: txn(success=[get(f"{p}a"), put(f"{p}a")])),
        c("txn_two_deletes_same_key", "Txn",
          lambda p: txn(success=[delete(f"{p}a"), delete(f"{p}a")])),
        c("txn_put_in_deleted_range", "Txn",
          lambda p: txn(success=[delete(f"{p}a", f"{p}c".encode()), put(f"{p}b")])),
        c("txn_put_at_deleted_range_end", "Txn",
          lambda p: txn(success=[delete(f"{p}a", f"{p}c".encode()), put(f"{p}c")])),
        c("txn_put_after_from_key_delete", "Txn",
          lambda p: txn(success=[delete(f"{p}a", b"\0"), put(f"{p}b")])),
        c("txn_nested_put_then_outer_put", "Txn",
          lambda p: txn(success=[nested(success=[put(f"{p}a")]), put(f"{p}a")])),
        c("txn_nested_then_else_same_key", "Txn",
          lambda p: txn(success=[nested(success=[put(f"{p}a")], failure=[put(f"{p}a")])])),
        c("txn_two_nested_then_and_else_same_key", "Txn",
          lambda p: txn(success=[nested(success=[put(f"{p}a")]),
                                 nested(failure=[put(f"{p}a")])])),
        c("txn_nested_delete_then_outer_put", "Txn",
          lambda p: txn(success=[nested(success=[delete(f"{p}a")]), put(f"{p}a")])),
        c("txn_outer_delete_range_then_nested_put", "Txn",
          lambda p: txn(failure=[delete(f"{p}a", f"{p}z".encode()),
                                 nested(failure=[put(f"{p}m")])])),
        c("txn_dup_in_success_empty_key_in_failure", "Txn",
          lambda p: txn(success=[put(f"{p}a"), put(f"{p}a")], failure=[put("")])),
        c("compact_zero", "Compact", lambda p: R.CompactionRequest(revision=0)),
        c("compact_negative", "Compact", lambda p: R.CompactionRequest(revision=-5)),
        c("range_negative_revision", "Range",
          lambda p: R.RangeRequest(key=f"{p}k".encode(), revision=-1)),
    ]  # fmt: skip


GRPC_CASES: list[GrpcCase] = _cases()

_TRANSPORT_LIMIT = re.compile(
    r"^(?:SERVER: )?(?:grpc: )?[Rr]eceived message larger than max \((\d+) vs\. (\d+)\)$"
)


def normalise_details(details: str) -> str:
    # gRPC's own transport-limit text differs between grpc-go ("grpc: received
    # message ...") and grpc-core ("SERVER: Received message ..."); clients
    # never match on it (not an etcdserver error): code and limit must match.
    m = _TRANSPORT_LIMIT.match(details)
    if m:
        return f"received message larger than max (<n> vs. {m.group(2)})"
    return details


def summarise(method: str, resp: Any) -> dict[str, Any]:
    if method == "Range":
        return {"count": resp.count, "kvs": len(resp.kvs)}
    if method == "Txn":
        return {"succeeded": resp.succeeded, "responses": len(resp.responses)}
    if method == "DeleteRange":
        return {"deleted": resp.deleted}
    return {}


def call_case(endpoint: str, case: GrpcCase, timeout_s: float = 10.0) -> dict[str, Any]:
    prefix = f"/grpc/{case.name}/"
    with grpc.insecure_channel(endpoint, options=[("grpc.max_send_message_length", -1)]) as channel:
        stub = rpc_pb2_grpc.KVStub(channel)
        try:
            resp = getattr(stub, case.method)(case.build(prefix), timeout=timeout_s)
        except grpc.RpcError as err:
            return {"code": err.code().name, "details": normalise_details(err.details() or "")}
        out: dict[str, Any] = {"code": "OK", **summarise(case.method, resp)}
        # Which header fields are set (values differ between servers).
        out["header"] = sorted(f.name for f, _ in resp.header.ListFields())
        return out


PROBE = GrpcCase("probe", "Range", lambda p: R.RangeRequest(key=f"{p}k".encode()))


def probe(endpoint: str) -> dict[str, Any]:
    """A plain Range: is the member still serving?"""
    return call_case(endpoint, PROBE)
