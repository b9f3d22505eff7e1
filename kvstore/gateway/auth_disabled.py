"""The gateway's /v3/auth/* while kvstore has no Auth service.

Owns: `AuthDisabledServicer`, which answers every `etcdserverpb.Auth` RPC
as etcd 3.4 does with auth disabled and an empty user/role store (observed
on 3.4.23): status/disable/list succeed with a header, authenticate says
"authentication is not enabled", enable says "root user does not exist",
lookups of any user or role say "not found", empty names are refused. The
two calls that would have to store something (UserAdd, RoleAdd with a name)
answer UNIMPLEMENTED: pretending to store a user would be a lie.
Never: keeps state. The gateway uses it only when `api.add_servicers`
registered no Auth service; once one exists, the gateway calls that one.
"""

from __future__ import annotations

from typing import Any

import grpc

from kvstore.api.errors import grpc_errors
from kvstore.errors import EtcdError
from kvstore.pb import rpc_pb2

Context = grpc.aio.ServicerContext
_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


def _user_not_found() -> EtcdError:
    return EtcdError(_PRECONDITION, "etcdserver: user name not found")


def _role_not_found() -> EtcdError:
    return EtcdError(_PRECONDITION, "etcdserver: role name not found")


def _not_implemented(method: str) -> EtcdError:
    return EtcdError(grpc.StatusCode.UNIMPLEMENTED, f"kvstore: Auth/{method} is not implemented")


class AuthDisabledServicer:
    """`kv` gives the response header (`kv.header()`)."""

    def __init__(self, kv: Any) -> None:
        self._kv = kv

    def _header(self, response: Any) -> Any:
        response.header.CopyFrom(self._kv.header())
        return response

    @grpc_errors
    async def AuthEnable(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise EtcdError(_PRECONDITION, "etcdserver: root user does not exist")

    @grpc_errors
    async def AuthDisable(self, request: Any, context: Context) -> Any:  # noqa: N802
        return self._header(rpc_pb2.AuthDisableResponse())

    @grpc_errors
    async def AuthStatus(self, request: Any, context: Context) -> Any:  # noqa: N802
        return self._header(rpc_pb2.AuthStatusResponse(enabled=False))

    @grpc_errors
    async def Authenticate(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise EtcdError(_PRECONDITION, "etcdserver: authentication is not enabled")

    @grpc_errors
    async def UserAdd(self, request: Any, context: Context) -> Any:  # noqa: N802
        if not request.name:
            raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: user name is empty")
        raise _not_implemented("UserAdd")

    @grpc_errors
    async def RoleAdd(self, request: Any, context: Context) -> Any:  # noqa: N802
        if not request.name:
            raise EtcdError(grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: role name is empty")
        raise _not_implemented("RoleAdd")

    @grpc_errors
    async def UserList(self, request: Any, context: Context) -> Any:  # noqa: N802
        return self._header(rpc_pb2.AuthUserListResponse())

    @grpc_errors
    async def RoleList(self, request: Any, context: Context) -> Any:  # noqa: N802
        return self._header(rpc_pb2.AuthRoleListResponse())

    @grpc_errors
    async def UserGet(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _user_not_found()

    @grpc_errors
    async def UserDelete(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _user_not_found()

    @grpc_errors
    async def UserChangePassword(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _user_not_found()

    @grpc_errors
    async def UserGrantRole(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _user_not_found()

    @grpc_errors
    async def UserRevokeRole(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _user_not_found()

    @grpc_errors
    async def RoleGet(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _role_not_found()

    @grpc_errors
    async def RoleDelete(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _role_not_found()

    @grpc_errors
    async def RoleGrantPermission(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _role_not_found()

    @grpc_errors
    async def RoleRevokePermission(self, request: Any, context: Context) -> Any:  # noqa: N802
        raise _role_not_found()
