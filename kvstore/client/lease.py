"""Leases kept alive in the background, and service registration on top.

Owns: `KeepAlive` (one background task renewing one lease over a
LeaseKeepAlive stream every TTL/3, failing over between endpoints), `Lease`
(grant on enter, keep alive, revoke on exit) and `ServiceRegistration`
(a key under a lease that is re-created after the lease is lost).

Invariants:
  * the lease is declared lost (`expired` set) only when the server says so
    (KeepAlive TTL 0 — ETCD_API §1.3) or when no renewal succeeded before the
    last known expiry deadline; it is never "revived" afterwards;
  * every background task is owned, cancelled and awaited by its owner's
    `aclose()` / `__aexit__`.

Must never: block the event loop, or revoke a lease it did not grant.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import grpc

from kvstore.client._transport import REQUIRE_LEADER, stream_write
from kvstore.client.auth import auth_expired
from kvstore.client.errors import (
    ClientClosedError,
    ClientError,
    LeaseNotFoundError,
    from_rpc_error,
)
from kvstore.client.ops import KeyLike, to_bytes
from kvstore.pb import rpc_pb2

if TYPE_CHECKING:
    from kvstore.client.aio import AsyncClient

log = logging.getLogger(__name__)


class KeepAlive:
    """Renews `lease_id` every TTL/3 until stopped or the lease is lost."""

    def __init__(self, client: AsyncClient, lease_id: int, ttl: int) -> None:
        self._client = client
        self.lease_id = lease_id
        self.ttl = ttl
        self.expired = asyncio.Event()
        self.renewals = 0
        self._deadline = time.monotonic() + ttl
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        transport = self._client.transport
        exclude = None
        while time.monotonic() < self._deadline:
            ep = None
            try:
                ep = await transport.connect(deadline=self._deadline, exclude=exclude)
                if await self._stream(ep):
                    return  # server reported the lease gone
            except ClientClosedError:
                return  # the owning client was closed: stop quietly
            except Exception as exc:  # noqa: BLE001 - any failure: try another member
                err = from_rpc_error(exc) if isinstance(exc, grpc.aio.AioRpcError) else exc
                log.debug("lease %x keepalive via %s failed: %r", self.lease_id, ep, err)
                if isinstance(err, ClientError) and auth_expired(err):
                    # The token expired (or the member restarted): new token, same member.
                    with contextlib.suppress(ClientError):
                        await transport.refresh_token(await transport.call_metadata())
                else:
                    if ep is not None:
                        transport.endpoint_failed(ep)
                    exclude = ep
            # Brief pause before trying the next endpoint (bounded by expiry).
            await asyncio.sleep(min(0.2, max(0.0, self._deadline - time.monotonic())))
        self.expired.set()

    async def _stream(self, ep: str) -> bool:
        """Keep the lease alive over one stream; True when the lease is gone.

        Raises a retryable ClientError when the stream breaks or a renewal
        gets no answer in time, so `_run` fails over while the lease lives."""
        transport = self._client.transport
        stub = transport.stub(ep, "Lease")
        metadata = await transport.call_metadata(REQUIRE_LEADER)
        call = stub.LeaseKeepAlive(metadata=metadata)
        try:
            while True:
                await stream_write(call, rpc_pb2.LeaseKeepAliveRequest(ID=self.lease_id))
                remaining = self._deadline - time.monotonic()
                # Leave time to try another member before the lease runs out.
                timeout = max(min(remaining / 2, max(self.ttl / 3.0, 1.0)), 0.05)
                try:
                    resp = await asyncio.wait_for(call.read(), timeout)
                except TimeoutError:
                    raise ClientError(
                        "keepalive response timed out", grpc.StatusCode.UNAVAILABLE
                    ) from None
                if resp is grpc.aio.EOF:
                    raise ClientError("keepalive stream ended", grpc.StatusCode.UNAVAILABLE)
                if resp.TTL <= 0:
                    self.expired.set()
                    return True
                self.ttl = resp.TTL
                self.renewals += 1
                self._deadline = time.monotonic() + resp.TTL
                await asyncio.sleep(max(resp.TTL / 3.0, 0.2))  # clientv3 cadence: TTL/3
        finally:
            call.cancel()


class Lease:
    """A lease granted on enter, kept alive in the background, revoked on exit.

    Example::

        async with client.lease(ttl=10) as lease:
            await client.put(b"/services/api/1", b"10.0.0.1:80", lease=lease)  # or lease.id
            ...  # key lives while this block runs (and the process is alive)

    `expired` (asyncio.Event) is set if the lease was lost despite keepalives.
    """

    def __init__(self, client: AsyncClient, ttl: int, lease_id: int = 0) -> None:
        self._client = client
        self.requested_ttl = ttl
        self.requested_id = lease_id
        self.id = 0
        self.ttl = 0
        self._keeper: KeepAlive | None = None

    @property
    def expired(self) -> asyncio.Event:
        if self._keeper is None:
            raise RuntimeError("lease not granted yet")
        return self._keeper.expired

    @property
    def renewals(self) -> int:
        return self._keeper.renewals if self._keeper else 0

    async def grant(self) -> Lease:
        granted = await self._client.lease_grant(self.requested_ttl, lease_id=self.requested_id)
        self.id, self.ttl = granted.id, granted.ttl
        self._keeper = KeepAlive(self._client, self.id, self.ttl)
        self._keeper.start()
        return self

    async def time_to_live(self, keys: bool = False):
        return await self._client.lease_time_to_live(self.id, keys=keys)

    async def revoke(self) -> None:
        """Stop the keepalive and revoke (an already expired lease is fine)."""
        if self._keeper is not None:
            await self._keeper.stop()
        if self.id:
            with contextlib.suppress(LeaseNotFoundError):
                await self._client.lease_revoke(self.id)

    async def __aenter__(self) -> Lease:
        return await self.grant()

    async def __aexit__(self, *exc: object) -> None:
        # Never mask the block's own exception: an unrevoked lease still
        # expires after its TTL.
        try:
            await self.revoke()
        except ClientError as err:
            log.warning("could not revoke lease %x on exit: %s", self.id, err)


class ServiceRegistration:
    """Keep `key = value` present under a lease; re-register after loss.

    Example::

        async with client.register_service(b"/services/api/node1", b"10.0.0.1:80", ttl=5):
            await serve_forever()

    When the lease is lost (network partition longer than the TTL, cluster
    restart ...) a new lease is granted and the key written again;
    `registrations` counts how often that happened (1 after entering).
    """

    def __init__(self, client: AsyncClient, key: KeyLike, value: KeyLike, ttl: int) -> None:
        self._client = client
        self.key = to_bytes(key)
        self.value = to_bytes(value)
        self.ttl = ttl
        self.lease: Lease | None = None
        self.registrations = 0
        self._task: asyncio.Task[None] | None = None

    async def _register(self) -> None:
        lease = Lease(self._client, self.ttl)
        await lease.grant()
        try:
            await self._client.put(self.key, self.value, lease=lease.id)
        except BaseException:
            await lease.revoke()
            raise
        self.lease = lease
        self.registrations += 1

    async def _maintain(self) -> None:
        while True:
            assert self.lease is not None
            await self.lease.expired.wait()
            log.info("registration %r lost its lease; registering again", self.key)
            while True:
                try:
                    await self._register()
                    break
                except ClientError as err:
                    log.warning("re-registering %r failed: %s", self.key, err)
                    await asyncio.sleep(min(1.0, self.ttl / 3))

    async def __aenter__(self) -> ServiceRegistration:
        await self._register()
        self._task = asyncio.get_running_loop().create_task(self._maintain())
        return self

    async def __aexit__(self, *exc: object) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.lease is not None:
            try:
                await self.lease.revoke()  # deletes the key with the lease
            except ClientError as err:
                log.warning("could not deregister %r (expires after TTL): %s", self.key, err)
