"""etcd's request checks, done before a request reaches the server facade.

Owns: the shape checks etcd's v3rpc layer makes (`server/etcdserver/api/
v3rpc/key.go`: checkRangeRequest, checkPutRequest, checkDeleteRequest,
checkTxnRequest, checkRequestOp, checkIntervals) and the request-size limit
etcd applies to proposals (`processInternalRaftRequestOnce`), each raising
the exact `kvstore.errors` error etcd returns. Pure functions over protobuf
messages (duck-typed): no I/O, no state, no server access.
Never: checks anything that depends on stored data (missing key for
ignore_value, unknown lease, compacted/future revisions: mvcc does that).

Order of checks matches etcd so a request with several faults gets the same
error: op count, then compare keys, then sub-ops depth-first (success, then
failure), then put/delete overlaps per branch; the size check comes last
and only for writes (etcd only measures what it proposes to Raft).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from google.protobuf.message import Message

from kvstore import errors
from kvstore.api.options import MAX_TXN_OPS
from kvstore.pb import rpc_pb2

# A deleted span [begin, end); a single-key delete of k is [k, k + b"\0").
Interval = tuple[bytes, bytes]


def check_range(req: rpc_pb2.RangeRequest) -> None:
    if not req.key:
        raise errors.EMPTY_KEY()


def check_put(req: rpc_pb2.PutRequest) -> None:
    if not req.key:
        raise errors.EMPTY_KEY()
    if req.ignore_value and req.value:
        raise errors.VALUE_PROVIDED()
    if req.ignore_lease and req.lease:
        raise errors.LEASE_PROVIDED()


def check_delete_range(req: rpc_pb2.DeleteRangeRequest) -> None:
    if not req.key:
        raise errors.EMPTY_KEY()


def check_request_size(req: Message, max_request_bytes: int) -> None:
    """REQUEST_TOO_LARGE when the serialized request exceeds the limit.

    etcd measures the InternalRaftRequest wrapping the request: measured on
    3.4.23, the largest Put/Txn it accepts serializes to max - 18 bytes (the
    envelope's size varies with the request ID). The request's own size is
    the stable equivalent; the 17-18 bytes just below the limit differ."""
    if req.ByteSize() > max_request_bytes:
        raise errors.REQUEST_TOO_LARGE()


def check_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int = MAX_TXN_OPS) -> None:
    """All of etcd's Txn checks: op counts, empty keys, duplicate writes."""
    # Each repeated-field access builds a container object: fetch them once.
    compare, success, failure = req.compare, req.success, req.failure
    budget = max_txn_ops - _check_counts_and_compares(compare, success, failure, max_txn_ops)
    overlap_success = _check_ops(success, budget) if success else _NO_OVERLAP
    overlap_failure = _check_ops(failure, budget) if failure else _NO_OVERLAP
    # etcd checks overlaps only after every shape check of both branches
    # ("to avoid quadratic blowup"), so a DUPLICATE_KEY never hides an
    # EMPTY_KEY from the other branch. Branches of plain puts and reads
    # were fully checked by the walk already (the common, hot case).
    if overlap_success == _DUPLICATE or overlap_failure == _DUPLICATE:
        raise errors.DUPLICATE_KEY()
    if overlap_success == _NEEDS_INTERVALS:
        check_intervals(success)
    if overlap_failure == _NEEDS_INTERVALS:
        check_intervals(failure)


# What the shape walk learnt about a branch's writes.
_NO_OVERLAP, _DUPLICATE, _NEEDS_INTERVALS = 0, 1, 2


def _check_counts_and_compares(
    compare: Sequence[rpc_pb2.Compare],
    success: Sequence[rpc_pb2.RequestOp],
    failure: Sequence[rpc_pb2.RequestOp],
    max_txn_ops: int,
) -> int:
    opc = max(len(compare), len(success), len(failure))
    if opc > max_txn_ops:
        raise errors.TOO_MANY_OPS()
    for cmp in compare:
        if not cmp.key:
            raise errors.EMPTY_KEY()
    return opc


def _check_nested_txn(req: rpc_pb2.TxnRequest, max_txn_ops: int) -> None:
    # A nested txn gets the budget its parent left over (etcd: maxTxnOps - opc).
    success, failure = req.success, req.failure
    budget = max_txn_ops - _check_counts_and_compares(req.compare, success, failure, max_txn_ops)
    _check_ops(success, budget)
    _check_ops(failure, budget)


def _check_ops(ops: Iterable[rpc_pb2.RequestOp], budget: int) -> int:
    """etcd's checkRequestOp for each op, in order; returns whether the
    branch's puts already proved distinct (_NO_OVERLAP), a put repeated
    (_DUPLICATE), or deletes / nested txns need check_intervals."""
    overlap = _NO_OVERLAP
    put_keys: set[bytes] = set()
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            put = op.request_put
            key = put.key
            if not key:
                raise errors.EMPTY_KEY()
            if put.ignore_value and put.value:
                raise errors.VALUE_PROVIDED()
            if put.ignore_lease and put.lease:
                raise errors.LEASE_PROVIDED()
            if overlap == _NO_OVERLAP:
                if key in put_keys:
                    overlap = _DUPLICATE
                put_keys.add(key)
        elif kind == "request_range":
            if not op.request_range.key:
                raise errors.EMPTY_KEY()
        elif kind == "request_delete_range":
            if not op.request_delete_range.key:
                raise errors.EMPTY_KEY()
            if overlap == _NO_OVERLAP:
                overlap = _NEEDS_INTERVALS
        elif kind == "request_txn":
            _check_nested_txn(op.request_txn, budget)
            if overlap == _NO_OVERLAP:
                overlap = _NEEDS_INTERVALS
        else:
            # etcd answers an empty RequestOp with ErrGRPCKeyNotFound.
            raise errors.KEY_NOT_FOUND()
    return overlap


def _deleted(intervals: Sequence[Interval], key: bytes) -> bool:
    # Bytewise order = Go string order. A delete with range_end "\0" (from-key)
    # is the affine interval [key, "\0"), which etcd's interval tree never
    # finds overlapping a put; begin <= key < end reproduces that.
    return any(begin <= key < end for begin, end in intervals)


def check_intervals(ops: Iterable[rpc_pb2.RequestOp]) -> tuple[set[bytes], list[Interval]]:
    """etcd's checkIntervals for one branch: DUPLICATE_KEY if a key is put
    twice, or put and deleted, by the ops of the branch (nested txns
    included; a nested txn's then/else may put the same key since only
    one of them runs). Returns (put keys, deleted intervals) of the branch."""
    ops = list(ops)
    dels: list[Interval] = []
    for op in ops:
        if op.WhichOneof("request") == "request_delete_range":
            d = op.request_delete_range
            dels.append((d.key, d.range_end) if d.range_end else (d.key, d.key + b"\0"))

    puts: set[bytes] = set()
    for op in ops:
        if op.WhichOneof("request") != "request_txn":
            continue
        puts_then, dels_then = check_intervals(op.request_txn.success)
        puts_else, dels_else = check_intervals(op.request_txn.failure)
        for key in puts_then:
            if key in puts or _deleted(dels, key):
                raise errors.DUPLICATE_KEY()
            puts.add(key)
        for key in puts_else:
            if (key in puts and key not in puts_then) or _deleted(dels, key):
                raise errors.DUPLICATE_KEY()
            puts.add(key)
        dels.extend(dels_then)
        dels.extend(dels_else)

    for op in ops:
        if op.WhichOneof("request") != "request_put":
            continue
        key = op.request_put.key
        if key in puts or _deleted(dels, key):
            raise errors.DUPLICATE_KEY()
        puts.add(key)
    return puts, dels
