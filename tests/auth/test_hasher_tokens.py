"""PasswordHasher (bounded bcrypt off the loop) and the token providers."""

from __future__ import annotations

import asyncio
import threading
import time

import bcrypt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kvstore.auth import errors
from kvstore.auth.hasher import BCRYPT_COST, PasswordHasher, check_password, hash_password
from kvstore.auth.tokens import (
    JwtTokenProvider,
    SimpleTokenProvider,
    _parse_duration_s,
    parse_auth_token,
)
from kvstore.testing.waiting import async_wait_until

# ------------------------------------------------------------------ hasher


def test_hash_is_go_compatible_bcrypt_at_etcd_cost() -> None:
    h = hash_password("pw")
    assert h.startswith(f"$2a${BCRYPT_COST:02d}$")
    assert check_password("pw", h.encode()) and not check_password("px", h.encode())
    # a hash written by Go ($2a$) or by another bcrypt ($2b$) verifies alike
    assert check_password("pw", bcrypt.hashpw(b"pw", bcrypt.gensalt(4, prefix=b"2b")))
    assert not check_password("pw", b"not a hash")


def test_long_passwords_cut_at_72_bytes() -> None:
    h = hash_password("x" * 80, cost=4)
    assert check_password("x" * 72, h.encode())


def test_hasher_runs_off_loop_bounded_and_refuses_overflow() -> None:
    asyncio.run(asyncio.wait_for(_bounded_scenario(), 20))


async def _bounded_scenario() -> None:
    hasher = PasswordHasher(cost=4, max_concurrency=2, max_waiting=3)
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    release = threading.Event()
    started = 0

    def slow_check(password: str, hashed: bytes) -> bool:
        nonlocal started
        threads.add(threading.get_ident())
        started += 1
        release.wait(5)
        return False

    import kvstore.auth.hasher as mod

    orig = mod.check_password
    mod.check_password = slow_check  # type: ignore[assignment]
    try:
        tasks = [asyncio.create_task(hasher.check("u", f"guess{i}", b"$2a$04$x")) for i in range(5)]
        await async_wait_until(lambda: started == 2, timeout=10, what="two bcrypt workers")
        await asyncio.sleep(0.05)  # a third would start now if the bound leaked
        assert started == 2  # two at once, three waiting
        with pytest.raises(errors.TooManyRequests):
            await hasher.check("u", "one too many", b"$2a$04$x")
        # the loop is free while bcrypt work is in flight
        t0 = time.monotonic()
        await asyncio.sleep(0)
        assert time.monotonic() - t0 < 0.5
        # a caller giving up does not free its slot while its thread still runs
        tasks[0].cancel()
        await asyncio.sleep(0.05)
        assert started == 2 and not tasks[0].done()
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert results[1:] == [False] * 4
    finally:
        mod.check_password = orig  # type: ignore[assignment]
    assert loop_thread not in threads
    assert hasher.max_in_flight == 2 and hasher.refused == 1


def test_only_successful_checks_are_cached() -> None:
    asyncio.run(asyncio.wait_for(_cache_scenario(), 20))


async def _cache_scenario() -> None:
    hasher = PasswordHasher(cost=4)
    h = (await hasher.hash("pw")).encode()
    assert await hasher.check("u", "pw", h)
    assert await hasher.check("u", "pw", h)
    assert hasher.bcrypt_runs == 2  # hash + first check; the second hit the cache
    for _ in range(2):
        assert not await hasher.check("u", "bad", h)
    assert hasher.bcrypt_runs == 4  # failures pay bcrypt every time
    other = hash_password("pw", cost=4).encode()  # the password was changed (same text)
    assert await hasher.check("u", "pw", other)
    assert hasher.bcrypt_runs == 5
    assert not await hasher.check("u", "pw", b"")  # no-password user


# ------------------------------------------------------------------ simple tokens


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_simple_token_shape_ttl_renewal_and_invalidation() -> None:
    clock = Clock()
    rev = [4]
    p = SimpleTokenProvider(lambda: rev[0], ttl_s=300, clock=clock)
    t1 = p.assign("alice", 4)
    rand, _, index = t1.partition(".")
    assert len(rand) == 16 and rand.isalpha() and index.isdigit()
    assert p.info(t1).username == "alice"
    rev[0] = 9
    assert p.info(t1).revision == 9  # the store's revision now (etcd alike)
    clock.now += 299
    assert p.info(t1) is not None  # each use renews the TTL
    clock.now += 299
    assert p.info(t1) is not None
    clock.now += 300
    assert p.info(t1) is None
    t2, t3 = p.assign("alice", 9), p.assign("bob", 9)
    assert t2 != t3
    p.invalidate_user("alice")
    assert p.info(t2) is None and p.info(t3) is not None
    p.disable()
    assert p.info(t3) is None and len(p) == 0
    assert p.info("garbage") is None


def test_simple_tokens_swept_without_use() -> None:
    clock = Clock()
    p = SimpleTokenProvider(lambda: 1, ttl_s=10, clock=clock)
    for _ in range(100):
        p.assign("u", 1)
    clock.now += 11
    p.assign("u", 1)
    assert len(p) == 1


# ------------------------------------------------------------------ jwt


def _pem_pair(kind: str) -> tuple[bytes, bytes]:
    key = (
        rsa.generate_private_key(65537, 2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


@pytest.mark.parametrize("method,kind", [("RS256", "rsa"), ("ES256", "ec"), ("PS384", "rsa")])
def test_jwt_sign_verify_expiry_and_verify_only(method: str, kind: str) -> None:
    clock = Clock()
    priv, pub = _pem_pair(kind)
    p = JwtTokenProvider(method, priv, pub, ttl_s=60, clock=clock)
    tok = p.assign("alice", 7)
    info = p.info(tok)
    assert (info.username, info.revision) == ("alice", 7)  # revision of issue
    verifier = JwtTokenProvider(method, None, pub, clock=clock)  # another member
    assert verifier.info(tok) == info
    with pytest.raises(errors.VerifyOnly):
        verifier.assign("x", 1)
    clock.now += 61
    assert p.info(tok) is None
    other_priv, _ = _pem_pair(kind)
    forged = JwtTokenProvider(method, other_priv, None, clock=clock).assign("root", 99)
    assert p.info(forged) is None
    assert p.info("not.a.jwt") is None


def test_jwt_key_mismatch_and_hmac() -> None:
    priv, _ = _pem_pair("rsa")
    _, other_pub = _pem_pair("rsa")
    with pytest.raises(errors.KeyMismatch):
        JwtTokenProvider("RS256", priv, other_pub)
    h = JwtTokenProvider("HS256", b"shared-secret-of-32-bytes-or-more!", None)
    assert h.info(h.assign("u", 2)).username == "u"
    with pytest.raises(errors.InvalidAuthMethod):
        JwtTokenProvider("none", priv, None)


def test_parse_auth_token_flag(tmp_path) -> None:
    priv, pub = _pem_pair("ec")
    (tmp_path / "k.pem").write_bytes(priv)
    (tmp_path / "k.pub").write_bytes(pub)
    assert isinstance(parse_auth_token("simple", lambda: 1, ttl_s=5), SimpleTokenProvider)
    p = parse_auth_token(
        f"jwt,pub-key={tmp_path}/k.pub,priv-key={tmp_path}/k.pem,sign-method=ES256,ttl=1m30s",
        lambda: 1,
    )
    assert isinstance(p, JwtTokenProvider) and p.ttl_s == 90
    bad = {
        "": errors.InvalidAuthOpts,
        "magic": errors.InvalidAuthOpts,
        "simple,ttl=5": errors.InvalidAuthOpts,
        "jwt,pub-key=x": errors.InvalidAuthOpts,  # no sign-method
        "jwt,sign-method=RS256,colour=red": errors.InvalidAuthOpts,
        f"jwt,sign-method=ES256,priv-key={tmp_path}/missing.pem": errors.MissingKey,
        "jwt,sign-method=RS256": errors.MissingKey,
        f"jwt,sign-method=ES256,priv-key={tmp_path}/k.pem,ttl=5": errors.InvalidAuthOpts,
    }
    for spec, exc in bad.items():
        with pytest.raises(exc):
            parse_auth_token(spec, lambda: 1)
    assert _parse_duration_s("5m") == 300 and _parse_duration_s("1.5s") == 1.5
    assert _parse_duration_s("250ms") == 0.25
