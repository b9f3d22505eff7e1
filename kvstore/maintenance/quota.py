"""Space quota and alarms (etcd's `--quota-backend-bytes`, NOSPACE, Alarm RPC).

Owns:
- `AlarmTable`: the cluster's active alarms {(member id, AlarmType)}, changed
  only by applying `InternalRequest.alarm` entries (`apply_alarm`, registered
  as the applier's "alarm" handler) and persisted in `meta[b"alarms"]` in the
  same apply batch, so every member agrees and restarts keep it;
- `AlarmTable.admit(kind, request)`: the NOSPACE stage of the apply
  pipeline (a `seams.ApplyGate` the Applier runs before each handler): while
  NOSPACE is active, space-consuming writes are refused at APPLY time with
  NO_SPACE on every member alike (etcd's applierV3Capped): Range,
  DeleteRange, Compact and txns that do not put still pass;
- `QuotaGuard`: the request-time check (etcd's quotaKVServer): a write that
  would push the backend past the quota raises NO_SPACE and asks (once) for
  a NOSPACE alarm to be proposed through Raft.
Never: raises alarms by itself at apply time (apply must be deterministic;
the db size is not), reads the clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import cast

from google.protobuf.message import Message

from kvstore import errors
from kvstore.mvcc import MvccBatch
from kvstore.mvcc.txn_ops import txn_puts
from kvstore.pb import rpc_pb2
from kvstore.pb.rpc_pb2 import TxnRequest
from kvstore.storage.backend import Backend

ALARMS_META_KEY = b"alarms"
DEFAULT_QUOTA_BYTES = 2 * 1024 * 1024 * 1024  # etcd: 0 means the 2 GiB default
MAX_QUOTA_BYTES = 8 * 1024 * 1024 * 1024
NONE, NOSPACE, CORRUPT = 0, 1, 2
_ALARM_NAMES = {NOSPACE: "NOSPACE", CORRUPT: "CORRUPT"}
# Request kinds that consume space whatever their content (txn: only if it puts).
_SPACE_KINDS = frozenset(("put", "lease_grant"))


def effective_quota(quota_bytes: int) -> int:
    """etcd: 0 -> default 2 GiB; negative -> disabled (returned as 0)."""
    if quota_bytes < 0:
        return 0
    return quota_bytes or DEFAULT_QUOTA_BYTES


class AlarmTable:
    """Active alarms; mutated only by `apply_alarm` (the apply path)."""

    def __init__(self, alarms: set[tuple[int, int]] | None = None) -> None:
        self._alarms: set[tuple[int, int]] = set(alarms or ())
        self._nospace = self.has(NOSPACE)  # read by admit() on every write

    @classmethod
    def load(cls, backend: Backend) -> AlarmTable:
        raw = backend.get("meta", ALARMS_META_KEY)
        return cls.decode(bytes(raw)) if raw else cls()

    def reload(self, backend: Backend) -> None:
        """Re-read after a snapshot install replaced the state."""
        self._alarms = AlarmTable.load(backend)._alarms
        self._nospace = self.has(NOSPACE)

    def admit(self, kind: str, request: Message) -> None:
        """Apply-pipeline stage: NO_SPACE for a space-consuming write while
        NOSPACE is raised (etcd's applierV3Capped)."""
        if self._nospace and (
            kind in _SPACE_KINDS or (kind == "txn" and txn_puts(cast(TxnRequest, request)))
        ):
            raise errors.NO_SPACE()

    def encode(self) -> bytes:
        return json.dumps(sorted([list(a) for a in self._alarms])).encode()

    @classmethod
    def decode(cls, raw: bytes) -> AlarmTable:
        return cls({(int(m), int(a)) for m, a in json.loads(raw)})

    def active(self, alarm: int | None = None) -> list[tuple[int, int]]:
        return sorted(a for a in self._alarms if alarm is None or a[1] == alarm)

    def has(self, alarm: int) -> bool:
        return any(a == alarm for _, a in self._alarms)

    def status_errors(self) -> list[str]:
        """StatusResponse.errors strings, as etcd formats them."""
        return [f"memberID:{m} alarm:{_ALARM_NAMES.get(a, str(a))} " for m, a in self.active()]

    def apply_alarm(self, batch: MvccBatch, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse:
        """Applier handler for InternalRequest.alarm -> AlarmResponse."""
        resp = rpc_pb2.AlarmResponse()
        action = req.action
        if action == rpc_pb2.AlarmRequest.GET:
            for m, a in self.active():
                resp.alarms.add(memberID=m, alarm=a)
            return resp
        entry = (int(req.memberID), int(req.alarm))
        if action == rpc_pb2.AlarmRequest.ACTIVATE:
            if req.alarm == NONE:
                return resp
            if entry not in self._alarms:
                self._alarms.add(entry)
                self._nospace = self.has(NOSPACE)
                batch.set_meta(ALARMS_META_KEY, self.encode())
            resp.alarms.add(memberID=entry[0], alarm=entry[1])
        elif action == rpc_pb2.AlarmRequest.DEACTIVATE and entry in self._alarms:
            self._alarms.discard(entry)
            self._nospace = self.has(NOSPACE)
            batch.set_meta(ALARMS_META_KEY, self.encode())
            resp.alarms.add(memberID=entry[0], alarm=entry[1])
        return resp


class QuotaGuard:
    """Request-time quota check; `quota_bytes` <= 0 disables it."""

    def __init__(
        self,
        quota_bytes: int,
        db_size: Callable[[], int],
        table: AlarmTable,
        *,
        grow: Callable[[int], None] | None = None,
    ) -> None:
        self.quota_bytes = quota_bytes
        self._db_size = db_size
        self._table = table
        # Told each admitted write's cost (a cached size counts it until its
        # next real reading); None: the size reading is always fresh.
        self._grow = grow or _ignore

    def exceeded(self, cost: int) -> bool:
        if self.quota_bytes <= 0:
            return False
        return self._db_size() + cost > self.quota_bytes

    def check(self, kind: str, req: Message) -> bool:
        """Raise NO_SPACE if a `kind` write must be refused; return True when a
        NOSPACE alarm should be proposed first (quota newly exceeded)."""
        if kind == "txn" and not txn_puts(cast(TxnRequest, req)):
            return False
        if kind not in ("put", "txn", "lease_grant"):
            return False
        if self._table.has(NOSPACE):
            raise errors.NO_SPACE()
        cost = request_cost(kind, req)
        if self.exceeded(cost):
            return True
        self._grow(cost)  # admitted: count it until the next real size reading
        return False


def request_cost(kind: str, req: Message) -> int:
    """etcd's cost estimate: encoded size plus a per-key overhead."""
    overhead = 256 + 24
    return req.ByteSize() + overhead if kind != "lease_grant" else overhead


def _ignore(nbytes: int) -> None:
    return None
