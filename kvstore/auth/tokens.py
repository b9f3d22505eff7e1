"""Token providers: `simple` and `jwt`, selected by etcd's --auth-token syntax.

Owns: issuing a token for an authenticated user and resolving a token back to
an AuthInfo (user, auth revision) with no bcrypt and no Raft round trip;
parsing `--auth-token simple` / `--auth-token jwt,pub-key=...,priv-key=...,
sign-method=...[,ttl=...]` (etcd 3.4's option names).
Never: touches the replicated state (the store's revision is read through a
callable), imports grpc.

simple: a random 16-letter token plus "." and a per-member counter (etcd's
shape), held in this member's memory with a TTL (--auth-token-ttl, 300 s)
that every successful use renews, as etcd's simpleTokenTTLKeeper does. A
user's tokens die when the user is deleted or its password changes
(`invalidate_user`, wired to AuthStore.on_user_invalidated), and all of them
when auth is disabled.
What kvstore does better than etcd 3.4 here: Authenticate needs no Raft round
trip (etcd proposes every Authenticate), so tokens are issued during an
election and a leader change does not touch them at all; they are, as in etcd,
per-member memory: a client that fails over to another member or talks to a
restarted one gets `invalid auth token` and re-authenticates (clientv3 and
kvstore.client do that transparently).

jwt: signed with the key files given by the flag (RS*, PS*, ES* with a PEM key
pair, HS* with the priv-key file's bytes as the secret; pub-key alone =
verify-only member); claims "username", "revision", "exp" as etcd. Valid on
every member and across restarts; the revision claim is the auth revision at
issue, so any later auth change makes the token's requests fail with
AuthOldRevision and the client re-authenticates (etcd's behaviour).
"""

from __future__ import annotations

import secrets
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import jwt as pyjwt

from kvstore.auth import errors
from kvstore.auth.checker import AuthInfo

DEFAULT_TOKEN_TTL_S = 300
DEFAULT_JWT_TTL_S = 300  # etcd: ttl=5m
_LETTERS = string.ascii_letters
_SIMPLE_TOKEN_LEN = 16


class TokenProvider(Protocol):
    def assign(self, username: str, revision: int) -> str:
        """A new token for `username`, authenticated at auth `revision`."""
        ...

    def info(self, token: str) -> AuthInfo | None:
        """Who the token is (None: invalid or expired). Cheap: no bcrypt, no Raft."""
        ...

    def invalidate_user(self, username: str) -> None: ...

    def disable(self) -> None:
        """Auth was disabled: forget every token."""
        ...


@dataclass(slots=True)
class _Simple:
    username: str
    expires_at: float


class SimpleTokenProvider:
    """Per-member random tokens with a renewing TTL. One event loop only."""

    def __init__(
        self,
        revision: Callable[[], int],
        ttl_s: float = DEFAULT_TOKEN_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_s <= 0:
            raise errors.InvalidAuthOpts("--auth-token-ttl must be positive")
        self._revision = revision
        self.ttl_s = ttl_s
        self._clock = clock
        self._tokens: dict[str, _Simple] = {}
        self._counter = 0
        self._next_sweep = clock() + ttl_s

    def assign(self, username: str, revision: int) -> str:
        self._sweep()
        self._counter += 1
        rand = "".join(secrets.choice(_LETTERS) for _ in range(_SIMPLE_TOKEN_LEN))
        token = f"{rand}.{self._counter}"
        self._tokens[token] = _Simple(username, self._clock() + self.ttl_s)
        return token

    def info(self, token: str) -> AuthInfo | None:
        entry = self._tokens.get(token)
        if entry is None:
            return None
        now = self._clock()
        if now >= entry.expires_at:
            del self._tokens[token]
            return None
        entry.expires_at = now + self.ttl_s
        return AuthInfo(entry.username, self._revision())

    def invalidate_user(self, username: str) -> None:
        for token in [t for t, e in self._tokens.items() if e.username == username]:
            del self._tokens[token]

    def disable(self) -> None:
        self._tokens.clear()

    def __len__(self) -> int:
        return len(self._tokens)

    def _sweep(self) -> None:
        """Drop expired tokens, at most once per TTL (amortised in assign)."""
        now = self._clock()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self.ttl_s
        for token in [t for t, e in self._tokens.items() if now >= e.expires_at]:
            del self._tokens[token]


_ALGS = {f"{fam}{bits}" for fam in ("RS", "PS", "ES", "HS") for bits in ("256", "384", "512")}


class JwtTokenProvider:
    """Stateless signed tokens (see module doc)."""

    def __init__(
        self,
        sign_method: str,
        priv_key: bytes | None,
        pub_key: bytes | None,
        ttl_s: float = DEFAULT_JWT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if sign_method not in _ALGS:
            raise errors.InvalidAuthMethod(f"unsupported JWT sign-method {sign_method!r}")
        self.sign_method = sign_method
        self.ttl_s = ttl_s
        self._clock = clock
        if sign_method.startswith("HS"):
            if not priv_key:
                raise errors.MissingKey("sign-method HS* needs priv-key (the shared secret)")
            self._sign_key: object | None = priv_key
            self._verify_key: object = priv_key
        else:
            if not pub_key and not priv_key:
                raise errors.MissingKey("JWT needs pub-key and/or priv-key")
            from cryptography.hazmat.primitives import serialization

            try:
                self._sign_key = (
                    serialization.load_pem_private_key(priv_key, password=None)
                    if priv_key
                    else None
                )
                pub = (
                    serialization.load_pem_public_key(pub_key)
                    if pub_key
                    else self._sign_key.public_key()  # type: ignore[union-attr]
                )
            except (ValueError, TypeError) as exc:
                raise errors.InvalidAuthOpts(f"cannot load JWT key: {exc}") from exc
            self._verify_key = pub
        if self._sign_key is not None:
            # etcd refuses a pair whose halves do not match (ErrKeyMismatch).
            probe = pyjwt.encode({"probe": 1}, self._sign_key, algorithm=sign_method)  # type: ignore[arg-type]
            try:
                pyjwt.decode(probe, self._verify_key, algorithms=[sign_method])  # type: ignore[arg-type]
            except pyjwt.PyJWTError as exc:
                raise errors.KeyMismatch() from exc

    def assign(self, username: str, revision: int) -> str:
        if self._sign_key is None:
            raise errors.VerifyOnly()
        claims = {
            "username": username,
            "revision": revision,
            "exp": int(self._clock() + self.ttl_s),
        }
        return pyjwt.encode(claims, self._sign_key, algorithm=self.sign_method)  # type: ignore[arg-type]

    def info(self, token: str) -> AuthInfo | None:
        try:
            claims = pyjwt.decode(
                token,
                self._verify_key,  # type: ignore[arg-type]
                algorithms=[self.sign_method],
                options={"verify_exp": False, "require": ["username", "revision"]},
            )
        except pyjwt.PyJWTError:
            return None
        exp = claims.get("exp")
        if isinstance(exp, int | float) and self._clock() >= exp:
            return None
        username, revision = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(revision, int):
            return None
        return AuthInfo(username, revision)

    def invalidate_user(self, username: str) -> None:
        """Stateless tokens cannot be recalled (etcd alike); the revision claim
        makes them stale at the next auth change anyway."""

    def disable(self) -> None:
        """Nothing to forget."""


def _parse_duration_s(text: str) -> float:
    """Go-style duration ("5m", "300s", "1h30m", "1.5s") -> seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    total, num, i = 0.0, "", 0
    if not text:
        raise ValueError("empty duration")
    while i < len(text):
        c = text[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else c
        if unit not in units or not num:
            raise ValueError(f"bad duration {text!r}")
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    if num:
        raise ValueError(f"bad duration {text!r} (missing unit)")
    return total


def parse_auth_token(
    spec: str,
    revision: Callable[[], int],
    ttl_s: float = DEFAULT_TOKEN_TTL_S,
    read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes(),
) -> TokenProvider:
    """Build the provider named by `--auth-token` (`simple` or `jwt,opt=value,...`).

    Raises InvalidAuthOpts (unknown type / option, bad ttl), MissingKey,
    InvalidAuthMethod, KeyMismatch, with a one-line detail for the operator."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise errors.InvalidAuthOpts("--auth-token is empty")
    kind, opts = parts[0], parts[1:]
    if kind == "simple":
        if opts:
            raise errors.InvalidAuthOpts("--auth-token simple takes no options")
        return SimpleTokenProvider(revision, ttl_s)
    if kind != "jwt":
        raise errors.InvalidAuthOpts(f"unknown --auth-token type {kind!r} (simple or jwt)")
    values: dict[str, str] = {}
    for opt in opts:
        name, sep, value = opt.partition("=")
        if not sep or name not in ("pub-key", "priv-key", "sign-method", "ttl"):
            raise errors.InvalidAuthOpts(f"unknown --auth-token jwt option {opt!r}")
        values[name] = value
    if "sign-method" not in values:
        raise errors.InvalidAuthOpts("--auth-token jwt needs sign-method=...")
    jwt_ttl: float = DEFAULT_JWT_TTL_S
    if "ttl" in values:
        try:
            jwt_ttl = _parse_duration_s(values["ttl"])
        except ValueError as exc:
            raise errors.InvalidAuthOpts(f"--auth-token jwt ttl: {exc}") from exc

    def load(name: str) -> bytes | None:
        path = values.get(name)
        if not path:
            return None
        try:
            return read_file(path)
        except OSError as exc:
            raise errors.MissingKey(f"cannot read {name} {path}: {exc.strerror}") from exc

    return JwtTokenProvider(values["sign-method"], load("priv-key"), load("pub-key"), jwt_ttl)
