"""PermissionChecker: etcd 3.4.23's decisions (observed with tests against a
real etcd, see the module doc of kvstore/auth/checker.py), the auth-revision
rule that closes the check/apply gap, and where kvstore is stricter."""

from __future__ import annotations

import pytest

from kvstore.auth import AuthInfo, PermissionChecker, errors
from kvstore.auth.checker import ADMIN_METHODS, NO_AUTH
from kvstore.auth.store import prefix_end
from kvstore.pb import auth_pb2, rpc_pb2

from .conftest import Member

R, W, RW = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE


@pytest.fixture
def world(member: Member) -> tuple[Member, PermissionChecker]:
    """root; alice (r1: readwrite prefix /app/, read [/a,/z), write k1); carol
    (r2: readwrite everything); auth enabled."""
    m = member
    m.setup_root()
    for role in ("r1", "r2"):
        m.role_add(role)
    m.grant("r1", RW, b"/app/", prefix_end(b"/app/"))
    m.grant("r1", R, b"/a", b"/z")
    m.grant("r1", W, b"k1")
    m.grant("r2", RW, b"\x00", b"\x00")
    for user, role in (("alice", "r1"), ("carol", "r2")):
        m.user_add(user)
        m.grant_role(user, role)
    m.enable()
    return m, PermissionChecker(m.auth)


def ai(m: Member, user: str) -> AuthInfo:
    return AuthInfo(user, m.auth.revision)


def put(key: bytes, **kw) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(key=key, value=b"v", **kw)


def test_kv_decisions_as_etcd(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    c.check_put(alice, put(b"k1"))
    with pytest.raises(errors.PermissionDenied):
        c.check_put(alice, put(b"k1", prev_kv=True))
    with pytest.raises(errors.PermissionDenied):
        c.check_range(alice, rpc_pb2.RangeRequest(key=b"k1"))
    c.check_range(alice, rpc_pb2.RangeRequest(key=b"/a", range_end=b"/z"))
    with pytest.raises(errors.PermissionDenied):
        c.check_range(alice, rpc_pb2.RangeRequest(key=b"/a", range_end=b"/z\x00"))
    c.check_delete_range(alice, rpc_pb2.DeleteRangeRequest(key=b"/app/x", prev_kv=True))
    c.check_delete_range(alice, rpc_pb2.DeleteRangeRequest(key=b"k1"))
    with pytest.raises(errors.PermissionDenied):
        c.check_delete_range(alice, rpc_pb2.DeleteRangeRequest(key=b"k1", prev_kv=True))
    # root and a readwrite-everything user pass everything
    c.check_delete_range(ai(m, "root"), rpc_pb2.DeleteRangeRequest(key=b"\x00", range_end=b"\x00"))
    c.check_range(ai(m, "carol"), rpc_pb2.RangeRequest(key=b"\x00", range_end=b"\x00"))


def test_credentials_preamble(world) -> None:
    m, c = world
    with pytest.raises(errors.UserEmpty):
        c.check_range(NO_AUTH, rpc_pb2.RangeRequest(key=b"/app/x"))
    with pytest.raises(errors.PermissionDenied):  # a token for a user since deleted (jwt)
        c.check_range(AuthInfo("ghost", m.auth.revision), rpc_pb2.RangeRequest(key=b"/app/x"))
    m.apply("apply_auth_disable", rpc_pb2.AuthDisableRequest())
    c.check_range(NO_AUTH, rpc_pb2.RangeRequest(key=b"anything"))  # auth off: all allowed
    c.check_admin(None)


def test_revoked_between_check_and_apply_is_refused(world) -> None:
    """Admitted at revision r; a revoke applies first; the request's apply-time
    check sees the newer revision and refuses (the proposer then re-resolves)."""
    m, c = world
    admitted = ai(m, "alice")
    c.check_put(admitted, put(b"/app/x"))
    m.apply(
        "apply_role_revoke_permission",
        rpc_pb2.AuthRoleRevokePermissionRequest(role="r1", key=b"/app/", range_end=b"/app0"),
    )
    with pytest.raises(errors.AuthOldRevision):
        c.check_internal(admitted, "put", put(b"/app/x"))
    with pytest.raises(errors.PermissionDenied):  # re-resolved: the cache saw the change
        c.check_internal(ai(m, "alice"), "put", put(b"/app/x"))
    # a newer revision than ours (a lagging member) is not "old"
    c.check_put(AuthInfo("alice", m.auth.revision + 5), put(b"k1"))


def txn(cmp=(), succ=(), fail=()) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(compare=list(cmp), success=list(succ), failure=list(fail))


def test_txn_every_compare_and_op_both_branches_nested(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    ok_put = rpc_pb2.RequestOp(request_put=put(b"/app/1"))
    bad_put = rpc_pb2.RequestOp(request_put=put(b"zz"))
    ok_get = rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"/b"))
    c.check_txn(alice, txn(succ=[ok_put, ok_get], fail=[ok_put]))
    bad_cmp = rpc_pb2.Compare(key=b"zz", target=rpc_pb2.Compare.VERSION)
    for t in (
        txn(cmp=[bad_cmp], succ=[ok_put]),
        txn(succ=[ok_put], fail=[bad_put]),
        txn(succ=[rpc_pb2.RequestOp(request_range=rpc_pb2.RangeRequest(key=b"k1"))]),
        # delete with prev_kv needs read too (etcd alike)
        txn(
            succ=[
                rpc_pb2.RequestOp(
                    request_delete_range=rpc_pb2.DeleteRangeRequest(key=b"k1", prev_kv=True)
                )
            ]
        ),
        # stricter than 3.4.23: nested txns and put prev_kv in a txn are checked
        txn(succ=[ok_put, rpc_pb2.RequestOp(request_txn=txn(fail=[bad_put]))]),
        txn(succ=[rpc_pb2.RequestOp(request_put=put(b"k1", prev_kv=True))]),
    ):
        with pytest.raises(errors.PermissionDenied):
            c.check_internal(alice, "txn", t)


def test_lease_revoke_and_attach_need_write_on_every_key(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    attached = {1: [b"/app/a", b"k1"], 2: [b"/app/a", b"zz"], 3: []}
    keys = attached.__getitem__
    c.check_internal(alice, "lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=1), keys)
    c.check_internal(alice, "lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=3), keys)
    with pytest.raises(errors.PermissionDenied):
        c.check_internal(alice, "lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=2), keys)
    with pytest.raises(errors.PermissionDenied):  # attach to a lease holding zz
        c.check_internal(alice, "put", put(b"/app/l", lease=2), keys)
    with pytest.raises(errors.UserEmpty):  # observed: revoke without token
        c.check_internal(NO_AUTH, "lease_revoke", rpc_pb2.LeaseRevokeRequest(ID=1), keys)
    c.check_internal(NO_AUTH, "lease_grant", rpc_pb2.LeaseGrantRequest(TTL=5), keys)
    c.check_internal(NO_AUTH, "compaction", rpc_pb2.CompactionRequest(revision=1), keys)


def test_watch_needs_read_on_the_range(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    c.check_watch(alice, rpc_pb2.WatchCreateRequest(key=b"/app/", range_end=b"/app0"))
    with pytest.raises(errors.PermissionDenied):
        c.check_watch(alice, rpc_pb2.WatchCreateRequest(key=b"zz"))
    with pytest.raises(errors.UserEmpty):
        c.check_watch(NO_AUTH, rpc_pb2.WatchCreateRequest(key=b"/app/"))


def test_admin_rules(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    c.check_admin(ai(m, "root"))
    with pytest.raises(errors.PermissionDenied):
        c.check_admin(alice)
    with pytest.raises(errors.UserEmpty):
        c.check_admin(NO_AUTH)
    with pytest.raises(errors.UserNotFound):
        c.check_admin(AuthInfo("ghost", 9))
    for kind in ("auth_user_add", "auth_disable", "auth_user_change_password", "auth_role_list"):
        with pytest.raises(errors.PermissionDenied):
            c.check_internal(alice, kind, None)
    # UserGet: self only; RoleGet: held roles only (observed)
    c.check_internal(alice, "auth_user_get", rpc_pb2.AuthUserGetRequest(name="alice"))
    c.check_internal(alice, "auth_role_get", rpc_pb2.AuthRoleGetRequest(role="r1"))
    for kind, req in (
        ("auth_user_get", rpc_pb2.AuthUserGetRequest(name="carol")),
        ("auth_user_get", rpc_pb2.AuthUserGetRequest(name="nope")),
        ("auth_role_get", rpc_pb2.AuthRoleGetRequest(role="r2")),
        ("auth_role_get", rpc_pb2.AuthRoleGetRequest(role="nope")),
    ):
        with pytest.raises(errors.PermissionDenied):
            c.check_internal(alice, kind, req)
    with pytest.raises(errors.UserEmpty):
        c.check_internal(NO_AUTH, "auth_user_get", rpc_pb2.AuthUserGetRequest(name="alice"))


def test_method_table(world) -> None:
    m, c = world
    alice = ai(m, "alice")
    for method in ADMIN_METHODS:
        with pytest.raises(errors.PermissionDenied):
            c.check_method(alice, method)
    # observed open to any caller on 3.4.23
    for method in (
        "/etcdserverpb.Cluster/MemberList",
        "/etcdserverpb.Maintenance/Status",
        "/etcdserverpb.Maintenance/Alarm",
        "/etcdserverpb.Maintenance/MoveLeader",
        "/etcdserverpb.KV/Compact",
        "/etcdserverpb.Lease/LeaseTimeToLive",
        "/etcdserverpb.Lease/LeaseLeases",
    ):
        c.check_method(NO_AUTH, method)
