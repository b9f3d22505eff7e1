"""The seams of a node: every interface one package offers another, in one place.

Owns: the `typing.Protocol`s that constructors take where one component is
handed another (built by kvstore.server.assembly, the composition root), so
a reader sees what each part may call and a test fake knows what to offer.
Never: holds behaviour or state, or imports anything above raft/ and pb/
(every layer may import it; it imports no layer that could import it back).

The seams, by who calls whom:

  api/ servicers ──KvFacade──────────► server.kv_server.KvServer
  api/ servicers ──LeaseFacade───────► lease.service.LeaseService
  NodeDriver ──────RaftNode──────────► raft.core.RaftCore
  NodeDriver ──────DurableLog────────► storage.raft_log.RocksLogStorage (LogStorage + writes)
  NodeDriver ──────StateMachine──────► server.applier.Applier
  NodeDriver ──────Transport─────────► transport.GrpcTransport
  NodeDriver ──────SnapshotInstaller─► maintenance.snapshot_install.SnapshotInstaller
  Applier ─────────ApplyGate─────────► maintenance.quota.AlarmTable (NOSPACE stage)
  Applier ─────────ApplyHandler──────► mvcc batch ops, lease and alarm apply functions
  facades ─────────Proposer──────────► server.proposer.Proposer (propose via Raft, header)
  driver, applier ─NodeObserver──────► server.metrics.NodeMetrics (timings)
  leader leases ───Clock─────────────► lease.clock.MonotonicClock / FakeClock
  LeaseService ────LeaseForwarder────► transport.forward.LeaseForwarding (follower -> leader)
  LeaderResolver ──MemberDirectory───► server.membership.MemberTable (leader's client URL)
  SnapshotSender ──SnapshotSource────► maintenance.snapshot_install.BackupSnapshotSource
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from kvstore.raft.storage import LogStorage
from kvstore.raft.types import (
    ConfChange,
    ConfState,
    Entry,
    HardState,
    Message,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
)

if TYPE_CHECKING:
    from kvstore.pb import rpc_pb2

__all__ = [
    "ApplyGate",
    "ApplyHandler",
    "Clock",
    "DurableLog",
    "KvFacade",
    "LeaseFacade",
    "LeaseForwarder",
    "LogStorage",
    "MemberDirectory",
    "MemberUrls",
    "MessageSink",
    "NodeObserver",
    "Proposer",
    "RaftNode",
    "RpcMetrics",
    "SnapshotInstaller",
    "SnapshotSource",
    "StateMachine",
    "Transport",
    "WatchHook",
]

# fn(mvcc batch, request message) -> response message (may raise EtcdError).
ApplyHandler = Callable[[Any, Any], Any]
# fn([(revision, [mvccpb.Event])]) after each applied batch.
WatchHook = Callable[[list[tuple[int, list[Any]]]], None]


class Clock(Protocol):
    """Seconds from an arbitrary origin, never going back (leader-side only)."""

    def now(self) -> float: ...


class RaftNode(Protocol):
    """What the driver calls on the pure Raft core (kvstore.raft.core.RaftCore)."""

    @property
    def leader_id(self) -> int: ...
    @property
    def term(self) -> int: ...
    @property
    def role(self) -> Role: ...
    @property
    def last_index(self) -> int: ...
    @property
    def conf_state(self) -> ConfState: ...

    def tick(self) -> None: ...
    def step(self, m: Message) -> None: ...
    def campaign(self) -> None: ...
    def propose_conf_change(self, cc: ConfChange) -> None: ...
    def read_index(self, ctx: bytes) -> None: ...
    def transfer_leadership(self, target_id: int) -> None: ...
    def report_unreachable(self, node_id: int) -> None: ...
    def has_ready(self) -> bool: ...
    def ready(self) -> Ready: ...
    def advance(self, rd: Ready) -> None: ...
    def status(self) -> Any: ...


class DurableLog(LogStorage, Protocol):
    """The Raft log as the driver writes it (raft's LogStorage + the writes)."""

    @property
    def hard_state(self) -> HardState: ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool = True,
    ) -> None: ...

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot: ...

    def compact(self, index: int) -> None: ...


class StateMachine(Protocol):
    """Committed entries in, results out (server.applier.Applier)."""

    applied_index: int

    def stage(self, entries: list[Entry]) -> Any: ...
    def commit(self, result: Any) -> Any: ...
    def apply(self, entries: list[Entry]) -> Any: ...
    def conf_state(self) -> ConfState: ...
    def restore(self, applied_index: int) -> None:
        """The state was replaced by a snapshot at `applied_index`."""
        ...


class ApplyGate(Protocol):
    """An apply-pipeline stage run before a request's handler: raise an
    EtcdError to refuse it on every member alike (deterministic)."""

    def admit(self, kind: str, request: Any) -> None: ...


class ApplyAuth(Protocol):
    """The apply pipeline's permission stage (kvstore.server.auth_wiring):
    run before the gates and the handler of every request, with the user name
    and auth revision the request was proposed with. Raises the auth domain
    error (kvstore.auth.errors.AuthError) that becomes the entry's result on
    every member alike; returns at once while auth is disabled."""

    def check(self, username: str, revision: int, kind: str, request: Any) -> None: ...


class MessageSink(Protocol):
    """Where the driver sends Raft messages (the Transport, or a test loopback)."""

    def send(self, messages: list[Message]) -> None: ...


class Transport(MessageSink, Protocol):
    """Raft messages to and from the other members (kvstore.transport)."""

    def set_peers(self, peers: Mapping[int, str]) -> None: ...
    def set_removed(self, ids: Iterable[int]) -> None: ...
    def peers(self) -> dict[int, str]: ...
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


class SnapshotInstaller(Protocol):
    """Swaps the state machine for a leader's snapshot (driver task, on the loop)."""

    def install(
        self, snapshot: Snapshot, hard_state: HardState | None, current: HardState
    ) -> None: ...


class SnapshotSource(Protocol):
    """The state side of sending a snapshot: writes the current state as one
    file (transport.snapshot_send.SnapshotSender streams it)."""

    async def write(self, path: Path) -> tuple[SnapshotMetadata, int]:
        """Write one consistent view of the state to `path` (off the loop);
        -> (the index, term and membership it holds, its size in bytes)."""
        ...

    async def drain(self) -> None:
        """Wait for writes still running in worker threads (before the
        backend closes: cancelling an awaiting task does not stop a thread)."""
        ...


class MemberUrls(Protocol):
    """A member as the leader resolver reads it."""

    @property
    def client_urls(self) -> Sequence[str]: ...


class MemberDirectory(Protocol):
    """Member id -> member (server.membership.MemberTable), for
    transport.forward.LeaderResolver."""

    def get(self, member_id: int) -> MemberUrls | None: ...


class LeaseForwarder(Protocol):
    """A follower's way to the leader's lease calls (transport.forward.LeaseForwarding).

    Both raise errors.EtcdError: the leader's own error, or a retryable one
    (no leader, leader changed, timed out) when the leader was not reached."""

    async def keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse: ...

    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse: ...


class NodeObserver(Protocol):
    """Write-path timings (server.metrics.NodeMetrics); each call must be cheap."""

    def observe_wal_fsync(self, seconds: float) -> None: ...
    def observe_apply(self, seconds: float) -> None: ...
    def observe_backend_commit(self, seconds: float) -> None: ...


class RpcMetrics(Protocol):
    """Per-RPC counting (server.metrics.NodeMetrics: its `grpc` GrpcStats)."""

    @property
    def grpc(self) -> Any: ...


class Proposer(Protocol):
    """Propose through Raft and stamp headers (server.proposer.Proposer)."""

    member_id: int
    cluster_id: int

    @property
    def store(self) -> Any: ...

    async def propose(self, kind: str, request: Any) -> Any: ...
    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader: ...


class LeaseFacade(Protocol):
    """All that api/ calls on the lease side (lease.service.LeaseService)."""

    async def grant(self, req: rpc_pb2.LeaseGrantRequest) -> rpc_pb2.LeaseGrantResponse: ...
    async def revoke(self, req: rpc_pb2.LeaseRevokeRequest) -> rpc_pb2.LeaseRevokeResponse: ...
    async def keepalive(self, lease_id: int) -> rpc_pb2.LeaseKeepAliveResponse: ...
    async def time_to_live(
        self, req: rpc_pb2.LeaseTimeToLiveRequest
    ) -> rpc_pb2.LeaseTimeToLiveResponse: ...
    def leases(
        self, req: rpc_pb2.LeaseLeasesRequest | None = None
    ) -> rpc_pb2.LeaseLeasesResponse: ...


class KvFacade(Protocol):
    """All that api/ may call on a node (server.kv_server.KvServer).

    Every method may raise `kvstore.errors.EtcdError`."""

    member_id: int
    cluster_id: int

    def header(self, revision: int | None = None) -> rpc_pb2.ResponseHeader: ...
    async def propose(self, kind: str, request: Any) -> Any: ...
    async def read_barrier(self) -> None: ...

    async def range(self, req: rpc_pb2.RangeRequest) -> rpc_pb2.RangeResponse: ...
    async def put(self, req: rpc_pb2.PutRequest) -> rpc_pb2.PutResponse: ...
    async def delete_range(
        self, req: rpc_pb2.DeleteRangeRequest
    ) -> rpc_pb2.DeleteRangeResponse: ...
    async def txn(self, req: rpc_pb2.TxnRequest) -> rpc_pb2.TxnResponse: ...
    async def compact(self, req: rpc_pb2.CompactionRequest) -> rpc_pb2.CompactionResponse: ...

    def status(self) -> rpc_pb2.StatusResponse: ...
    def member_list(self) -> rpc_pb2.MemberListResponse: ...
    async def member_add(self, req: rpc_pb2.MemberAddRequest) -> rpc_pb2.MemberAddResponse: ...
    async def member_remove(
        self, req: rpc_pb2.MemberRemoveRequest
    ) -> rpc_pb2.MemberRemoveResponse: ...
    async def member_update(
        self, req: rpc_pb2.MemberUpdateRequest
    ) -> rpc_pb2.MemberUpdateResponse: ...
    async def member_promote(
        self, req: rpc_pb2.MemberPromoteRequest
    ) -> rpc_pb2.MemberPromoteResponse: ...
    async def move_leader(self, req: rpc_pb2.MoveLeaderRequest) -> rpc_pb2.MoveLeaderResponse: ...

    async def alarm(self, req: rpc_pb2.AlarmRequest) -> rpc_pb2.AlarmResponse: ...
    async def defragment(self, req: rpc_pb2.DefragmentRequest) -> rpc_pb2.DefragmentResponse: ...
    def hash_kv(self, req: rpc_pb2.HashKVRequest) -> rpc_pb2.HashKVResponse: ...
    async def hash(self, req: rpc_pb2.HashRequest) -> rpc_pb2.HashResponse: ...
    def snapshot(self, req: rpc_pb2.SnapshotRequest) -> AsyncIterator[rpc_pb2.SnapshotResponse]: ...

    def leader_endpoint(self) -> str | None: ...

    @property
    def election_timeout_s(self) -> float: ...
    @property
    def is_leader(self) -> bool: ...
    @property
    def has_leader(self) -> bool: ...

    # Parts the coordination servicers use (None: that API is off).
    @property
    def watch_hub(self) -> Any: ...
    @property
    def leases(self) -> LeaseFacade | None: ...
    # Counts RPCs when the api registers servicers (None: not counted).
    @property
    def metrics(self) -> RpcMetrics | None: ...
