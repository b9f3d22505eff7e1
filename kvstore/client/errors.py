"""Client-side exceptions, and the ONE place that maps gRPC statuses to them.

Owns: the exception hierarchy raised by `kvstore.client` and the conversion
`from_rpc_error(grpc.RpcError) -> ClientError`. Every RPC path (sync, async,
streams) funnels failures through `from_rpc_error`; nothing else inspects
status codes or messages.

Must never: guess at a write's outcome. `ClientError.retryable` only says the
status code is UNAVAILABLE (what etcd uses for retry-safe conditions); whether a
*write* may be resent is decided by the transport (`_transport.py`), which only
resends when no connection was ever established.

Invariants: etcd matches errors by the exact message text
(`kvstore.errors`, ETCD_API.md §1.5), so the class is chosen by message first
and by status code second.
"""

from __future__ import annotations

import grpc

from kvstore import errors as etcd_errors


class ClientError(Exception):
    """Base class of every error raised by kvstore.client.

    `code` is the gRPC status code (None for purely client-side errors),
    `message` the server's status message (etcd's exact error text)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.code == grpc.StatusCode.UNAVAILABLE


class ConnectionFailedError(ClientError):
    """No endpoint could be reached (the request was never sent)."""


class ClientClosedError(ClientError):
    """The client was closed; background keepalives and watches stop."""


class DeadlineExceededError(ClientError):
    """The per-call deadline passed; the outcome of a write is unknown."""


class UnavailableError(ClientError):
    """The server answered UNAVAILABLE (no leader, timeout, stopping...)."""


class NoLeaderError(UnavailableError):
    pass


class LeaderChangedError(UnavailableError):
    pass


class RequestTimeoutError(UnavailableError):
    """etcd's "request timed out": the write may or may not be applied."""


class UnhealthyClusterError(UnavailableError):
    pass


class InvalidArgumentError(ClientError):
    pass


class EmptyKeyError(InvalidArgumentError):
    pass


class KeyNotFoundError(InvalidArgumentError):
    """Put with ignore_value/ignore_lease on a missing key."""


class TooManyOpsError(InvalidArgumentError):
    pass


class DuplicateKeyError(InvalidArgumentError):
    pass


class RequestTooLargeError(InvalidArgumentError):
    pass


class CompactedError(ClientError):
    """The requested revision has been compacted.

    `compact_revision` is set when the server said which revision it is
    (watch cancellations carry it; Range errors do not)."""

    def __init__(
        self,
        message: str = etcd_errors.COMPACTED.message,
        code: grpc.StatusCode | None = grpc.StatusCode.OUT_OF_RANGE,
        compact_revision: int = 0,
    ) -> None:
        super().__init__(message, code)
        self.compact_revision = compact_revision


class FutureRevisionError(ClientError):
    pass


class NoSpaceError(ClientError):
    pass


class TooManyRequestsError(ClientError):
    pass


class LeaseNotFoundError(ClientError):
    pass


class LeaseExistsError(ClientError):
    pass


class LeaseTTLTooLargeError(ClientError):
    pass


class LeaseExpiredError(LeaseNotFoundError):
    """A kept-alive lease was found expired or revoked (client-side)."""


class MemberNotFoundError(ClientError):
    pass


class MemberExistsError(ClientError):
    pass


class PeerURLExistsError(ClientError):
    pass


class MemberNotLearnerError(ClientError):
    pass


class LearnerNotReadyError(ClientError):
    pass


class TooManyLearnersError(ClientError):
    pass


class NotLeaderError(ClientError):
    pass


class BadLeaderTransfereeError(ClientError):
    pass


class PermissionDeniedError(ClientError):
    pass


class InvalidAuthTokenError(ClientError):
    pass


class AuthFailedError(InvalidArgumentError):
    """Authenticate: wrong user name or password."""


class AuthNotEnabledError(ClientError):
    pass


class AuthOldRevisionError(InvalidArgumentError):
    """The auth state changed after the token was issued: authenticate again."""


class UserEmptyError(InvalidArgumentError):
    """No credentials while auth is enabled."""


class CorruptError(ClientError):
    pass


class WatchCanceledError(ClientError):
    """The server canceled a watch for a reason other than compaction."""


class ElectionNotLeaderError(ClientError):
    """Proclaim/resign by a candidate that is no longer the leader."""


class ElectionNoLeaderError(ClientError):
    pass


# Exact etcd message -> exception class (ETCD_API.md §1.5).
_BY_MESSAGE: dict[str, type[ClientError]] = {
    etcd_errors.EMPTY_KEY.message: EmptyKeyError,
    etcd_errors.KEY_NOT_FOUND.message: KeyNotFoundError,
    etcd_errors.TOO_MANY_OPS.message: TooManyOpsError,
    etcd_errors.DUPLICATE_KEY.message: DuplicateKeyError,
    etcd_errors.REQUEST_TOO_LARGE.message: RequestTooLargeError,
    etcd_errors.COMPACTED.message: CompactedError,
    etcd_errors.FUTURE_REVISION.message: FutureRevisionError,
    etcd_errors.NO_SPACE.message: NoSpaceError,
    etcd_errors.TOO_MANY_REQUESTS.message: TooManyRequestsError,
    etcd_errors.LEASE_NOT_FOUND.message: LeaseNotFoundError,
    etcd_errors.LEASE_EXISTS.message: LeaseExistsError,
    etcd_errors.LEASE_TTL_TOO_LARGE.message: LeaseTTLTooLargeError,
    etcd_errors.MEMBER_NOT_FOUND.message: MemberNotFoundError,
    etcd_errors.MEMBER_EXIST.message: MemberExistsError,
    etcd_errors.PEER_URL_EXIST.message: PeerURLExistsError,
    etcd_errors.MEMBER_NOT_LEARNER.message: MemberNotLearnerError,
    etcd_errors.LEARNER_NOT_READY.message: LearnerNotReadyError,
    etcd_errors.TOO_MANY_LEARNERS.message: TooManyLearnersError,
    etcd_errors.NO_LEADER.message: NoLeaderError,
    etcd_errors.NOT_LEADER.message: NotLeaderError,
    etcd_errors.LEADER_CHANGED.message: LeaderChangedError,
    etcd_errors.TIMEOUT.message: RequestTimeoutError,
    etcd_errors.TIMEOUT_DUE_TO_LEADER_FAIL.message: RequestTimeoutError,
    etcd_errors.TIMEOUT_DUE_TO_CONNECTION_LOST.message: RequestTimeoutError,
    etcd_errors.UNHEALTHY_CLUSTER.message: UnhealthyClusterError,
    etcd_errors.BAD_LEADER_TRANSFEREE.message: BadLeaderTransfereeError,
    etcd_errors.PERMISSION_DENIED.message: PermissionDeniedError,
    etcd_errors.INVALID_AUTH_TOKEN.message: InvalidAuthTokenError,
    etcd_errors.AUTH_FAILED.message: AuthFailedError,
    etcd_errors.AUTH_NOT_ENABLED.message: AuthNotEnabledError,
    etcd_errors.AUTH_OLD_REVISION.message: AuthOldRevisionError,
    etcd_errors.USER_EMPTY.message: UserEmptyError,
    etcd_errors.CORRUPT.message: CorruptError,
    etcd_errors.ELECTION_NO_LEADER.message: ElectionNoLeaderError,
}

# Fallback by status code when the message is not one of etcd's.
_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.UNAUTHENTICATED: InvalidAuthTokenError,
    grpc.StatusCode.DATA_LOSS: CorruptError,
}

# grpc-core texts meaning "no transport was ever established" (request unsent).
_NEVER_CONNECTED_MARKERS = (
    "failed to connect to all addresses",
    "Connection refused",
    "DNS resolution failed",
    "empty address list",
)


def from_status(code: grpc.StatusCode, message: str) -> ClientError:
    """Build the exception for a status received over the wire."""
    cls = _BY_MESSAGE.get(message)
    if cls is None:
        cls = _BY_CODE.get(code, ClientError)
    return cls(message, code)


def from_rpc_error(err: grpc.RpcError) -> ClientError:
    """Convert any grpc (sync or aio) RpcError into a ClientError."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = (err.details() if hasattr(err, "details") else None) or str(code)
    if code == grpc.StatusCode.UNAVAILABLE and never_connected(details):
        return ConnectionFailedError(details, code)
    return from_status(code, details)


def never_connected(details: str) -> bool:
    """True if an UNAVAILABLE status says the request could not be sent at all."""
    return any(marker in details for marker in _NEVER_CONNECTED_MARKERS)
