"""Auth through Raft on three in-process members: the caller stamped on each
proposal, the permission stage at apply against the auth revision (no
time-of-check / time-of-use gap), the proposer's AuthOldRevision retry, and
proposals made outside any RPC acting as root while auth is enabled."""

from __future__ import annotations

import asyncio
import contextvars
from pathlib import Path

import pytest
from node_harness import InProcessCluster, put, run

from kvstore.auth import errors as auth_errors
from kvstore.auth.caller import CALLER, bind_caller
from kvstore.auth.checker import AuthInfo
from kvstore.pb import auth_pb2, rpc_pb2
from kvstore.testing.waiting import async_wait_until

pytestmark = pytest.mark.integration


async def _setup(c: InProcessCluster, member: int) -> None:
    """root + alice (readwrite on /app/), auth enabled; proposed through
    `member` with no caller (auth is still off)."""
    kv = c.kv(member)
    opts = auth_pb2.UserAddOptions(no_password=True)
    for kind, req in [
        ("auth_user_add", rpc_pb2.AuthUserAddRequest(name="root", options=opts)),
        ("auth_user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")),
        ("auth_user_add", rpc_pb2.AuthUserAddRequest(name="alice", options=opts)),
        ("auth_role_add", rpc_pb2.AuthRoleAddRequest(name="app")),
        ("auth_role_grant_permission", rpc_pb2.AuthRoleGrantPermissionRequest(
            name="app", perm=auth_pb2.Permission(
                permType=auth_pb2.Permission.READWRITE, key=b"/app/", range_end=b"/app0"))),
        ("auth_user_grant_role", rpc_pb2.AuthUserGrantRoleRequest(user="alice", role="app")),
        ("auth_enable", rpc_pb2.AuthEnableRequest()),
    ]:  # fmt: skip
        await kv.propose(kind, req)


def _store(c: InProcessCluster, i: int):  # noqa: ANN202
    return c.kv(i).auth.store


def test_permissions_checked_at_apply_on_every_member(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        follower = (leader + 1) % 3
        await _setup(c, follower)
        kv, store = c.kv(follower), _store(c, follower)
        assert store.enabled

        # No credentials while enabled: refused at apply.
        bind_caller(lambda: AuthInfo())
        with pytest.raises(auth_errors.UserEmpty):
            await kv.put(put(b"/app/x", b"1"))

        bind_caller(lambda: AuthInfo("alice", store.revision))
        assert (await kv.put(put(b"/app/x", b"1"))).header.revision > 0
        with pytest.raises(auth_errors.PermissionDenied):
            await kv.put(put(b"/secret", b"1"))

        # A request admitted at revision r applies after a revocation moved
        # the store to r+1: refused (AuthOldRevision for a credential that
        # cannot move, like a JWT).
        admitted = store.revision
        bind_caller(lambda: AuthInfo("root", store.revision))
        await kv.propose("auth_role_revoke_permission", rpc_pb2.AuthRoleRevokePermissionRequest(
            role="app", key=b"/app/", range_end=b"/app0"))  # fmt: skip
        assert store.revision == admitted + 1
        bind_caller(lambda: AuthInfo("alice", admitted))
        with pytest.raises(auth_errors.AuthOldRevision):
            await kv.put(put(b"/app/y", b"1"))

        # A simple token resolves to the current revision: the proposer
        # proposes again and the revoked permission is honoured.
        calls: list[int] = []

        def moving() -> AuthInfo:
            calls.append(1)
            return AuthInfo("alice", admitted if len(calls) == 1 else store.revision)

        bind_caller(moving)
        with pytest.raises(auth_errors.PermissionDenied):
            await kv.put(put(b"/app/y", b"1"))
        assert len(calls) == 2

        # Every member applied the same auth state.
        want = store.dump()
        await async_wait_until(
            lambda: all(_store(c, i).dump() == want for i in range(3)), timeout=10,
            what="same auth state on every member",
        )  # fmt: skip

        # Lease expiry acts as root (etcd's auth.WithRoot): a lease holding a
        # key nobody else may write is still revoked.
        bind_caller(lambda: AuthInfo("root", store.revision))
        lease = await c.kv(leader).leases.grant(rpc_pb2.LeaseGrantRequest(TTL=600))
        await kv.put(rpc_pb2.PutRequest(key=b"/secret", value=b"v", lease=lease.ID))
        CALLER.set(None)

        revoke = rpc_pb2.LeaseRevokeRequest(ID=lease.ID)
        loop = asyncio.get_running_loop()
        # Outside any RPC, through the KV facade: anonymous, refused (fail-safe).
        with pytest.raises(auth_errors.UserEmpty):
            await loop.create_task(
                kv.propose("lease_revoke", revoke), context=contextvars.Context()
            )
        # The lease loop's path (what expiry uses): the member itself, root.
        parts = c.nodes[follower].parts
        await loop.create_task(
            parts._lease_propose("lease_revoke", revoke), context=contextvars.Context()
        )
        got = await kv.range(rpc_pb2.RangeRequest(key=b"/secret", serializable=True))
        assert got.count == 0

    run(tmp_path, body)


def test_auth_state_survives_member_restart(tmp_path: Path) -> None:
    async def body(c: InProcessCluster) -> None:
        leader = await c.leader()
        await _setup(c, leader)
        want = _store(c, leader).dump()
        await async_wait_until(lambda: _store(c, 2).dump() == want, timeout=10)
        await c.restart(2)
        assert _store(c, 2).dump() == want and _store(c, 2).enabled

    run(tmp_path, body)
