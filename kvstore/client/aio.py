"""`AsyncClient`: the asyncio client for kvstore and etcd v3 servers.

Owns: the public async API (KV, watch, lease, cluster, maintenance, lock,
election). Every unary call goes through `Transport.unary`, which applies the
retry rule (reads fail over on UNAVAILABLE; writes are resent only if never
sent). Requests are built by `ops.py`, responses converted by `_convert.py`.

Must never: be shared between event loops; the sync `Client` runs one
AsyncClient on its own loop thread instead of reimplementing anything.

Example::

    async with AsyncClient(["127.0.0.1:2379", "127.0.0.1:22379"]) as client:
        await client.put("greeting", "hello")
        result = await client.get("greeting")
        print(result.value, result.revision)
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

import grpc

from kvstore.client import _convert
from kvstore.client._transport import (
    REQUIRE_LEADER,
    Transport,
    parse_endpoints,
    stream_write,
)
from kvstore.client.auth import AuthMixin, ClientTLS, TokenAuth
from kvstore.client.concurrency import DEFAULT_SESSION_TTL, Election, Lock
from kvstore.client.config_view import ConfigView, OnChange, OnError, Schema
from kvstore.client.configtree import Decoder
from kvstore.client.errors import (
    ClientError,
    LeaseNotFoundError,
    NoLeaderError,
    PermissionDeniedError,
    from_rpc_error,
)
from kvstore.client.lease import Lease, ServiceRegistration
from kvstore.client.ops import (
    KeyLike,
    LeaseLike,
    Txn,
    delete_request,
    key_range,
    put_request,
    range_request,
)
from kvstore.client.types import (
    Alarm,
    DeleteResult,
    GetResult,
    HashKVResult,
    Header,
    LeaseGrant,
    LeaseKeepAliveResult,
    LeaseLeasesResult,
    LeaseTimeToLive,
    MemberAddResult,
    MemberListResult,
    MoveLeaderResult,
    PutResult,
    Status,
    TxnResult,
)
from kvstore.client.watch import Watcher
from kvstore.pb import rpc_pb2

ProgressCallback = Callable[[int, int], None]
"""Called as progress(received_bytes, remaining_bytes) after each snapshot chunk."""

_FILTERS = {"noput": 0, "nodelete": 1}


class AsyncClient(AuthMixin):
    """Async client. Create with endpoints ("host:port", list or comma-separated;
    default: $KVSTORE_ENDPOINTS), `dial_timeout` (seconds to connect to one
    endpoint) and `command_timeout` (default deadline of each call; every
    method also takes `timeout=`).

    Security: `tls=ClientTLS(ca_file=..., cert_file=..., key_file=...)` (or
    `tls=True` for the system roots; "https://" endpoints imply it); `user=`
    and `password=` (both non-empty, as clientv3) authenticate once and
    re-authenticate by themselves when the token expires (watches and lease
    keep-alives carry on)."""

    def __init__(
        self,
        endpoints: str | Sequence[str] | None = None,
        *,
        dial_timeout: float = 2.0,
        command_timeout: float = 5.0,
        tls: ClientTLS | bool | None = None,
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        if tls is None and _any_https(endpoints):
            tls = True
        self.endpoints = parse_endpoints(endpoints)
        self.transport = Transport(
            self.endpoints,
            dial_timeout=dial_timeout,
            command_timeout=command_timeout,
            tls=ClientTLS() if tls is True else (tls or None),
            # clientv3: credentials only when both are given (an empty password
            # means "no authentication", e.g. a certificate-only user).
            auth=TokenAuth(user, password) if user and password else None,
        )

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, service: str, method: str, request: Any, *, idempotent: bool, **kw: Any
    ) -> Any:
        _ep, resp = await self.transport.unary(
            service, method, request, idempotent=idempotent, **kw
        )
        return resp

    # --- KV --------------------------------------------------------------------

    async def get(self, key: KeyLike, *, timeout: float | None = None, **options: Any) -> GetResult:
        """Read a key or range.

        Options: prefix, from_key, range_end, revision (0 = latest), limit,
        sort_order ("none"/"ascend"/"descend"), sort_target ("key"/"version"/
        "create"/"mod"/"value"), serializable (local, possibly stale read),
        keys_only, count_only, min/max_mod_revision, min/max_create_revision.

        >>> r = await client.get("/services/", prefix=True)
        >>> [kv.key for kv in r.kvs], r.count, r.revision

        Raises CompactedError / FutureRevisionError for a bad `revision`."""
        req = range_request(key, **options)
        return _convert.get_result(
            await self._call("KV", "Range", req, idempotent=True, timeout=timeout)
        )

    async def put(
        self,
        key: KeyLike,
        value: KeyLike,
        *,
        lease: LeaseLike = 0,
        prev_kv: bool = False,
        ignore_value: bool = False,
        ignore_lease: bool = False,
        timeout: float | None = None,
    ) -> PutResult:
        """Write `key = value` (optionally attached to `lease`: a lease id or
        the Lease object from `client.lease()`).
        `prev_kv=True` returns the previous KeyValue in `result.prev_kv`."""
        req = put_request(
            key,
            value,
            lease=lease,
            prev_kv=prev_kv,
            ignore_value=ignore_value,
            ignore_lease=ignore_lease,
        )
        return _convert.put_result(
            await self._call("KV", "Put", req, idempotent=False, timeout=timeout)
        )

    async def delete(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        from_key: bool = False,
        range_end: KeyLike | None = None,
        prev_kv: bool = False,
        timeout: float | None = None,
    ) -> DeleteResult:
        """Delete a key or range; `result.deleted` is the number of keys removed."""
        req = delete_request(
            key, prefix=prefix, from_key=from_key, range_end=range_end, prev_kv=prev_kv
        )
        return _convert.delete_result(
            await self._call("KV", "DeleteRange", req, idempotent=False, timeout=timeout)
        )

    def txn(self, *, timeout: float | None = None) -> Txn:
        """Start a transaction; `await ....commit()` sends it.

        >>> r = await client.txn() \\
        ...     .if_(Compare.value("cfg") == "old") \\
        ...     .then(Op.put("cfg", "new")) \\
        ...     .else_(Op.get("cfg")) \\
        ...     .commit()
        >>> r.succeeded, r.responses
        """
        return Txn(lambda req: self.txn_request(req, timeout=timeout))

    async def txn_request(
        self, req: rpc_pb2.TxnRequest, *, timeout: float | None = None
    ) -> TxnResult:
        """Send a prebuilt TxnRequest (used by `Txn.commit`)."""
        return _convert.txn_result(
            await self._call("KV", "Txn", req, idempotent=False, timeout=timeout)
        )

    async def compact(
        self, revision: int, *, physical: bool = False, timeout: float | None = None
    ) -> int:
        """Discard history before `revision`; returns the header revision."""
        req = rpc_pb2.CompactionRequest(revision=revision, physical=physical)
        resp = await self._call("KV", "Compact", req, idempotent=False, timeout=timeout)
        return resp.header.revision

    # --- watch -------------------------------------------------------------------

    def watch(
        self,
        key: KeyLike,
        *,
        prefix: bool = False,
        from_key: bool = False,
        range_end: KeyLike | None = None,
        start_revision: int = 0,
        prev_kv: bool = False,
        filters: Sequence[str] = (),
        progress_notify: bool = False,
        reconnect_timeout: float = 60.0,
    ) -> Watcher:
        """Watch a key or range; use as `async with` + `async for`.

        `start_revision=0` delivers changes after the current revision; a
        positive revision replays history from it (inclusive). The watcher
        survives member failures (resumes on another endpoint, no event lost
        or repeated); a compacted start raises CompactedError with
        `.compact_revision`. `filters`: "noput" / "nodelete"."""
        k, end = key_range(key, prefix=prefix, from_key=from_key, range_end=range_end)
        return Watcher(
            self.transport,
            k,
            end,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=tuple(_FILTERS[f.lower()] for f in filters),
            progress_notify=progress_notify,
            reconnect_timeout=reconnect_timeout,
        )

    async def config_view(
        self,
        prefix: KeyLike,
        *,
        schema: Schema | None = None,
        decode: str | Decoder = "yaml",
        on_change: OnChange | None = None,
        on_error: OnError | None = None,
        reconnect_timeout: float = 60.0,
    ) -> ConfigView:
        """A live, read-only mapping of the keys under `prefix` (relative keys,
        decoded values), kept current by a Range plus a resuming Watch; the
        events of one transaction are applied together. Close with
        `await view.aclose()` or `async with`. See `ConfigView`.

        >>> view = await client.config_view("/config/app", schema={"type": "object"},
        ...                                 on_change=lambda old, new, rev: print(rev))
        >>> view["db/port"], view.snapshot.tree()

        Raises ConfigValidationError when the tree is invalid at start."""
        view = ConfigView(
            self,
            prefix,
            schema=schema,
            decode=decode,
            on_change=on_change,
            on_error=on_error,
            reconnect_timeout=reconnect_timeout,
        )
        return await view.start()

    # --- lease -------------------------------------------------------------------

    async def lease_grant(
        self, ttl: int, *, lease_id: int = 0, timeout: float | None = None
    ) -> LeaseGrant:
        """Grant a lease of `ttl` seconds (server may round up to its minimum)."""
        req = rpc_pb2.LeaseGrantRequest(TTL=ttl, ID=lease_id)
        # Not retried once sent: a resent grant could create a second lease.
        return _convert.lease_grant(
            await self._call("Lease", "LeaseGrant", req, idempotent=False, timeout=timeout)
        )

    async def lease_revoke(self, lease_id: int, *, timeout: float | None = None) -> Header:
        """Revoke a lease, deleting its keys; returns the response header.
        LeaseNotFoundError if unknown."""
        req = rpc_pb2.LeaseRevokeRequest(ID=lease_id)
        # Revoking twice is harmless apart from a NotFound: safe to retry.
        resp = await self._call("Lease", "LeaseRevoke", req, idempotent=True, timeout=timeout)
        return _convert.header(resp.header)

    async def lease_time_to_live(
        self, lease_id: int, *, keys: bool = False, timeout: float | None = None
    ) -> LeaseTimeToLive:
        """Remaining TTL (-1 when the lease does not exist) and, with keys=True,
        the attached keys."""
        req = rpc_pb2.LeaseTimeToLiveRequest(ID=lease_id, keys=keys)
        return _convert.lease_ttl(
            await self._call("Lease", "LeaseTimeToLive", req, idempotent=True, timeout=timeout)
        )

    async def lease_leases(self, *, timeout: float | None = None) -> LeaseLeasesResult:
        """IDs of all live leases, with the response header."""
        resp = await self._call(
            "Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest(), idempotent=True, timeout=timeout
        )
        return LeaseLeasesResult(_convert.header(resp.header), tuple(s.ID for s in resp.leases))

    async def leases(self, *, timeout: float | None = None) -> list[int]:
        """IDs of all live leases."""
        resp = await self._call(
            "Lease", "LeaseLeases", rpc_pb2.LeaseLeasesRequest(), idempotent=True, timeout=timeout
        )
        return [s.ID for s in resp.leases]

    async def lease_keep_alive_once(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Renew once; returns the granted TTL. LeaseNotFoundError if gone."""
        return (await self.lease_renew(lease_id, timeout=timeout)).ttl

    async def lease_renew(
        self, lease_id: int, *, timeout: float | None = None
    ) -> LeaseKeepAliveResult:
        """Renew once over a LeaseKeepAlive stream; the whole answer (header,
        id, new TTL). LeaseNotFoundError if gone."""
        deadline = timeout if timeout is not None else self.transport.command_timeout
        ep = await self.transport.connect(time.monotonic() + deadline)
        call = self.transport.stub(ep, "Lease").LeaseKeepAlive(
            metadata=await self.transport.call_metadata(REQUIRE_LEADER), timeout=deadline
        )
        try:
            await stream_write(call, rpc_pb2.LeaseKeepAliveRequest(ID=lease_id))
            resp = await call.read()
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        finally:
            call.cancel()
        if resp is grpc.aio.EOF or resp.TTL <= 0:
            raise LeaseNotFoundError("etcdserver: requested lease not found")
        return LeaseKeepAliveResult(_convert.header(resp.header), resp.ID, resp.TTL)

    def lease(self, ttl: int, *, lease_id: int = 0) -> Lease:
        """A lease for `async with`: granted on enter, kept alive every TTL/3,
        revoked on exit. Pass the lease itself (or `lease.id`) to put(lease=...)."""
        return Lease(self, ttl, lease_id)

    def register_service(
        self, key: KeyLike, value: KeyLike, *, ttl: int = 10
    ) -> ServiceRegistration:
        """Keep `key = value` registered under a lease while the block runs,
        re-registering after lease loss. See the README's client guide."""
        return ServiceRegistration(self, key, value, ttl)

    # --- concurrency ---------------------------------------------------------------

    def lock(self, name: KeyLike, *, ttl: int = DEFAULT_SESSION_TTL) -> Lock:
        """A distributed lock (etcdctl-compatible keys); `async with` yields a
        LockKey whose `.revision` is the fencing token."""
        return Lock(self, name, ttl)

    def election(self, name: KeyLike, *, ttl: int = DEFAULT_SESSION_TTL) -> Election:
        return Election(self, name, ttl)

    # --- cluster ---------------------------------------------------------------------

    async def member_list(self, *, timeout: float | None = None) -> MemberListResult:
        resp = await self._call(
            "Cluster", "MemberList", rpc_pb2.MemberListRequest(), idempotent=True, timeout=timeout
        )
        return _convert.member_list(resp)

    async def member_add(
        self, peer_urls: Sequence[str], *, learner: bool = False, timeout: float | None = None
    ) -> MemberAddResult:
        req = rpc_pb2.MemberAddRequest(peerURLs=list(peer_urls), isLearner=learner)
        return _convert.member_add(
            await self._call("Cluster", "MemberAdd", req, idempotent=False, timeout=timeout)
        )

    async def member_remove(
        self, member_id: int, *, timeout: float | None = None
    ) -> MemberListResult:
        req = rpc_pb2.MemberRemoveRequest(ID=member_id)
        return _convert.member_list(
            await self._call("Cluster", "MemberRemove", req, idempotent=False, timeout=timeout)
        )

    async def member_update(
        self, member_id: int, peer_urls: Sequence[str], *, timeout: float | None = None
    ) -> MemberListResult:
        req = rpc_pb2.MemberUpdateRequest(ID=member_id, peerURLs=list(peer_urls))
        return _convert.member_list(
            await self._call("Cluster", "MemberUpdate", req, idempotent=False, timeout=timeout)
        )

    async def member_promote(
        self, member_id: int, *, timeout: float | None = None
    ) -> MemberListResult:
        req = rpc_pb2.MemberPromoteRequest(ID=member_id)
        return _convert.member_list(
            await self._call("Cluster", "MemberPromote", req, idempotent=False, timeout=timeout)
        )

    # --- maintenance -----------------------------------------------------------------

    async def status(self, endpoint: str | None = None, *, timeout: float | None = None) -> Status:
        """Status of the member at `endpoint` (default: any reachable member)."""
        ep, resp = await self.transport.unary(
            "Maintenance",
            "Status",
            rpc_pb2.StatusRequest(),
            idempotent=True,
            timeout=timeout,
            endpoint=endpoint,
        )
        return _convert.status(ep, resp)

    async def health(self, endpoint: str, *, timeout: float | None = None) -> float:
        """etcdctl 3.4 `endpoint health`: one linearizable Range of key "health"
        on `endpoint`. Returns seconds taken; raises ClientError when unhealthy
        (PermissionDenied counts as healthy, like etcdctl)."""
        start = time.monotonic()
        with contextlib.suppress(PermissionDeniedError):
            await self.transport.unary(
                "KV",
                "Range",
                range_request(b"health"),
                idempotent=True,
                timeout=timeout,
                endpoint=endpoint,
            )
        return time.monotonic() - start

    async def hash_kv(
        self, endpoint: str | None = None, revision: int = 0, *, timeout: float | None = None
    ) -> HashKVResult:
        ep, resp = await self.transport.unary(
            "Maintenance",
            "HashKV",
            rpc_pb2.HashKVRequest(revision=revision),
            idempotent=True,
            timeout=timeout,
            endpoint=endpoint,
        )
        return _convert.hash_kv(ep, resp)

    async def alarms(self, *, timeout: float | None = None) -> list[Alarm]:
        req = rpc_pb2.AlarmRequest(action=0, memberID=0, alarm=0)  # GET, all members
        return _convert.alarms(
            await self._call("Maintenance", "Alarm", req, idempotent=True, timeout=timeout)
        )

    async def disarm_alarms(self, *, timeout: float | None = None) -> list[Alarm]:
        """Deactivate every active alarm (etcdctl: GET, then DEACTIVATE each).
        Returns the alarms that were disarmed."""
        disarmed: list[Alarm] = []
        for alarm in await self.alarms(timeout=timeout):
            req = rpc_pb2.AlarmRequest(
                action=2,
                memberID=alarm.member_id,
                alarm={"NOSPACE": 1, "CORRUPT": 2}.get(alarm.alarm, 0),
            )
            resp = await self._call("Maintenance", "Alarm", req, idempotent=False, timeout=timeout)
            disarmed.extend(_convert.alarms(resp))
        return disarmed

    async def defragment(self, endpoint: str | None = None, *, timeout: float | None = None) -> str:
        """Defragment the member at `endpoint` (member-local). Returns the endpoint."""
        ep, _ = await self.transport.unary(
            "Maintenance",
            "Defragment",
            rpc_pb2.DefragmentRequest(),
            idempotent=False,
            timeout=timeout if timeout is not None else 60.0,
            endpoint=endpoint,
        )
        return ep

    async def move_leader(self, target_id: int, *, timeout: float | None = None) -> int:
        """Transfer leadership to member `target_id`; returns the previous
        leader's ID. Finds the leader through Status on each endpoint."""
        return (await self.transfer_leadership(target_id, timeout=timeout)).previous_leader

    async def transfer_leadership(
        self, target_id: int, *, timeout: float | None = None
    ) -> MoveLeaderResult:
        """`move_leader` with the whole answer (the leader's response header)."""
        leader_ep, leader_id = None, 0
        for ep in self.endpoints:
            try:
                st = await self.status(ep, timeout=timeout)
            except ClientError:
                continue
            leader_id = st.leader
            if st.is_leader:
                leader_ep = ep
                break
        if leader_ep is None:
            raise NoLeaderError("no leader endpoint among " + ",".join(self.endpoints))
        _ep, resp = await self.transport.unary(
            "Maintenance",
            "MoveLeader",
            rpc_pb2.MoveLeaderRequest(targetID=target_id),
            idempotent=False,
            timeout=timeout,
            endpoint=leader_ep,
        )
        return MoveLeaderResult(_convert.header(resp.header), leader_id, target_id)

    async def snapshot(
        self,
        out: BinaryIO,
        *,
        endpoint: str | None = None,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
    ) -> int:
        """Stream a backend snapshot into the binary file `out`; returns bytes
        written. `progress(received, remaining)` is called after each chunk."""
        ep = endpoint or await self.transport.connect()
        metadata = await self.transport.call_metadata()
        call = self.transport.stub(ep, "Maintenance").Snapshot(
            rpc_pb2.SnapshotRequest(), timeout=timeout, metadata=metadata
        )
        received = 0
        try:
            async for chunk in call:
                out.write(chunk.blob)
                received += len(chunk.blob)
                if progress is not None:
                    progress(received, chunk.remaining_bytes)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return received

    async def snapshot_save(self, path: str | os.PathLike[str], **kwargs: Any) -> int:
        """Write a snapshot to `path` atomically (`path.part`, fsync, rename)."""
        part = f"{os.fspath(path)}.part"
        with open(part, "wb") as f:
            n = await self.snapshot(f, **kwargs)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
        return n


def _any_https(endpoints: str | Sequence[str] | None) -> bool:
    if endpoints is None:
        return False
    items = endpoints.split(",") if isinstance(endpoints, str) else endpoints
    return any(ep.strip().startswith("https://") for ep in items)
