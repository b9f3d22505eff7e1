"""PasswordHasher: bcrypt work off the event loop, with bounded concurrency.

Owns: hashing a password before it is proposed (UserAdd, UserChangePassword:
once, on the proposing member; apply only stores the hash) and checking a
password for Authenticate; a bound on concurrent bcrypt work and on callers
waiting for it, so a brute-force loop against Authenticate uses at most
`max_concurrency` worker threads and is refused (TooManyRequests) beyond
`max_waiting` queued callers instead of starving the node's other traffic;
and a small cache of recent SUCCESSFUL checks (keyed by an HMAC with a
per-process random key of user, password and stored hash), so a client that
re-authenticates with the right password costs no bcrypt. Failed checks are
never cached: guessing always pays full bcrypt.
Never: runs bcrypt on the event loop thread, or in apply.

bcrypt: cost 10 (etcd's --bcrypt-cost default, bcrypt.DefaultCost), `$2a$`
prefix as Go's x/crypto/bcrypt writes it (either verifies both ways).
Passwords longer than 72 bytes are cut to 72, as bcrypt (and etcd 3.4's Go
bcrypt) always did, so results never depend on the bcrypt package version.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

import bcrypt

from kvstore.auth import errors

_T = TypeVar("_T")

BCRYPT_COST = 10
MAX_PASSWORD_BYTES = 72
DEFAULT_MAX_CONCURRENCY = max(1, (os.cpu_count() or 2) - 1)
DEFAULT_MAX_WAITING = 256
DEFAULT_CACHE_ENTRIES = 1024


def _pw(password: str) -> bytes:
    return password.encode()[:MAX_PASSWORD_BYTES]


def hash_password(password: str, cost: int = BCRYPT_COST) -> str:
    """The bcrypt hash (blocking; prefer `PasswordHasher.hash`)."""
    return bcrypt.hashpw(_pw(password), bcrypt.gensalt(rounds=cost, prefix=b"2a")).decode()


def check_password(password: str, hashed: bytes) -> bool:
    """Blocking bcrypt comparison; False for a malformed hash."""
    try:
        return bcrypt.checkpw(_pw(password), hashed)
    except ValueError:
        return False


class PasswordHasher:
    """Async facade; create and use on the node's event loop."""

    def __init__(
        self,
        cost: int = BCRYPT_COST,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_waiting: int = DEFAULT_MAX_WAITING,
        cache_entries: int = DEFAULT_CACHE_ENTRIES,
    ) -> None:
        if max_concurrency < 1 or max_waiting < 0:
            raise ValueError("max_concurrency must be >= 1 and max_waiting >= 0")
        self.cost = cost
        self._slots = asyncio.Semaphore(max_concurrency)
        self._max_pending = max_concurrency + max_waiting
        self._pending = 0
        self._cache_key = os.urandom(32)
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_entries = cache_entries
        # Figures for tests and metrics.
        self.bcrypt_runs = 0
        self.refused = 0
        self.max_in_flight = 0
        self._in_flight = 0

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._pending >= self._max_pending:
            self.refused += 1
            raise errors.TooManyRequests()
        self._pending += 1
        try:
            async with self._slots:
                self._in_flight += 1
                self.max_in_flight = max(self.max_in_flight, self._in_flight)
                self.bcrypt_runs += 1
                work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    # The thread runs on: hold the slot until it ends, so callers
                    # that give up (short deadlines) cannot push bcrypt past the bound.
                    await asyncio.wait([work])
                    raise
                finally:
                    self._in_flight -= 1
        finally:
            self._pending -= 1

    async def hash(self, password: str) -> str:
        """bcrypt hash of `password` for a proposal. Raises TooManyRequests."""
        return await self._run(hash_password, password, self.cost)

    async def check(self, name: str, password: str, hashed: bytes) -> bool:
        """Does `password` match `hashed` (user `name`)? Raises TooManyRequests."""
        if not hashed:
            return False
        tag = hmac.new(
            self._cache_key,
            b"\0".join((name.encode(), _pw(password), hashed)),
            hashlib.sha256,
        ).digest()
        if tag in self._cache:
            self._cache.move_to_end(tag)
            return True
        ok = await self._run(check_password, password, hashed)
        if ok and self._cache_entries > 0:
            self._cache[tag] = None
            if len(self._cache) > self._cache_entries:
                self._cache.popitem(last=False)
        return ok
