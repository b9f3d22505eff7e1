"""The HTTP paths of etcd's JSON gateway and the gRPC method each one calls.

Owns: `ROUTES`, path (without the /v3 or /v3beta prefix) -> full gRPC method
name, as etcd's grpc-gateway maps them (`rpc.proto`'s `google.api.http`
options; 3.4's paths plus the 3.5 ones: /maintenance/hashkv,
/maintenance/downgrade, /auth/status), and `PREFIXES`.
Never: decides anything about a request; it is a table.

etcd 3.4 serves the same routes under `/v3/` and `/v3beta/`; `/v3alpha/` is
404 there (observed on 3.4.23), so it is 404 here too.
"""

from __future__ import annotations

PREFIXES: tuple[str, ...] = ("/v3/", "/v3beta/")

_KV = "/etcdserverpb.KV/"
_LEASE = "/etcdserverpb.Lease/"
_CLUSTER = "/etcdserverpb.Cluster/"
_MAINT = "/etcdserverpb.Maintenance/"
_AUTH = "/etcdserverpb.Auth/"

ROUTES: dict[str, str] = {
    "kv/range": _KV + "Range",
    "kv/put": _KV + "Put",
    "kv/deleterange": _KV + "DeleteRange",
    "kv/txn": _KV + "Txn",
    "kv/compaction": _KV + "Compact",
    "watch": "/etcdserverpb.Watch/Watch",
    "lease/grant": _LEASE + "LeaseGrant",
    "lease/revoke": _LEASE + "LeaseRevoke",
    "lease/keepalive": _LEASE + "LeaseKeepAlive",
    "lease/timetolive": _LEASE + "LeaseTimeToLive",
    "lease/leases": _LEASE + "LeaseLeases",
    # etcd keeps the pre-3.3 paths as aliases.
    "kv/lease/revoke": _LEASE + "LeaseRevoke",
    "kv/lease/timetolive": _LEASE + "LeaseTimeToLive",
    "kv/lease/leases": _LEASE + "LeaseLeases",
    "cluster/member/add": _CLUSTER + "MemberAdd",
    "cluster/member/remove": _CLUSTER + "MemberRemove",
    "cluster/member/update": _CLUSTER + "MemberUpdate",
    "cluster/member/list": _CLUSTER + "MemberList",
    "cluster/member/promote": _CLUSTER + "MemberPromote",
    "maintenance/alarm": _MAINT + "Alarm",
    "maintenance/status": _MAINT + "Status",
    "maintenance/defragment": _MAINT + "Defragment",
    "maintenance/hash": _MAINT + "Hash",
    "maintenance/hashkv": _MAINT + "HashKV",
    "maintenance/snapshot": _MAINT + "Snapshot",
    "maintenance/transfer-leadership": _MAINT + "MoveLeader",
    "maintenance/downgrade": _MAINT + "Downgrade",
    "auth/enable": _AUTH + "AuthEnable",
    "auth/disable": _AUTH + "AuthDisable",
    "auth/status": _AUTH + "AuthStatus",
    "auth/authenticate": _AUTH + "Authenticate",
    "auth/user/add": _AUTH + "UserAdd",
    "auth/user/get": _AUTH + "UserGet",
    "auth/user/list": _AUTH + "UserList",
    "auth/user/delete": _AUTH + "UserDelete",
    "auth/user/changepw": _AUTH + "UserChangePassword",
    "auth/user/grant": _AUTH + "UserGrantRole",
    "auth/user/revoke": _AUTH + "UserRevokeRole",
    "auth/role/add": _AUTH + "RoleAdd",
    "auth/role/get": _AUTH + "RoleGet",
    "auth/role/list": _AUTH + "RoleList",
    "auth/role/delete": _AUTH + "RoleDelete",
    "auth/role/grant": _AUTH + "RoleGrantPermission",
    "auth/role/revoke": _AUTH + "RoleRevokePermission",
    "lock/lock": "/v3lockpb.Lock/Lock",
    "lock/unlock": "/v3lockpb.Lock/Unlock",
    "election/campaign": "/v3electionpb.Election/Campaign",
    "election/proclaim": "/v3electionpb.Election/Proclaim",
    "election/leader": "/v3electionpb.Election/Leader",
    "election/observe": "/v3electionpb.Election/Observe",
    "election/resign": "/v3electionpb.Election/Resign",
}
