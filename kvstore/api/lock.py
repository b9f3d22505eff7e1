"""Lock servicer (`v3lockpb.Lock`) and the waiting recipes it shares with Election.

Owns: etcd's server-side lock recipe (clientv3 `concurrency.Mutex`, as the
etcd lock server runs it): the caller's key is `name/<lease hex>`, created
in a Txn under the caller's lease; the lock is held once every key under
`name/` with a lower create revision has been deleted (waited for through
the node's WatchHub, never by polling). After waiting, the lease is
re-checked: if the caller's key vanished (its lease expired or was
revoked) the call fails with "requested lease not found" instead of
returning a lock nobody holds. The returned key's create revision is the
fencing token callers should compare on in later Txns (Jepsen 2020).
Never: keeps a lease alive (a LockRequest without a lease gets a 60 s
session lease, like etcd's orphaned session) or touches MVCC directly.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from kvstore import errors
from kvstore.api.auth_gate import RequestAuth
from kvstore.api.errors import grpc_errors
from kvstore.pb import kv_pb2, rpc_pb2, v3lock_pb2, v3lock_pb2_grpc
from kvstore.seams import KvFacade, LeaseFacade
from kvstore.watch import WatchHub

Context = grpc.aio.ServicerContext
Compare = rpc_pb2.Compare
RangeRequest = rpc_pb2.RangeRequest
SESSION_TTL_S = 60  # concurrency.NewSession default TTL


def prefix_end(prefix: bytes) -> bytes:
    """etcd GetPrefixRangeEnd: increment the last byte below 0xff."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"


def first_create(prefix: bytes) -> rpc_pb2.RangeRequest:
    """clientv3 WithFirstCreate: the oldest key under `prefix`."""
    return RangeRequest(
        key=prefix,
        range_end=prefix_end(prefix),
        sort_target=RangeRequest.CREATE,
        sort_order=RangeRequest.ASCEND,
        limit=1,
    )


def key_lease_suffix(lease: int) -> bytes:
    return b"%x" % lease


async def session_lease(leases: LeaseFacade, lease: int) -> int:
    """The caller's lease, or a fresh session lease when it passed 0."""
    if lease:
        return lease
    resp = await leases.grant(rpc_pb2.LeaseGrantRequest(TTL=SESSION_TTL_S))
    return resp.ID


async def claim_key(
    kv: KvFacade,
    leases: LeaseFacade,
    name: bytes,
    lease: int,
    value: bytes = b"",
    *reads: rpc_pb2.RangeRequest,
) -> tuple[bytes, int, int, rpc_pb2.TxnResponse]:
    """concurrency's newKey step shared by Lock and Campaign: create
    `name/<lease hex>` under the caller's (or a new session) lease unless it
    already exists (a retry of the same session), running `reads` (RangeRequests)
    in the same Txn either way. Returns (key, lease, the key's create revision,
    the Txn response: responses[0] is the put or the key's range, then `reads`)."""
    lease = await session_lease(leases, lease)
    key = name + b"/" + key_lease_suffix(lease)
    also = [rpc_pb2.RequestOp(request_range=r) for r in reads]
    resp = await kv.txn(
        rpc_pb2.TxnRequest(
            compare=[
                Compare(key=key, target=Compare.CREATE, result=Compare.EQUAL, create_revision=0)
            ],
            success=[
                rpc_pb2.RequestOp(
                    request_put=rpc_pb2.PutRequest(key=key, value=value, lease=lease)
                ),
                *also,
            ],
            failure=[rpc_pb2.RequestOp(request_range=RangeRequest(key=key)), *also],
        )
    )
    create_rev = resp.header.revision
    if not resp.succeeded:
        create_rev = resp.responses[0].response_range.kvs[0].create_revision
    return key, lease, create_rev, resp


async def wait_delete(hub: WatchHub, key: bytes, revision: int) -> None:
    """Return once `key` is deleted at or after `revision` (or history for it
    was compacted away: the caller re-reads the state in that case)."""
    stream = hub.new_stream()
    try:
        stream.create(
            rpc_pb2.WatchCreateRequest(
                key=key, start_revision=revision, filters=[rpc_pb2.WatchCreateRequest.NOPUT]
            )
        )
        while True:
            resp = await stream.next()
            if resp is None or resp.canceled:
                return
            if any(ev.type == kv_pb2.Event.DELETE for ev in resp.events):
                return
    finally:
        stream.close()


async def wait_deletes(
    kv: KvFacade, hub: WatchHub, prefix: bytes, max_create_revision: int
) -> rpc_pb2.ResponseHeader:
    """concurrency.waitDeletes: wait until no key under `prefix` has a create
    revision <= `max_create_revision`; returns the header of the last read."""
    while True:
        resp = await kv.range(
            RangeRequest(
                key=prefix,
                range_end=prefix_end(prefix),
                sort_target=RangeRequest.CREATE,
                sort_order=RangeRequest.DESCEND,
                limit=1,
                max_create_revision=max_create_revision,
            )
        )
        if not resp.kvs:
            return resp.header
        await wait_delete(hub, resp.kvs[0].key, resp.header.revision)


async def delete_quietly(kv: KvFacade, key: bytes) -> None:
    """Best-effort cleanup after a failed or abandoned wait."""
    with contextlib.suppress(Exception):
        await asyncio.shield(kv.delete_range(rpc_pb2.DeleteRangeRequest(key=key)))


async def still_owned(kv: KvFacade, key: bytes, create_revision: int) -> bool:
    resp = await kv.range(RangeRequest(key=key))
    return bool(resp.kvs) and resp.kvs[0].create_revision == create_revision


class LockServicer(v3lock_pb2_grpc.LockServicer):
    """`kv`: KvServer facade; `leases`: LeaseService; `hub`: WatchHub."""

    def __init__(
        self, kv: KvFacade, leases: LeaseFacade, hub: WatchHub, auth: RequestAuth | None = None
    ) -> None:
        """`auth`: writes are proposed for the caller (None: no auth)."""
        self._auth = auth
        self._kv = kv
        self._leases = leases
        self._hub = hub

    @grpc_errors
    async def Lock(  # noqa: N802
        self, request: v3lock_pb2.LockRequest, context: Context
    ) -> v3lock_pb2.LockResponse:
        if self._auth is not None:
            self._auth.bind(context)
        kv = self._kv
        pfx = request.name + b"/"
        key, _, my_rev, resp = await claim_key(
            kv, self._leases, request.name, request.lease, b"", first_create(pfx)
        )
        owner = resp.responses[1].response_range.kvs
        header = resp.header
        if owner and owner[0].create_revision != my_rev:
            try:
                header = await wait_deletes(kv, self._hub, pfx, my_rev - 1)
            except BaseException:
                await delete_quietly(kv, key)
                raise
        if not await still_owned(kv, key, my_rev):
            raise errors.LEASE_NOT_FOUND()
        out = v3lock_pb2.LockResponse(key=key)
        out.header.CopyFrom(kv.header(header.revision or None))
        return out

    @grpc_errors
    async def Unlock(  # noqa: N802
        self, request: v3lock_pb2.UnlockRequest, context: Context
    ) -> v3lock_pb2.UnlockResponse:
        if self._auth is not None:
            self._auth.bind(context)
        resp = await self._kv.delete_range(rpc_pb2.DeleteRangeRequest(key=request.key))
        out = v3lock_pb2.UnlockResponse()
        out.header.CopyFrom(self._kv.header(resp.header.revision or None))
        return out
