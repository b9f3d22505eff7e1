"""etcd's client-visible errors: one table of (gRPC code, byte-exact message).

Owns: the errors every layer above the Raft core raises (mvcc, lease, server,
api) and that the client maps back. etcd clients match errors by the exact
message text (clientv3 `rpctypes.errStringToError`), so the messages here must
never change. Only retry-safe conditions use UNAVAILABLE: clientv3 retries
reads on it, and retrying a write on anything else could apply it twice.

Raise the module-level constructors (`raise errors.COMPACTED()`); catch by
class (`except errors.EtcdError`) or compare `.message`.
"""

from __future__ import annotations

import grpc

Code = grpc.StatusCode


class EtcdError(Exception):
    """An error with etcd's gRPC status code and exact message."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.code == Code.UNAVAILABLE

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, EtcdError)
            and other.code == self.code
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))


_BY_MESSAGE: dict[str, grpc.StatusCode] = {}


class ErrorKind:
    """One etcd error: call it for a fresh exception (`raise errors.NO_LEADER()`);
    `code` / `message` for aborting a call without raising."""

    __slots__ = ("code", "message")

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        self.code = code
        self.message = message

    def __call__(self) -> EtcdError:
        return EtcdError(self.code, self.message)


def _define(code: grpc.StatusCode, message: str) -> ErrorKind:
    _BY_MESSAGE[message] = code
    return ErrorKind(code, message)


def from_message(code: grpc.StatusCode, message: str) -> EtcdError:
    """Rebuild an error from a status received over the wire (client side)."""
    return EtcdError(_BY_MESSAGE.get(message, code), message)


# --- request validation (api layer) -----------------------------------------
EMPTY_KEY = _define(Code.INVALID_ARGUMENT, "etcdserver: key is not provided")
KEY_NOT_FOUND = _define(Code.INVALID_ARGUMENT, "etcdserver: key not found")
VALUE_PROVIDED = _define(Code.INVALID_ARGUMENT, "etcdserver: value is provided")
LEASE_PROVIDED = _define(Code.INVALID_ARGUMENT, "etcdserver: lease is provided")
TOO_MANY_OPS = _define(
    Code.INVALID_ARGUMENT, "etcdserver: too many operations in txn request"
)
DUPLICATE_KEY = _define(
    Code.INVALID_ARGUMENT, "etcdserver: duplicate key given in txn request"
)
REQUEST_TOO_LARGE = _define(Code.INVALID_ARGUMENT, "etcdserver: request is too large")

# --- mvcc ---------------------------------------------------------------------
COMPACTED = _define(
    Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted"
)
FUTURE_REVISION = _define(
    Code.OUT_OF_RANGE, "etcdserver: mvcc: required revision is a future revision"
)
NO_SPACE = _define(Code.RESOURCE_EXHAUSTED, "etcdserver: mvcc: database space exceeded")

# --- lease --------------------------------------------------------------------
LEASE_NOT_FOUND = _define(Code.NOT_FOUND, "etcdserver: requested lease not found")
LEASE_EXISTS = _define(Code.FAILED_PRECONDITION, "etcdserver: lease already exists")
LEASE_TTL_TOO_LARGE = _define(Code.OUT_OF_RANGE, "etcdserver: too large lease TTL")

# --- cluster membership -------------------------------------------------------
MEMBER_EXIST = _define(Code.FAILED_PRECONDITION, "etcdserver: member ID already exist")
PEER_URL_EXIST = _define(Code.FAILED_PRECONDITION, "etcdserver: Peer URLs already exists")
MEMBER_NOT_ENOUGH_STARTED = _define(
    Code.FAILED_PRECONDITION,
    "etcdserver: re-configuration failed due to not enough started members",
)
MEMBER_BAD_URLS = _define(
    Code.INVALID_ARGUMENT, "etcdserver: given member URLs are invalid"
)
MEMBER_NOT_FOUND = _define(Code.NOT_FOUND, "etcdserver: member not found")
MEMBER_NOT_LEARNER = _define(
    Code.FAILED_PRECONDITION, "etcdserver: can only promote a learner member"
)
LEARNER_NOT_READY = _define(
    Code.FAILED_PRECONDITION,
    "etcdserver: can only promote a learner member which is in sync with leader",
)
TOO_MANY_LEARNERS = _define(
    Code.FAILED_PRECONDITION, "etcdserver: too many learner members in cluster"
)

# --- server state (UNAVAILABLE = safe to retry) -------------------------------
NO_LEADER = _define(Code.UNAVAILABLE, "etcdserver: no leader")
NOT_LEADER = _define(Code.FAILED_PRECONDITION, "etcdserver: not leader")
LEADER_CHANGED = _define(Code.UNAVAILABLE, "etcdserver: leader changed")
NOT_CAPABLE = _define(Code.UNAVAILABLE, "etcdserver: not capable")
STOPPED = _define(Code.UNAVAILABLE, "etcdserver: server stopped")
TIMEOUT = _define(Code.UNAVAILABLE, "etcdserver: request timed out")
TIMEOUT_DUE_TO_LEADER_FAIL = _define(
    Code.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to previous leader failure",
)
TIMEOUT_DUE_TO_CONNECTION_LOST = _define(
    Code.UNAVAILABLE,
    "etcdserver: request timed out, possibly due to connection lost",
)
UNHEALTHY_CLUSTER = _define(Code.UNAVAILABLE, "etcdserver: unhealthy cluster")
CORRUPT = _define(Code.DATA_LOSS, "etcdserver: corrupt cluster")
LEARNER_NOT_SUPPORTED = _define(
    Code.UNAVAILABLE, "etcdserver: rpc not supported for learner"
)
BAD_LEADER_TRANSFEREE = _define(
    Code.FAILED_PRECONDITION, "etcdserver: bad leader transferee"
)
TOO_MANY_REQUESTS = _define(Code.RESOURCE_EXHAUSTED, "etcdserver: too many requests")

# --- auth ---------------------------------------------------------------------
PERMISSION_DENIED = _define(Code.PERMISSION_DENIED, "etcdserver: permission denied")
INVALID_AUTH_TOKEN = _define(Code.UNAUTHENTICATED, "etcdserver: invalid auth token")
USER_EMPTY = _define(Code.INVALID_ARGUMENT, "etcdserver: user name is empty")
AUTH_NOT_ENABLED = _define(
    Code.FAILED_PRECONDITION, "etcdserver: authentication is not enabled"
)
ROOT_USER_NOT_EXIST = _define(
    Code.FAILED_PRECONDITION, "etcdserver: root user does not exist"
)
ROOT_ROLE_NOT_EXIST = _define(
    Code.FAILED_PRECONDITION, "etcdserver: root user does not have root role"
)
USER_ALREADY_EXIST = _define(Code.FAILED_PRECONDITION, "etcdserver: user name already exists")
USER_NOT_FOUND = _define(Code.FAILED_PRECONDITION, "etcdserver: user name not found")
ROLE_ALREADY_EXIST = _define(Code.FAILED_PRECONDITION, "etcdserver: role name already exists")
ROLE_NOT_FOUND = _define(Code.FAILED_PRECONDITION, "etcdserver: role name not found")
ROLE_EMPTY = _define(Code.INVALID_ARGUMENT, "etcdserver: role name is empty")
AUTH_FAILED = _define(
    Code.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"
)
ROLE_NOT_GRANTED = _define(
    Code.FAILED_PRECONDITION, "etcdserver: role is not granted to the user"
)
PERMISSION_NOT_GRANTED = _define(
    Code.FAILED_PRECONDITION, "etcdserver: permission is not granted to the role"
)
PERMISSION_NOT_GIVEN = _define(Code.INVALID_ARGUMENT, "etcdserver: permission not given")
INVALID_AUTH_MGMT = _define(Code.INVALID_ARGUMENT, "etcdserver: invalid auth management")
AUTH_OLD_REVISION = _define(
    Code.INVALID_ARGUMENT, "etcdserver: revision of auth store is old"
)

# --- election (v3electionpb) --------------------------------------------------
ELECTION_NO_LEADER = _define(Code.UNKNOWN, "election: no leader")
ELECTION_NOT_LEADER = _define(Code.UNKNOWN, "election: not leader")

# Not a status: sent in WatchResponse.cancel_reason.
DUPLICATE_WATCH_ID_REASON = "mvcc: duplicate watch ID provided on the WatchStream"
