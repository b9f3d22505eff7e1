"""Distributed lock and leader election (client-side recipes, like etcd's
`clientv3/concurrency` Mutex and Election, and so interoperable with
`etcdctl lock` / `etcdctl elect`).

Owns: the key layout `<name>/<lease id in hex>` and the wait-for-predecessor
protocol: a contender writes its key under its session lease, and owns the
lock/leadership once no key under `<name>/` has a lower create revision. It
waits by watching the deletion of the nearest older key (no thundering herd).

Fencing: the owner's key create revision (`LockKey.revision`,
`LeaderKey.revision`) increases with every new owner. A lock alone cannot
guarantee mutual exclusion (a paused owner may lose its lease — Jepsen 2020);
guard protected writes with `Compare.create(lock.key) == lock.revision` or
store the token with the resource and reject smaller ones.

Must never: leave its key behind on failure or cancellation of acquire
(it deletes it, and the session lease bounds the damage if it cannot).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from kvstore.client.errors import (
    ClientError,
    ElectionNoLeaderError,
    ElectionNotLeaderError,
    LeaseExpiredError,
)
from kvstore.client.lease import Lease
from kvstore.client.ops import Compare, KeyLike, Op, to_bytes
from kvstore.client.types import EventType, KeyValue, LeaderKey, LockKey

if TYPE_CHECKING:
    from kvstore.client.aio import AsyncClient

DEFAULT_SESSION_TTL = 60  # etcdctl lock/elect default session TTL


async def _wait_deletes(client: AsyncClient, prefix: bytes, max_create_revision: int) -> None:
    """Return once every key under `prefix` created at or before
    `max_create_revision` is gone (etcd concurrency.waitDeletes)."""
    while True:
        r = await client.get(
            prefix,
            prefix=True,
            sort_target="create",
            sort_order="descend",
            limit=1,
            max_create_revision=max_create_revision,
        )
        if not r.kvs:
            return
        await _wait_delete(client, r.kvs[0].key, r.header.revision)


async def _wait_delete(client: AsyncClient, key: bytes, revision: int) -> None:
    async with client.watch(key, start_revision=revision) as watcher:
        async for event in watcher:
            if event.type is EventType.DELETE:
                return


class _Session:
    """A kept-alive lease shared by one lock or election participant."""

    def __init__(self, client: AsyncClient, ttl: int) -> None:
        self.lease = Lease(client, ttl)

    async def open(self) -> int:
        if not self.lease.id:
            await self.lease.grant()
        return self.lease.id

    def check_alive(self) -> None:
        if self.lease.id and self.lease.expired.is_set():
            raise LeaseExpiredError("session lease expired")

    async def close(self) -> None:
        await self.lease.revoke()


class Lock:
    """A named distributed mutex.

    Example::

        async with client.lock("jobs/nightly") as held:
            await do_work(fencing_token=held.revision)

    `acquire()` blocks until the lock is held and returns a LockKey;
    `release()` deletes the ownership key and revokes the session lease.
    """

    def __init__(self, client: AsyncClient, name: KeyLike, ttl: int = DEFAULT_SESSION_TTL):
        self._client = client
        self.name = to_bytes(name)
        self._prefix = self.name + b"/"
        self._session = _Session(client, ttl)
        self.held: LockKey | None = None

    @property
    def lease(self) -> Lease:
        return self._session.lease

    async def acquire(self) -> LockKey:
        lease_id = await self._session.open()
        key = self._prefix + f"{lease_id:x}".encode()
        owner = Op.get(
            self._prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1
        )
        r = await (
            self._client.txn()
            .if_(Compare.create(key) == 0)
            .then(Op.put(key, b"", lease=lease_id), owner)
            .else_(Op.get(key), owner)
            .commit()
        )
        my_rev = r.header.revision if r.succeeded else r.responses[0].kvs[0].create_revision
        try:
            first = r.responses[1].kv
            if first is not None and first.create_revision != my_rev:
                await _wait_deletes(self._client, self._prefix, my_rev - 1)
                self._session.check_alive()
                mine = await self._client.get(key)
                if mine.kv is None:
                    raise LeaseExpiredError("lock key vanished: session lease expired")
        except BaseException:
            with contextlib.suppress(ClientError):
                await self._client.delete(key)
            raise
        self.held = LockKey(self.name, key, my_rev, lease_id)
        return self.held

    async def release(self) -> None:
        held, self.held = self.held, None
        try:
            if held is not None:
                await self._client.delete(held.key)
        finally:
            await self._session.close()

    async def __aenter__(self) -> LockKey:
        return await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


class Election:
    """Leader election among participants sharing `name`.

    Example::

        election = client.election("service/leader")
        leader = await election.campaign(b"node-1")   # blocks until elected
        await election.proclaim(b"node-1 v2")          # update the value
        await election.resign()

    Observers: `await election.leader()` and `async for kv in election.observe()`.
    """

    def __init__(self, client: AsyncClient, name: KeyLike, ttl: int = DEFAULT_SESSION_TTL):
        self._client = client
        self.name = to_bytes(name)
        self._prefix = self.name + b"/"
        self._session = _Session(client, ttl)
        self.leader_key: LeaderKey | None = None

    @property
    def lease(self) -> Lease:
        return self._session.lease

    async def campaign(self, value: KeyLike) -> LeaderKey:
        val = to_bytes(value)
        lease_id = await self._session.open()
        key = self._prefix + f"{lease_id:x}".encode()
        r = await (
            self._client.txn()
            .if_(Compare.create(key) == 0)
            .then(Op.put(key, val, lease=lease_id))
            .else_(Op.get(key))
            .commit()
        )
        rev = r.header.revision
        self.leader_key = LeaderKey(self.name, key, rev, lease_id, val)
        try:
            if not r.succeeded:
                kv = r.responses[0].kvs[0]
                self.leader_key = LeaderKey(self.name, key, kv.create_revision, lease_id, val)
                if kv.value != val:
                    await self.proclaim(val)
            await _wait_deletes(self._client, self._prefix, self.leader_key.revision - 1)
            self._session.check_alive()
        except BaseException:
            with contextlib.suppress(ClientError):
                await self.resign()
            raise
        return self.leader_key

    async def proclaim(self, value: KeyLike) -> None:
        """Change the leader's value without a new election."""
        lk = self._require_leader()
        val = to_bytes(value)
        r = await (
            self._client.txn()
            .if_(Compare.create(lk.key) == lk.revision)
            .then(Op.put(lk.key, val, ignore_lease=True))
            .commit()
        )
        if not r.succeeded:
            self.leader_key = None
            raise ElectionNotLeaderError("election: not leader")
        self.leader_key = LeaderKey(lk.name, lk.key, lk.revision, lk.lease, val)

    async def resign(self) -> None:
        """Give up leadership (or candidacy) and close the session."""
        lk, self.leader_key = self.leader_key, None
        try:
            if lk is not None:
                await (
                    self._client.txn()
                    .if_(Compare.create(lk.key) == lk.revision)
                    .then(Op.delete(lk.key))
                    .commit()
                )
        finally:
            await self._session.close()

    def _require_leader(self) -> LeaderKey:
        if self.leader_key is None:
            raise ElectionNotLeaderError("election: not leader")
        return self.leader_key

    async def leader(self) -> KeyValue:
        """The current leader's key/value; ElectionNoLeaderError if none."""
        r = await self._client.get(
            self._prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1
        )
        if r.kv is None:
            raise ElectionNoLeaderError("election: no leader")
        return r.kv

    async def observe(self) -> AsyncIterator[KeyValue]:
        """Yield the leader's KeyValue now (if any) and after every change."""
        last: KeyValue | None = None
        r = await self._client.get(
            self._prefix, prefix=True, sort_target="create", sort_order="ascend", limit=1
        )
        if r.kv is not None:
            last = r.kv
            yield last
        async with self._client.watch(
            self._prefix, prefix=True, start_revision=r.header.revision + 1
        ) as watcher:
            async for _event in watcher:
                try:
                    current = await self.leader()
                except ElectionNoLeaderError:
                    last = None
                    continue
                if current != last:
                    last = current
                    yield current
