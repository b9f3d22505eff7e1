"""Alarms applied through the apply path, NOSPACE capping, request-time quota."""

from __future__ import annotations

import pytest

from kvstore import errors
from kvstore.maintenance.quota import (
    NOSPACE,
    AlarmTable,
    QuotaGuard,
    effective_quota,
)
from kvstore.pb import rpc_pb2
from kvstore.server.applier import apply_handlers

A = rpc_pb2.AlarmRequest


def _apply(member, table: AlarmTable, req) -> rpc_pb2.AlarmResponse:
    batch = member.store.begin_batch()
    resp = table.apply_alarm(batch, req)
    batch.commit(sync=False)
    return resp


def test_activate_get_deactivate_persist(member) -> None:
    table = AlarmTable.load(member.backend)
    assert not table.has(NOSPACE)
    resp = _apply(member, table, A(action=A.ACTIVATE, memberID=7, alarm=rpc_pb2.NOSPACE))
    assert [(a.memberID, a.alarm) for a in resp.alarms] == [(7, NOSPACE)]
    assert table.has(NOSPACE)
    assert table.status_errors() == ["memberID:7 alarm:NOSPACE "]
    assert AlarmTable.load(member.backend).has(NOSPACE)  # persisted in the batch
    got = _apply(member, table, A(action=A.GET))
    assert [(a.memberID, a.alarm) for a in got.alarms] == [(7, NOSPACE)]
    off = _apply(member, table, A(action=A.DEACTIVATE, memberID=7, alarm=rpc_pb2.NOSPACE))
    assert [(a.memberID, a.alarm) for a in off.alarms] == [(7, NOSPACE)]
    assert not table.has(NOSPACE)
    member.reopen()
    assert not AlarmTable.load(member.backend).has(NOSPACE)
    # Deactivating an alarm that is not raised answers an empty list.
    assert not _apply(member, table, A(action=A.DEACTIVATE, memberID=7, alarm=1)).alarms


def _gated(kind: str, table: AlarmTable):
    """The apply pipeline for one kind: the NOSPACE stage, then the handler."""
    handler = apply_handlers()[kind]

    def run(batch, req):
        table.admit(kind, req)
        return handler(batch, req)

    return run


def test_capped_handlers_refuse_writes_but_not_deletes(member) -> None:
    table = AlarmTable()
    put = _gated("put", table)
    txn = _gated("txn", table)
    delete = _gated("delete_range", table)
    batch = member.store.begin_batch()
    put(batch, rpc_pb2.PutRequest(key=b"a", value=b"1"))
    put(batch, rpc_pb2.PutRequest(key=b"d", value=b"4"))
    batch.commit(sync=False)
    _apply(member, table, A(action=A.ACTIVATE, memberID=1, alarm=rpc_pb2.NOSPACE))
    batch = member.store.begin_batch()
    with pytest.raises(errors.EtcdError) as exc:
        put(batch, rpc_pb2.PutRequest(key=b"b", value=b"2"))
    assert exc.value == errors.NO_SPACE()
    writing = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"c", value=b"3"))]
    )
    with pytest.raises(errors.EtcdError):
        txn(batch, writing)
    deleting = rpc_pb2.TxnRequest(
        success=[rpc_pb2.RequestOp(request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"a"))]
    )
    txn(batch, deleting)
    delete(batch, rpc_pb2.DeleteRangeRequest(key=b"d"))
    batch.commit(sync=False)
    assert [member.get(k) for k in (b"a", b"b", b"d")] == [None, None, None]


def test_quota_guard() -> None:
    size = [1000]
    table = AlarmTable()
    guard = QuotaGuard(2000, lambda: size[0], table)
    small = rpc_pb2.PutRequest(key=b"k", value=b"v" * 10)
    big = rpc_pb2.PutRequest(key=b"k", value=b"v" * 1000)
    assert guard.check("put", small) is False
    assert guard.check("put", big) is True  # would exceed: raise the alarm
    assert guard.check("delete_range", rpc_pb2.DeleteRangeRequest(key=b"k")) is False
    table._alarms.add((1, NOSPACE))
    with pytest.raises(errors.EtcdError):
        guard.check("put", small)
    assert QuotaGuard(0, lambda: 10**12, AlarmTable()).check("put", big) is False


def test_effective_quota() -> None:
    assert effective_quota(0) == 2 * 1024**3
    assert effective_quota(-1) == 0
    assert effective_quota(12345) == 12345
