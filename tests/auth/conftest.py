"""Auth component harness: an AuthStore applied through a real MVCC apply batch
on RocksDB under tmp_path, reopened to prove what is on disk."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.auth import AuthStore
from kvstore.auth.hasher import hash_password
from kvstore.lease import Lessor
from kvstore.mvcc import MvccStore
from kvstore.pb import auth_pb2, rpc_pb2
from kvstore.storage.backend import Backend

# One real bcrypt hash at cost 4 for all tests (cost 10 is ~60 ms a hash).
FAST_HASH = hash_password("pw", cost=4)


class Member:
    """One member's auth state on its own RocksDB."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.open()

    def open(self) -> None:
        self.backend = Backend.open(self.path)
        self.mvcc = MvccStore(self.backend, Lessor())
        self.auth = AuthStore()
        self.auth.load(self.backend)

    def reopen(self) -> None:
        self.backend.close()
        self.open()

    def apply(self, method: str, req: Any) -> Any:
        """Apply one request in one batch (as the applier does); returns the
        response or the AuthError raised."""
        batch = self.mvcc.begin_batch()
        try:
            out = getattr(self.auth, method)(batch, req)
        except Exception as exc:  # noqa: BLE001 - returned for assertions
            out = exc
        batch.commit()
        return out

    # short-hands
    def user_add(self, name: str, no_password: bool = False) -> Any:
        req = rpc_pb2.AuthUserAddRequest(name=name, hashedPassword=FAST_HASH)
        if no_password:
            req.options.no_password = True
        return self.apply("apply_user_add", req)

    def role_add(self, name: str) -> Any:
        return self.apply("apply_role_add", rpc_pb2.AuthRoleAddRequest(name=name))

    def grant_role(self, user: str, role: str) -> Any:
        return self.apply(
            "apply_user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role)
        )

    def grant(self, role: str, perm: int, key: bytes, end: bytes = b"") -> Any:
        return self.apply(
            "apply_role_grant_permission",
            rpc_pb2.AuthRoleGrantPermissionRequest(
                name=role, perm=auth_pb2.Permission(permType=perm, key=key, range_end=end)
            ),
        )

    def enable(self) -> Any:
        return self.apply("apply_auth_enable", rpc_pb2.AuthEnableRequest())

    def setup_root(self) -> None:
        self.user_add("root")
        self.grant_role("root", "root")


@pytest.fixture
def member(tmp_path: Path) -> Iterator[Member]:
    m = Member(tmp_path / "db")
    yield m
    m.backend.close()
