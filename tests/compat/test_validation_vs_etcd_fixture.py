"""kvstore's KV servicer, run in-process, against etcd's recorded answers.

For every raw-gRPC case (grpc_cases.GRPC_CASES) whose etcd answer was
decided by etcd's request validation — or was a success — the servicer's
validation must give the same status code and exact message (or let the
request through). Needs no etcd binary: the answers are the fixture
recorded from real etcd (fixtures/grpc_etcd.json). Cases decided by the
store (missing key for ignore_value, compaction) or by the gRPC transport
are left to test_grpc_compat.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import grpc
import pytest
from compat_harness import load_fixture
from grpc_cases import GRPC_CASES

from kvstore import errors
from kvstore.api.kv import KvServicer
from kvstore.pb import rpc_pb2

FIXTURE = Path(__file__).parent / "fixtures" / "grpc_etcd.json"
RECORDED = load_fixture(FIXTURE)

# Messages produced by etcd's gRPC-layer validation (v3rpc/key.go + the size check).
VALIDATION_MESSAGES = {
    e.message
    for e in (
        errors.EMPTY_KEY,
        errors.VALUE_PROVIDED,
        errors.LEASE_PROVIDED,
        errors.TOO_MANY_OPS,
        errors.DUPLICATE_KEY,
        errors.REQUEST_TOO_LARGE,
    )
}
# etcd answers an empty RequestOp with KEY_NOT_FOUND from validation too;
# a Put with ignore_value on a missing key gets it from the store.
STORE_DECIDED = {"put_ignore_value_missing_key"}


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise _Aborted(code, details)


class _EchoKv:
    """Facade that accepts everything: only validation can refuse."""

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader:
        return rpc_pb2.ResponseHeader(cluster_id=1, member_id=1, revision=revision or 1)

    async def range(self, req: Any) -> Any:
        return rpc_pb2.RangeResponse()

    async def put(self, req: Any) -> Any:
        return rpc_pb2.PutResponse()

    async def delete_range(self, req: Any) -> Any:
        return rpc_pb2.DeleteRangeResponse()

    async def txn(self, req: Any) -> Any:
        return rpc_pb2.TxnResponse()

    async def compact(self, req: Any) -> Any:
        return rpc_pb2.CompactionResponse()


def _decided_by_validation(name: str) -> bool:
    rec = RECORDED.get(name)
    if rec is None or name in STORE_DECIDED:
        return False
    if rec["code"] == "OK":
        return True
    if rec["code"] != "INVALID_ARGUMENT":
        return False
    return rec["details"] in VALIDATION_MESSAGES or rec["details"] == errors.KEY_NOT_FOUND.message


CASES = [c for c in GRPC_CASES if _decided_by_validation(c.name) and c.method != "Compact"]


@pytest.mark.skipif(not RECORDED, reason="no recorded etcd answers (fixtures/grpc_etcd.json)")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_servicer_validation_answers_like_etcd(case):
    servicer = KvServicer(_EchoKv())
    request = case.build(f"/grpc/{case.name}/")

    async def call() -> dict[str, str]:
        try:
            await getattr(servicer, case.method)(request, _Context())
        except _Aborted as exc:
            return {"code": exc.code.name, "details": exc.details}
        return {"code": "OK"}

    got = asyncio.run(asyncio.wait_for(call(), 30))
    expected = RECORDED[case.name]
    assert got == {k: expected[k] for k in got}
    assert got["code"] == expected["code"]


def test_the_fixture_covers_validation_cases():
    # Guards against the filter above silently selecting nothing.
    assert len(CASES) >= 20
