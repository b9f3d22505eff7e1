"""The api servicers over real gRPC (127.0.0.1, port 0) and a fake facade.

Checks what a client sees: status code + exact etcd message for every
validation error, that validation runs before the facade is called, header
presence, the two-layer size limit (etcd's 1.5 MiB check, gRPC's 2 MiB
receive limit), error mapping (EtcdError, unexpected exceptions) and that
the server keeps serving after each error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from api_fakes import CLUSTER_ID, MEMBER_ID, RAFT_TERM, FakeKv, Stubs, serving
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore import errors
from kvstore.api import (
    DEFAULT_MAX_REQUEST_BYTES,
    GRPC_SERVER_OPTIONS,
    MAX_TXN_OPS,
    grpc_server_options,
)
from kvstore.api.errors import INTERNAL_MESSAGE
from kvstore.pb import rpc_pb2

TIMEOUT_S = 30


def run(
    scenario: Callable[[Stubs, FakeKv], Awaitable[None]], fake: FakeKv | None = None, **kw: Any
) -> FakeKv:
    fake = fake or FakeKv()

    async def main() -> None:
        async with serving(fake, **kw) as stubs:
            await scenario(stubs, fake)

    asyncio.run(asyncio.wait_for(main(), TIMEOUT_S))
    return fake


async def rpc_error(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def assert_etcd_error(call: Awaitable[Any], expected: Callable[[], errors.EtcdError]) -> None:
    err = await rpc_error(call)
    assert (err.code(), err.details()) == (expected.code, expected.message)


def put(key: bytes, value: bytes = b"v", **kw: Any) -> rpc_pb2.RequestOp:
    return rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=key, value=value, **kw))


def assert_header(hdr: rpc_pb2.ResponseHeader, revision: int) -> None:
    assert (hdr.cluster_id, hdr.member_id, hdr.raft_term, hdr.revision) == (
        CLUSTER_ID,
        MEMBER_ID,
        RAFT_TERM,
        revision,
    )


# ------------------------------------------------------------------ headers
def test_every_kv_response_carries_a_full_header():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        r = await s.kv.Put(rpc_pb2.PutRequest(key=b"a", value=b"1"))
        assert_header(r.header, 2)
        r = await s.kv.Range(rpc_pb2.RangeRequest(key=b"a"))
        assert_header(r.header, 2)
        assert [kv.value for kv in r.kvs] == [b"1"]
        r = await s.kv.Txn(rpc_pb2.TxnRequest(success=[put(b"b")]))
        assert r.succeeded
        assert_header(r.header, 3)
        r = await s.kv.DeleteRange(rpc_pb2.DeleteRangeRequest(key=b"a"))
        assert r.deleted == 1
        assert_header(r.header, 4)
        r = await s.kv.Compact(rpc_pb2.CompactionRequest(revision=3))
        assert_header(r.header, 4)
        r = await s.maintenance.Status(rpc_pb2.StatusRequest())
        assert r.version == "3.4.23"
        assert_header(r.header, 4)

    run(scenario)


def test_member_list_header_has_no_revision_like_etcd():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        r = await s.cluster.MemberList(rpc_pb2.MemberListRequest())
        assert_header(r.header, 0)
        assert [m.name for m in r.members] == ["n1"]

    run(scenario)


def test_header_filled_by_facade_is_kept():
    class HeaderKv(FakeKv):
        async def range(self, req: Any) -> rpc_pb2.RangeResponse:
            resp = await super().range(req)
            resp.header.CopyFrom(self.header(revision=42))
            resp.header.member_id = 99
            return resp

    async def scenario(s: Stubs, fake: FakeKv) -> None:
        r = await s.kv.Range(rpc_pb2.RangeRequest(key=b"a"))
        assert (r.header.member_id, r.header.revision) == (99, 42)

    run(scenario, HeaderKv())


# --------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("method", "request_"),
    [
        ("Range", rpc_pb2.RangeRequest(key=b"", range_end=b"z")),
        ("Put", rpc_pb2.PutRequest(key=b"", value=b"v")),
        ("DeleteRange", rpc_pb2.DeleteRangeRequest(key=b"")),
        ("Txn", rpc_pb2.TxnRequest(compare=[rpc_pb2.Compare(key=b"")])),
        ("Txn", rpc_pb2.TxnRequest(success=[put(b"")])),
        (
            "Txn",
            rpc_pb2.TxnRequest(
                failure=[
                    rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"")),
                ]
            ),
        ),
    ],
    ids=["range", "put", "delete", "txn-compare", "txn-put", "txn-failure-range"],
)
def test_empty_key_is_refused_before_the_facade(method, request_):
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        await assert_etcd_error(getattr(s.kv, method)(request_), errors.EMPTY_KEY)

    assert run(scenario).calls == []


def test_put_ignore_flags_with_values_are_refused():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        await assert_etcd_error(
            s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v", ignore_value=True)),
            errors.VALUE_PROVIDED,
        )
        await assert_etcd_error(
            s.kv.Put(rpc_pb2.PutRequest(key=b"k", lease=5, ignore_lease=True)),
            errors.LEASE_PROVIDED,
        )
        # The flags alone are fine at this layer (mvcc decides KEY_NOT_FOUND).
        await s.kv.Put(rpc_pb2.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))

    assert run(scenario).calls == ["put"]


def test_txn_op_limit_128_ok_129_refused():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        ops = [put(b"k%d" % i) for i in range(MAX_TXN_OPS + 1)]
        await assert_etcd_error(s.kv.Txn(rpc_pb2.TxnRequest(success=ops)), errors.TOO_MANY_OPS)
        r = await s.kv.Txn(rpc_pb2.TxnRequest(success=ops[:MAX_TXN_OPS]))
        assert len(r.responses) == MAX_TXN_OPS

    assert run(scenario).calls == ["txn"]


def test_txn_duplicate_key_is_refused():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        await assert_etcd_error(
            s.kv.Txn(rpc_pb2.TxnRequest(success=[put(b"a"), put(b"a")])), errors.DUPLICATE_KEY
        )

    assert run(scenario).calls == []


# --------------------------------------------------------------- size limits
def test_put_of_1_6_mb_is_request_too_large():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        big = b"x" * 1_600_000
        await assert_etcd_error(
            s.kv.Put(rpc_pb2.PutRequest(key=b"big", value=big)), errors.REQUEST_TOO_LARGE
        )
        await assert_etcd_error(
            s.kv.Txn(rpc_pb2.TxnRequest(success=[put(b"big", big)])), errors.REQUEST_TOO_LARGE
        )
        # Exactly at the limit is accepted (etcd refuses only len > max).
        req = rpc_pb2.PutRequest(key=b"k", value=b"x" * (DEFAULT_MAX_REQUEST_BYTES - 10))
        req.value = b"x" * (len(req.value) + DEFAULT_MAX_REQUEST_BYTES - req.ByteSize())
        assert req.ByteSize() == DEFAULT_MAX_REQUEST_BYTES
        await s.kv.Put(req)

    assert run(scenario).calls == ["put"]


def test_message_over_2_mib_is_refused_by_grpc_itself():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        err = await rpc_error(s.kv.Put(rpc_pb2.PutRequest(key=b"huge", value=b"x" * 2_200_000)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in err.details()
        assert "2097152" in err.details()
        # The server is still serving.
        r = await s.kv.Put(rpc_pb2.PutRequest(key=b"after", value=b"ok"))
        assert r.header.revision == 2

    assert run(scenario).calls == ["put"]


def test_reads_are_not_size_checked_like_etcd():
    # etcd only size-checks what it proposes to Raft; Range and read-only
    # txns are served locally.
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        key = b"k" * 1_600_000
        await s.kv.Range(rpc_pb2.RangeRequest(key=key))
        get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=key))
        await s.kv.Txn(rpc_pb2.TxnRequest(success=[get]))

    assert run(scenario).calls == ["range", "txn"]


def test_request_limit_follows_max_request_bytes():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        await assert_etcd_error(
            s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x" * 2000)), errors.REQUEST_TOO_LARGE
        )
        await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x" * 900))
        err = await rpc_error(s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"x" * 600_000)))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    run(scenario, max_request_bytes=1024)


# ------------------------------------------------------------- error mapping
def test_etcd_errors_from_the_facade_keep_code_and_exact_message():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        for i in range(3):
            await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"%d" % i))
        await s.kv.Compact(rpc_pb2.CompactionRequest(revision=3))
        await assert_etcd_error(s.kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=2)),
                                errors.COMPACTED)  # fmt: skip
        await assert_etcd_error(
            s.kv.Range(rpc_pb2.RangeRequest(key=b"k", revision=99)), errors.FUTURE_REVISION
        )
        await assert_etcd_error(s.kv.Compact(rpc_pb2.CompactionRequest(revision=3)),
                                errors.COMPACTED)  # fmt: skip
        for make in (errors.NO_LEADER, errors.LEASE_NOT_FOUND, errors.KEY_NOT_FOUND):
            fake.fail_with = make()
            await assert_etcd_error(s.kv.Put(rpc_pb2.PutRequest(key=b"k")), make)

    run(scenario)


def test_unexpected_exception_is_internal_logged_and_not_leaked(caplog):
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        fake.fail_with = RuntimeError("secret internal detail")
        err = await rpc_error(s.kv.Range(rpc_pb2.RangeRequest(key=b"k")))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert err.details() == f"{INTERNAL_MESSAGE} (RuntimeError)"
        fake.fail_with = KeyError("another")
        err = await rpc_error(s.maintenance.Status(rpc_pb2.StatusRequest()))
        assert err.code() == grpc.StatusCode.INTERNAL
        assert "another" not in err.details()
        # Still serving.
        await s.kv.Put(rpc_pb2.PutRequest(key=b"k", value=b"v"))

    with caplog.at_level(logging.ERROR, logger="kvstore.api.errors"):
        run(scenario)
    logged = [r for r in caplog.records if r.name == "kvstore.api.errors"]
    assert len(logged) == 2
    assert logged[0].exc_info and "secret internal detail" in str(logged[0].exc_info[1])


def test_client_deadline_cancels_quietly(caplog):
    class StuckKv(FakeKv):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()

        async def range(self, req: Any) -> rpc_pb2.RangeResponse:
            if req.key == b"stuck":
                self.entered.set()
                await asyncio.Event().wait()  # until the call is cancelled
            return await super().range(req)

    async def scenario(s: Stubs, fake: FakeKv) -> None:
        err = await rpc_error(s.kv.Range(rpc_pb2.RangeRequest(key=b"stuck"), timeout=2.0))
        assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert fake.entered.is_set()
        await s.kv.Range(rpc_pb2.RangeRequest(key=b"k"))

    with caplog.at_level(logging.ERROR, logger="kvstore.api.errors"):
        run(scenario, StuckKv())
    assert [r for r in caplog.records if r.name == "kvstore.api.errors"] == []


# ------------------------------------------------- unimplemented & delegated
@pytest.mark.parametrize(
    ("service", "method", "request_"),
    [
        ("maintenance", "Alarm", rpc_pb2.AlarmRequest()),
        ("maintenance", "Defragment", rpc_pb2.DefragmentRequest()),
        ("maintenance", "Hash", rpc_pb2.HashRequest()),
        ("maintenance", "HashKV", rpc_pb2.HashKVRequest()),
        ("maintenance", "MoveLeader", rpc_pb2.MoveLeaderRequest(targetID=1)),
        ("cluster", "MemberAdd", rpc_pb2.MemberAddRequest(peerURLs=["http://127.0.0.1:9"])),
        ("cluster", "MemberRemove", rpc_pb2.MemberRemoveRequest(ID=1)),
        ("cluster", "MemberUpdate", rpc_pb2.MemberUpdateRequest(ID=1)),
        ("cluster", "MemberPromote", rpc_pb2.MemberPromoteRequest(ID=1)),
    ],
)
def test_rpcs_the_facade_lacks_answer_unimplemented(service, method, request_):
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        err = await rpc_error(getattr(getattr(s, service), method)(request_))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED
        assert method in err.details()
        await s.kv.Range(rpc_pb2.RangeRequest(key=b"k"))

    run(scenario)


def test_snapshot_unimplemented_then_delegated_when_the_facade_has_it():
    async def unimplemented(s: Stubs, fake: FakeKv) -> None:
        err = await rpc_error(_collect(s.maintenance.Snapshot(rpc_pb2.SnapshotRequest())))
        assert err.code() == grpc.StatusCode.UNIMPLEMENTED

    run(unimplemented)

    class SnapKv(FakeKv):
        async def snapshot(self, req: Any):
            for i in range(3):
                yield rpc_pb2.SnapshotResponse(remaining_bytes=2 - i, blob=b"%d" % i)

    async def delegated(s: Stubs, fake: FakeKv) -> None:
        chunks = await _collect(s.maintenance.Snapshot(rpc_pb2.SnapshotRequest()))
        assert [c.blob for c in chunks] == [b"0", b"1", b"2"]

    run(delegated, SnapKv())


async def _collect(stream: Any) -> list[Any]:
    return [item async for item in stream]


def test_optional_rpcs_are_delegated_with_errors_mapped():
    class AlarmKv(FakeKv):
        def alarm(self, req: Any) -> rpc_pb2.AlarmResponse:
            return rpc_pb2.AlarmResponse(alarms=[rpc_pb2.AlarmMember(memberID=7, alarm=1)])

        async def member_remove(self, req: Any) -> rpc_pb2.MemberRemoveResponse:
            raise errors.MEMBER_NOT_FOUND()

    async def scenario(s: Stubs, fake: FakeKv) -> None:
        r = await s.maintenance.Alarm(rpc_pb2.AlarmRequest())
        assert [(a.memberID, a.alarm) for a in r.alarms] == [(7, 1)]
        await assert_etcd_error(
            s.cluster.MemberRemove(rpc_pb2.MemberRemoveRequest(ID=3)), errors.MEMBER_NOT_FOUND
        )

    run(scenario, AlarmKv())


def test_grpc_health_reports_serving():
    async def scenario(s: Stubs, fake: FakeKv) -> None:
        stub = health_pb2_grpc.HealthStub(s.channel)
        r = await stub.Check(health_pb2.HealthCheckRequest(service=""))
        assert r.status == health_pb2.HealthCheckResponse.SERVING

    run(scenario)


# ------------------------------------------------------------------ options
def test_server_options_receive_limit_and_keepalive_policy():
    opts = dict(grpc_server_options(1000))
    assert opts["grpc.max_receive_message_length"] == 1000 + 512 * 1024
    assert opts["grpc.max_send_message_length"] == -1
    assert opts["grpc.http2.min_ping_interval_without_data_ms"] == 5000
    assert opts["grpc.http2.max_ping_strikes"] == 0
    assert opts["grpc.keepalive_permit_without_calls"] == 1
    assert dict(GRPC_SERVER_OPTIONS)["grpc.max_receive_message_length"] == 2_097_152
    with pytest.raises(ValueError):
        grpc_server_options(0)
