"""kvstore's Python client for kvstore and etcd v3 clusters.

Owns the public import surface: `Client` (blocking), `AsyncClient` (asyncio),
the transaction helpers `Compare` / `Op`, the result types and the exceptions.
Works against real etcd and kvstore alike (only the etcd v3 gRPC API is used).

Example::

    from kvstore.client import Client, Compare, Op

    with Client("127.0.0.1:2379") as client:       # or $KVSTORE_ENDPOINTS
        client.put("/config/mode", "fast")
        r = client.txn() \\
            .if_(Compare.value("/config/mode") == "fast") \\
            .then(Op.put("/config/mode", "safe")) \\
            .commit()
        assert r.succeeded
"""

from kvstore.client import errors
from kvstore.client.aio import AsyncClient
from kvstore.client.auth import ClientTLS, Permission, PermissionType
from kvstore.client.concurrency import Election, Lock
from kvstore.client.config_view import (
    ConfigRejection,
    ConfigSnapshot,
    ConfigValidationError,
    ConfigView,
    SyncConfigView,
)
from kvstore.client.errors import (
    ClientError,
    CompactedError,
    ConnectionFailedError,
    FutureRevisionError,
    LeaseExpiredError,
    LeaseNotFoundError,
    NoLeaderError,
    WatchCanceledError,
)
from kvstore.client.lease import Lease, ServiceRegistration
from kvstore.client.ops import Compare, Op, Txn, prefix_end
from kvstore.client.sync import Client
from kvstore.client.types import (
    Alarm,
    DeleteResult,
    Event,
    EventType,
    GetResult,
    HashKVResult,
    Header,
    KeyValue,
    LeaderKey,
    LeaseGrant,
    LeaseTimeToLive,
    LockKey,
    Member,
    PutResult,
    Status,
    TxnResult,
)
from kvstore.client.watch import Watcher

__all__ = [
    "Alarm", "AsyncClient", "Client", "ClientError", "ClientTLS", "CompactedError", "Compare",
    "ConfigRejection", "ConfigSnapshot", "ConfigValidationError", "ConfigView",
    "SyncConfigView",
    "ConnectionFailedError", "DeleteResult", "Election", "Event", "EventType",
    "FutureRevisionError", "GetResult", "HashKVResult", "Header", "KeyValue", "LeaderKey",
    "Lease", "LeaseExpiredError", "LeaseGrant", "LeaseNotFoundError", "LeaseTimeToLive",
    "Permission", "PermissionType",
    "Lock", "LockKey", "Member", "NoLeaderError", "Op", "PutResult", "ServiceRegistration",
    "Status", "Txn", "TxnResult", "WatchCanceledError", "Watcher", "errors", "prefix_end",
]  # fmt: skip
