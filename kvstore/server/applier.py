"""Applier: committed Raft entries -> MVCC / membership changes -> results.

Owns: decoding entry payloads (InternalRequest, ConfChange), running each one
against one MVCC apply batch, and recording the applied index (and the member
table when it changed) in that same batch, so that a crash either keeps the
whole batch or none of it and replay is exactly-once.
Never: reads the clock, randomness or per-node settings (apply must be
deterministic on every member); never touches Raft or the network.

The pipeline of one request, fixed at construction (server.assembly builds
it): decode -> permission stage (`ApplyAuth`, the caller named in the
entry checked against the auth revision it was admitted at; etcd's
authApplierV3) -> gate stages (the NOSPACE quota stage, `ApplyGate`) -> the
handler for its kind (`apply_handlers`: MVCC, lease and alarm operations) ->
result. An unhandled kind answers NOT_CAPABLE on every member alike.
Timings go to the `NodeObserver` given at construction (none: not timed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvstore import errors
from kvstore import failpoints as fp
from kvstore.auth.errors import AuthError
from kvstore.mvcc import MvccBatch, MvccStore
from kvstore.pb import internal_pb2, kv_pb2, rpc_pb2
from kvstore.raft.types import ConfChange, ConfChangeType, ConfState, Entry, EntryType
from kvstore.seams import ApplyAuth, ApplyGate, ApplyHandler, NodeObserver
from kvstore.server.membership import MEMBERS_META_KEY, Member, MemberTable
from kvstore.storage.codec import encode_u64

if TYPE_CHECKING:
    from kvstore.lease import Lessor
    from kvstore.maintenance.quota import AlarmTable

log = logging.getLogger(__name__)

APPLIED_INDEX_KEY = b"applied_index"
APPLIED_TERM_KEY = b"applied_term"


def _compact(batch: MvccBatch, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse:
    return batch.compact(req.revision)


def apply_handlers(
    *, lessor: Lessor | None = None, alarms: AlarmTable | None = None
) -> dict[str, ApplyHandler]:
    """THE table of apply handlers by InternalRequest kind: MVCC writes, plus
    lease operations when a lessor is given and alarms when a table is."""
    handlers: dict[str, ApplyHandler] = {
        "put": lambda b, r: b.put(r),
        "delete_range": lambda b, r: b.delete_range(r),
        "txn": lambda b, r: b.txn(r),
        "compaction": _compact,
    }
    if lessor is not None:
        handlers["lease_grant"] = lessor.apply_grant
        handlers["lease_revoke"] = lessor.apply_revoke
        handlers["lease_checkpoint"] = lessor.apply_checkpoint
    if alarms is not None:
        handlers["alarm"] = alarms.apply_alarm
    return handlers


@dataclass
class ApplyResult:
    applied_index: int = 0
    applied_term: int = 0
    # (request id, response message or EtcdError) for entries proposed with an id.
    results: list[tuple[int, Any]] = field(default_factory=list)
    # [(revision, [mvccpb.Event])] for the watch hub.
    events: list[tuple[int, list[kv_pb2.Event]]] = field(default_factory=list)
    members_changed: bool = False
    # Ids removed from the cluster in this batch (the transport drops them).
    removed: list[int] = field(default_factory=list)
    # The staged, not yet committed MVCC batch (see Applier.stage).
    batch: MvccBatch | None = None


def decode_member_context(data: bytes) -> Member | None:
    """ConfChange.context -> Member (internalpb.MemberContext), None if empty."""
    if not data:
        return None
    ctx = internal_pb2.MemberContext.FromString(data)
    return Member(
        id=ctx.member_id,
        name=ctx.name,
        peer_urls=list(ctx.peer_urls),
        is_learner=ctx.is_learner,
    )


def encode_member_context(member: Member) -> bytes:
    return internal_pb2.MemberContext(
        member_id=member.id,
        name=member.name,
        peer_urls=member.peer_urls,
        is_learner=member.is_learner,
    ).SerializeToString()


class Applier:
    """Applies batches of committed entries. Called only by the driver task."""

    def __init__(
        self,
        store: MvccStore,
        members: MemberTable,
        applied_index: int = 0,
        *,
        handlers: Mapping[str, ApplyHandler] | None = None,
        gates: Sequence[ApplyGate] = (),
        observer: NodeObserver | None = None,
        auth: ApplyAuth | None = None,
    ) -> None:
        """`auth`: the permission stage (None: no auth, as before)."""
        self._store = store
        self._members = members
        self._request_type = internal_pb2.InternalRequest
        self.applied_index = applied_index
        self._handlers: dict[str, ApplyHandler] = dict(
            handlers if handlers is not None else apply_handlers()
        )
        self._gates = tuple(gates)
        self._observer = observer
        self._auth = auth

    def conf_state(self) -> ConfState:
        """The configuration as of the applied index (for snapshot records):
        the member table changes only when conf-change entries are applied."""
        members = self._members.all()
        return ConfState(
            voters=tuple(m.id for m in members if not m.is_learner),
            learners=tuple(m.id for m in members if m.is_learner),
        )

    def restore(self, applied_index: int) -> None:
        """The state was replaced by a snapshot taken at `applied_index`."""
        self.applied_index = applied_index

    def apply(self, entries: list[Entry]) -> ApplyResult:
        """Apply `entries` (ascending, contiguous) in one MVCC batch and commit it."""
        return self.commit(self.stage(entries))

    def stage(self, entries: list[Entry]) -> ApplyResult:
        """Run `entries` against a new MVCC batch without writing it yet.

        The driver stages while its Raft write is in flight and commits after
        (RocksDB serializes writes, so committing earlier would block the loop
        on the fsync). Until `commit`, results must not be handed out."""
        fp.ON and fp.hit("apply_before_batch")
        result = ApplyResult(applied_index=self.applied_index)
        todo = [e for e in entries if e.index > self.applied_index]
        if not todo:
            return result
        observer = self._observer
        t0 = time.perf_counter() if observer is not None else 0.0
        batch = self._store.begin_batch()
        for entry in todo:
            if entry.type == EntryType.CONF_CHANGE:
                self._apply_conf_change(entry, result)
            elif entry.data:
                self._apply_request(batch, entry, result)
            result.applied_index = entry.index
            result.applied_term = entry.term
        batch.set_meta(APPLIED_INDEX_KEY, encode_u64(result.applied_index))
        batch.set_meta(APPLIED_TERM_KEY, encode_u64(result.applied_term))
        if result.members_changed:
            batch.set_meta(MEMBERS_META_KEY, self._members.encode())
        result.batch = batch
        # Later batches start after this one even before it is committed.
        self.applied_index = result.applied_index
        if observer is not None:
            observer.observe_apply(time.perf_counter() - t0)
        return result

    def commit(self, result: ApplyResult) -> ApplyResult:
        """Write a staged batch (one unsynced WriteBatch; the Raft log is the
        durable record) and fill `result.events`."""
        batch = result.batch
        if batch is None:
            return result
        fp.ON and fp.hit("apply_before_commit")
        observer = self._observer
        if observer is None:
            result.events = batch.commit(sync=False) or []
        else:
            t0 = time.perf_counter()
            result.events = batch.commit(sync=False) or []
            observer.observe_backend_commit(time.perf_counter() - t0)
        fp.ON and fp.hit("apply_after_commit")
        result.batch = None
        return result

    def _apply_request(self, batch: MvccBatch, entry: Entry, result: ApplyResult) -> None:
        try:
            req = self._request_type.FromString(entry.data)
        except Exception:  # noqa: BLE001 - a garbage entry must not stop the node
            log.error("skipping undecodable entry at index %d", entry.index)
            return
        kind = req.WhichOneof("request")
        if kind == "member_attributes":
            attrs = req.member_attributes
            self._members.set_attributes(attrs.member_id, attrs.name, list(attrs.client_urls))
            result.members_changed = True
            if req.id:
                result.results.append((req.id, None))
            return
        handler = self._handlers.get(kind or "")
        outcome: Any
        if handler is None or kind is None:
            outcome = errors.NOT_CAPABLE()
        else:
            request = getattr(req, kind)
            try:
                if self._auth is not None:
                    self._auth.check(req.username, req.auth_revision, kind, request)
                for gate in self._gates:
                    gate.admit(kind, request)
                outcome = handler(batch, request)
            except (errors.EtcdError, AuthError) as exc:
                # An auth refusal is a result like any other: the proposer
                # re-raises it (and retries on AuthOldRevision).
                outcome = exc
        if req.id:
            result.results.append((req.id, outcome))

    def _apply_conf_change(self, entry: Entry, result: ApplyResult) -> None:
        try:
            cc = ConfChange.decode(entry.data)
        except Exception:  # noqa: BLE001
            log.error("skipping undecodable conf change at index %d", entry.index)
            return
        member = decode_member_context(cc.context) or Member(id=cc.node_id)
        member.id = cc.node_id
        if cc.type == ConfChangeType.REMOVE_NODE:
            self._members.remove(cc.node_id)
            result.removed.append(cc.node_id)
        else:
            if cc.type == ConfChangeType.UPDATE_NODE:  # new peer URLs, same role
                current = self._members.get(cc.node_id)
                member.is_learner = current.is_learner if current is not None else False
            else:
                member.is_learner = cc.type == ConfChangeType.ADD_LEARNER_NODE
            self._members.upsert(member)
        result.members_changed = True
        log.info("applied conf change %s for member %x", cc.type.name, cc.node_id)
