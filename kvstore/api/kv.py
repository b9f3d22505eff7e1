"""KV servicer (`etcdserverpb.KV`): validate, delegate to KvServer, map errors.

Owns: the per-RPC sequence etcd's v3rpc `kvServer` follows — shape checks
(api.validation), the size limit for writes, the call into the facade, and
making sure the response carries a ResponseHeader.
Never: touches MVCC, Raft or the network itself; never catches an error
locally (api.errors.grpc_errors maps every exception in one place).

Hot path: every unary KV call passes here, so each method does only the
checks etcd does, in etcd's order, with no allocation beyond the response.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

import grpc

from kvstore import errors
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import grpc_errors
from kvstore.api.options import DEFAULT_MAX_REQUEST_BYTES, MAX_TXN_OPS
from kvstore.api.validation import (
    check_delete_range,
    check_put,
    check_range,
    check_request_size,
    check_txn,
)
from kvstore.mvcc.txn_ops import txn_is_read_only
from kvstore.pb import rpc_pb2, rpc_pb2_grpc
from kvstore.seams import KvFacade

Context = grpc.aio.ServicerContext


class _HasHeader(Protocol):
    @property
    def header(self) -> rpc_pb2.ResponseHeader: ...


_R = TypeVar("_R", bound=_HasHeader)


def ensure_header(kv: KvFacade, resp: _R) -> _R:
    """Fill a header the facade left empty (member_id is never 0 once filled),
    keeping a revision it did set."""
    hdr = resp.header
    if not hdr.member_id:
        hdr.CopyFrom(kv.header(hdr.revision or None))
    return resp


class KvServicer(rpc_pb2_grpc.KVServicer):
    """`kv` is the KvServer facade (async range/put/delete_range/txn/compact)."""

    def __init__(
        self,
        kv: KvFacade,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_txn_ops: int = MAX_TXN_OPS,
        auth: RequestAuth | None = None,
    ) -> None:
        """`auth`: the member's request auth (None: no auth at all)."""
        self._kv = kv
        self._auth = auth
        self._max_request_bytes = max_request_bytes
        self._max_txn_ops = max_txn_ops

    @grpc_errors
    async def Range(  # noqa: N802
        self, request: rpc_pb2.RangeRequest, context: Context
    ) -> rpc_pb2.RangeResponse:
        check_range(request)
        # No size check: etcd measures only what it proposes to Raft.
        auth = self._auth
        if auth is None:
            return ensure_header(self._kv, await self._kv.range(request))
        checker = auth.checker
        resp = await auth.read(
            context, lambda ai: checker.check_range(ai, request), lambda: self._kv.range(request)
        )
        return ensure_header(self._kv, resp)

    @grpc_errors
    async def Put(  # noqa: N802
        self, request: rpc_pb2.PutRequest, context: Context
    ) -> rpc_pb2.PutResponse:
        check_put(request)
        check_request_size(request, self._max_request_bytes)
        if self._auth is not None:
            self._auth.bind(context)  # checked at apply
        return ensure_header(self._kv, await self._kv.put(request))

    @grpc_errors
    async def DeleteRange(  # noqa: N802
        self, request: rpc_pb2.DeleteRangeRequest, context: Context
    ) -> rpc_pb2.DeleteRangeResponse:
        check_delete_range(request)
        check_request_size(request, self._max_request_bytes)
        if self._auth is not None:
            self._auth.bind(context)
        return ensure_header(self._kv, await self._kv.delete_range(request))

    @grpc_errors
    async def Txn(  # noqa: N802
        self, request: rpc_pb2.TxnRequest, context: Context
    ) -> rpc_pb2.TxnResponse:
        check_txn(request, self._max_txn_ops)
        # ByteSize is computed in C; the read-only walk only runs for huge txns
        # (etcd serves read-only txns locally, so it never size-checks them).
        if request.ByteSize() > self._max_request_bytes and not txn_is_read_only(request):
            raise errors.REQUEST_TOO_LARGE()
        auth = self._auth
        if auth is not None:
            if auth.store.enabled and txn_is_read_only(request):
                # Served locally (no proposal): checked here, as etcd's doSerialize.
                checker = auth.checker
                resp = await auth.read(
                    context, lambda ai: checker.check_txn(ai, request),
                    lambda: self._kv.txn(request),
                )  # fmt: skip
                return ensure_header(self._kv, resp)
            auth.bind(context)
        return ensure_header(self._kv, await self._kv.txn(request))

    @grpc_errors
    async def Compact(  # noqa: N802
        self, request: rpc_pb2.CompactionRequest, context: Context
    ) -> rpc_pb2.CompactionResponse:
        # Revision checks (compacted / future) belong to mvcc, as in etcd.
        if self._auth is not None:
            self._auth.bind(context)
        return ensure_header(self._kv, await self._kv.compact(request))
