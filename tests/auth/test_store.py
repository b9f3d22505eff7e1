"""AuthStore rules (each one observed on etcd 3.4.23 with etcdctl / gRPC, see
tests/compat/test_etcdctl_auth_compat.py for the side-by-side runs), apply
atomicity, persistence in RocksDB and dump / restore."""

from __future__ import annotations

import pytest

from kvstore.auth import AuthState, AuthStore, errors
from kvstore.auth.store import META_FAMILY, prefix_end
from kvstore.pb import auth_pb2, rpc_pb2

from .conftest import FAST_HASH, Member

R, W, RW = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE


def test_auth_enable_needs_root_user_then_root_role(member: Member) -> None:
    assert isinstance(member.enable(), errors.RootUserNotExist)
    member.user_add("root")
    assert isinstance(member.enable(), errors.RootRoleNotExist)
    # Granting `root` works before the role exists (etcdctl auth enable relies on it).
    assert not isinstance(member.grant_role("root", "root"), Exception)
    assert member.auth.role("root") is None
    rev = member.auth.revision
    assert not isinstance(member.enable(), Exception)
    assert member.auth.enabled
    assert member.auth.revision == rev  # enable does not bump the revision (etcd 3.4)
    assert not isinstance(member.enable(), Exception)  # twice: a no-op


def test_revision_starts_at_one_and_counts_each_change(member: Member) -> None:
    assert member.auth.revision == 1
    member.user_add("a")
    member.role_add("r")
    member.grant_role("a", "r")
    member.grant_role("a", "r")  # already held: ignored, no revision
    member.grant("r", R, b"k")
    assert member.auth.revision == 5
    assert isinstance(member.role_add("r"), errors.RoleAlreadyExist)
    assert member.auth.revision == 5  # a refused change changes nothing


def test_user_rules(member: Member) -> None:
    assert isinstance(member.user_add(""), errors.UserEmpty)
    member.user_add("alice")
    assert isinstance(member.user_add("alice"), errors.UserAlreadyExist)
    assert isinstance(member.grant_role("nobody", "r"), errors.UserNotFound)
    assert isinstance(member.grant_role("alice", "nope"), errors.RoleNotFound)
    assert isinstance(member.grant_role("alice", ""), errors.RoleNotFound)
    revoke = rpc_pb2.AuthUserRevokeRoleRequest(name="alice", role="r1")
    assert isinstance(member.apply("apply_user_revoke_role", revoke), errors.RoleNotGranted)
    member.role_add("r2")
    member.role_add("r1")
    member.grant_role("alice", "r2")
    member.grant_role("alice", "r1")
    assert list(member.auth.user_get(rpc_pb2.AuthUserGetRequest(name="alice")).roles) == [
        "r1",
        "r2",
    ]  # kept sorted
    member.apply("apply_user_revoke_role", revoke)
    assert list(member.auth.user("alice").roles) == ["r2"]
    with pytest.raises(errors.UserNotFound):
        member.auth.user_get(rpc_pb2.AuthUserGetRequest(name=""))
    delete = rpc_pb2.AuthUserDeleteRequest(name="nope")
    assert isinstance(member.apply("apply_user_delete", delete), errors.UserNotFound)
    chpw = rpc_pb2.AuthUserChangePasswordRequest(name="nope", hashedPassword=FAST_HASH)
    assert isinstance(member.apply("apply_user_change_password", chpw), errors.UserNotFound)


def test_root_is_protected_only_while_enabled(member: Member) -> None:
    member.setup_root()
    member.enable()
    disabled: list[bool] = []
    member.auth.on_auth_disabled(lambda: disabled.append(True))
    cases = [
        ("apply_user_delete", rpc_pb2.AuthUserDeleteRequest(name="root")),
        ("apply_user_revoke_role", rpc_pb2.AuthUserRevokeRoleRequest(name="root", role="root")),
        ("apply_role_delete", rpc_pb2.AuthRoleDeleteRequest(role="root")),
    ]
    for method, req in cases:
        assert isinstance(member.apply(method, req), errors.InvalidAuthMgmt), method
    member.apply("apply_auth_disable", rpc_pb2.AuthDisableRequest())
    assert not member.auth.enabled and disabled == [True]  # every token dies
    member.apply("apply_auth_disable", rpc_pb2.AuthDisableRequest())
    assert disabled == [True]  # a no-op the second time
    out = member.apply("apply_user_revoke_role", cases[1][1])
    assert not isinstance(out, Exception)
    assert not isinstance(member.apply("apply_user_delete", cases[0][1]), Exception)


def test_no_password_user_cannot_use_a_password_and_stays_so(member: Member) -> None:
    member.setup_root()
    member.user_add("bob", no_password=True)
    assert member.auth.user("bob").password == b""
    member.enable()
    with pytest.raises(errors.NoPasswordUser):
        member.auth.password_hash("bob")
    chpw = rpc_pb2.AuthUserChangePasswordRequest(name="bob", hashedPassword=FAST_HASH)
    assert not isinstance(member.apply("apply_user_change_password", chpw), Exception)
    with pytest.raises(errors.NoPasswordUser):  # etcd 3.4 keeps the option
        member.auth.password_hash("bob")
    with pytest.raises(errors.AuthFailed):
        member.auth.password_hash("ghost")


def test_password_hash_needs_auth_enabled(member: Member) -> None:
    member.setup_root()
    with pytest.raises(errors.AuthNotEnabled):
        member.auth.password_hash("root")
    member.enable()
    hashed, rev = member.auth.password_hash("root")
    assert hashed == FAST_HASH.encode()
    assert rev == member.auth.revision


def test_plain_password_is_never_stored(member: Member) -> None:
    req = rpc_pb2.AuthUserAddRequest(name="u", password="secret", hashedPassword=FAST_HASH)
    member.apply("apply_user_add", req)
    raw = b"".join(v for _, v in member.backend.iterate(META_FAMILY, b"auth/", b"auth0"))
    assert b"secret" not in raw
    assert FAST_HASH.encode() in raw


def test_role_rules_and_permission_order(member: Member) -> None:
    assert isinstance(member.role_add(""), errors.RoleEmpty)
    member.role_add("r")
    assert isinstance(member.grant("nope", R, b"a"), errors.RoleNotFound)
    no_perm = rpc_pb2.AuthRoleGrantPermissionRequest(name="r")
    # etcd 3.4.23 panics (and cannot restart) on this; 3.5 answers "permission not given".
    assert isinstance(
        member.apply("apply_role_grant_permission", no_perm), errors.PermissionNotGiven
    )
    member.grant("r", RW, b"/app/", prefix_end(b"/app/"))
    member.grant("r", R, b"/a", b"/z")
    member.grant("r", W, b"k1")
    member.grant("r", R, b"/a", b"/b")
    member.grant("r", W, b"/a", b"/b")  # same [key, range_end): type updated in place
    perms = member.auth.role_get(rpc_pb2.AuthRoleGetRequest(role="r")).perm
    assert [(p.key, p.range_end, p.permType) for p in perms] == [
        (b"/a", b"/z", R),
        (b"/a", b"/b", W),
        (b"/app/", b"/app0", RW),
        (b"k1", b"", W),
    ]
    revoke = rpc_pb2.AuthRoleRevokePermissionRequest(role="r", key=b"/a", range_end=b"/c")
    assert isinstance(
        member.apply("apply_role_revoke_permission", revoke), errors.PermissionNotGranted
    )
    revoke.range_end = b"/b"
    assert not isinstance(member.apply("apply_role_revoke_permission", revoke), Exception)
    assert len(member.auth.role("r").keyPermission) == 3
    bad = rpc_pb2.AuthRoleRevokePermissionRequest(role="x", key=b"a")
    assert isinstance(member.apply("apply_role_revoke_permission", bad), errors.RoleNotFound)
    with pytest.raises(errors.RoleNotFound):
        member.auth.role_get(rpc_pb2.AuthRoleGetRequest(role="root"))


def test_role_delete_takes_the_role_from_its_users(member: Member) -> None:
    member.role_add("r")
    member.role_add("s")
    for u in ("a", "b"):
        member.user_add(u)
        member.grant_role(u, "r")
        member.grant_role(u, "s")
    member.apply("apply_role_delete", rpc_pb2.AuthRoleDeleteRequest(role="r"))
    assert member.auth.role_list().roles == ["s"]
    member.reopen()
    assert [list(member.auth.user(u).roles) for u in ("a", "b")] == [["s"], ["s"]]
    out = member.apply("apply_role_delete", rpc_pb2.AuthRoleDeleteRequest(role="r"))
    assert isinstance(out, errors.RoleNotFound)


def test_lists_are_sorted(member: Member) -> None:
    for name in ("zed", "alice", "Bob", "root"):
        member.user_add(name)
        member.role_add(name + "-role")
    assert member.auth.user_list().users == ["Bob", "alice", "root", "zed"]
    assert member.auth.role_list().roles == ["Bob-role", "alice-role", "root-role", "zed-role"]


def test_state_survives_reopen(member: Member) -> None:
    member.setup_root()
    member.role_add("r")
    member.grant("r", RW, b"a", b"b")
    member.user_add("u", no_password=True)
    member.grant_role("u", "r")
    member.enable()
    before = member.auth.dump()
    member.reopen()
    assert member.auth.dump() == before
    assert member.auth.enabled and member.auth.revision == before.revision == 7


def test_dump_encode_decode_restore_roundtrip(member: Member, tmp_path) -> None:
    member.setup_root()
    member.role_add("r")
    member.grant("r", R, b"x\x00\xff", b"\x00")
    member.enable()
    state = member.auth.dump()
    assert AuthState.decode(state.encode()) == state
    other = Member(tmp_path / "other")
    other.user_add("stale")  # replaced entirely by the restore
    other.role_add("stale-role")
    gone: list[str] = []
    other.auth.on_user_invalidated(gone.append)
    batch = other.mvcc.begin_batch()
    other.auth.restore(AuthState.decode(state.encode()), batch)
    batch.commit()
    assert gone == ["stale"]  # its tokens must die
    assert other.auth.dump() == state
    other.reopen()
    assert other.auth.dump() == state
    assert other.auth.user("stale") is None and other.auth.role("stale-role") is None
    other.backend.close()


def test_decode_rejects_truncated_data() -> None:
    data = AuthState(True, 3, (auth_pb2.User(name=b"u"),), ()).encode()
    with pytest.raises(ValueError):
        AuthState.decode(data[:-1])


def test_apply_is_deterministic_across_members(tmp_path) -> None:
    """Two members applying the same requests end with the same bytes on disk."""
    members = [Member(tmp_path / f"m{i}") for i in range(2)]
    for m in members:
        m.setup_root()
        m.role_add("r")
        m.grant("r", W, b"k")
        m.user_add("u")
        m.grant_role("u", "r")
        m.enable()
        m.apply("apply_user_delete", rpc_pb2.AuthUserDeleteRequest(name="u"))
    disk = [list(m.backend.iterate(META_FAMILY, b"auth/", b"auth0")) for m in members]
    assert disk[0] == disk[1] and len(disk[0]) == 4  # enabled, revision, root, role r
    for m in members:
        m.backend.close()


def test_store_without_disk_state_is_empty() -> None:
    s = AuthStore()
    assert (s.enabled, s.revision, s.user_list().users, s.role_list().roles) == (False, 1, [], [])


def test_prefix_end() -> None:
    assert prefix_end(b"/app/") == b"/app0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\x00"
    assert prefix_end(b"") == b"\x00"
