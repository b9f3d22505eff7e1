"""NodeDriver: the one task that owns the Raft core.

Owns: the tick timer, the inbox of peer messages, queued proposals and read
requests, and the Ready hand-off in the order etcd-io/raft's doc.go gives:

    send rd.messages           (leader appends leave before its own fsync,
                                so leader and follower fsyncs overlap)
    persist snapshot+entries+hard state in ONE synced write (group commit)
    send rd.messages_after_persist   (votes / acks promise durable state)
    apply committed entries in ONE MVCC batch (records the applied index)
    resolve proposal futures, publish events, serve read states
    advance

Never: lets any other task call the core; never blocks the loop on fsync
(the storage write runs on a dedicated writer thread so gRPC keeps accepting
requests); never reads the clock outside this module (tests inject `clock`).

Invariants: every input queued before an iteration is fed to the core in that
iteration (many proposals per Ready); at most one ReadIndex request is issued
per iteration for all reads waiting at that moment (§6.4 read index, batched).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kvstore import errors
from kvstore.raft.core import Status
from kvstore.raft.errors import ProposalDropped
from kvstore.raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Ready,
    Role,
    Snapshot,
)
from kvstore.seams import (
    DurableLog,
    MessageSink,
    NodeObserver,
    RaftNode,
    SnapshotInstaller,
    WatchHook,
)
from kvstore.server.applier import Applier, ApplyResult
from kvstore.server.waiters import AppliedIndexWaiter, ProposalWaiters
from kvstore.server.writer_thread import WriterThread

log = logging.getLogger(__name__)

# Retry a ReadIndex that got no answer (lost to a leader change) after this long.
READ_INDEX_RETRY_S = 0.5
# Above this many committed-but-unapplied entries or pending proposals, new
# proposals are refused with "too many requests" (etcd: 5000 entries).
MAX_APPLY_BACKLOG = 5000
MAX_PENDING_PROPOSALS = 20000


class SnapshotNotSupported(RuntimeError):
    """The leader sent a snapshot and no installer is configured."""


LeadershipListener = Callable[[bool, int, int], None]


@dataclass
class _ReadBatch:
    futures: list[asyncio.Future[None]]
    deadline: float
    retry_at: float
    ctx: bytes = b""


@dataclass
class DriverStats:
    proposals_committed: int = 0
    proposals_failed: int = 0
    ready_batches: int = 0
    entries_persisted: int = 0
    entries_applied: int = 0
    leader_changes: int = 0


class NodeDriver:
    """Runs the Raft core. Public methods are called from any task on the loop;
    only the driver task (`_run`) touches the core and writes storage."""

    def __init__(
        self,
        core: RaftNode,
        log_storage: DurableLog,
        applier: Applier,
        transport: MessageSink,
        *,
        member_id: int,
        tick_interval_s: float,
        election_timeout_s: float,
        request_timeout_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        watch_hook: WatchHook | None = None,
        on_apply: Callable[[ApplyResult], None] | None = None,
        persist_in_thread: bool = True,
        snapshot_count: int = 100_000,
        snapshot_installer: SnapshotInstaller | None = None,
        leadership_listeners: Sequence[LeadershipListener] = (),
        observer: NodeObserver | None = None,
    ) -> None:
        self._core = core
        self._storage = log_storage
        self._applier = applier
        self._transport = transport
        self.member_id = member_id
        self._tick_s = tick_interval_s
        self.election_timeout_s = election_timeout_s
        self.request_timeout_s = request_timeout_s or (5.0 + 2 * election_timeout_s)
        self._clock = clock
        self.watch_hook = watch_hook
        self._on_apply = on_apply
        self._persist_in_thread = persist_in_thread
        self._snapshot_count = max(1, snapshot_count)
        self._observer = observer
        self._snapshot_index = log_storage.snapshot().metadata.index

        # Called as fn(is_leader, leader_id, term) whenever leadership changes.
        # Must not block.
        self.leadership_listeners: list[LeadershipListener] = list(leadership_listeners)
        # Installs a leader's snapshot (state machine + raft log start)
        # atomically, then calls on_snapshot_installed(). Without one a needed
        # snapshot stops the node.
        self._installer = snapshot_installer
        self.waiters = ProposalWaiters(member_id, seed=int(time.time() * 1000))
        self.applied_waiter = AppliedIndexWaiter(applier.applied_index)
        self.stats = DriverStats()

        # Observable state (read by KvServer; written only by the driver task).
        self.leader_id: int = core.leader_id
        self.term: int = core.term
        self.role: Role = core.role
        self.commit_index: int = applier.applied_index
        self.applied_index: int = applier.applied_index
        self.last_leader_change: float = clock()
        self.stopped = False

        # Inputs: plain lists swapped out whole by the driver each iteration.
        self._inbox: list[Message] = []
        self._proposals: list[tuple[bytes, int]] = []
        self._conf_changes: list[tuple[ConfChange, asyncio.Future[int]]] = []
        self._reads: list[asyncio.Future[None]] = []
        self._ticks_due = 0
        # Proposal deadlines in submission order (constant timeout => sorted).
        self._deadlines: collections.deque[tuple[float, int]] = collections.deque()
        self._read_batches: dict[bytes, _ReadBatch] = {}
        self._parked_reads: list[tuple[int, int, list[asyncio.Future[None]]]] = []
        self._read_seq = itertools.count(1)
        self._park_seq = itertools.count()

        self._wake = asyncio.Event()
        self._leader_known = asyncio.Event()
        if self.leader_id != NONE:
            self._leader_known.set()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._writer = WriterThread(f"raft-writer-{member_id:x}")

    # ------------------------------------------------------------------ inputs
    def deliver(self, messages: list[Message]) -> None:
        """Transport callback: queue peer messages for the core."""
        if self.stopped:
            return
        self._inbox.extend(messages)
        self._wake.set()

    def report_unreachable(self, peer_id: int) -> None:
        self._inbox.append(_Unreachable(peer_id))  # type: ignore[arg-type]
        self._wake.set()

    async def wait_leader(self, timeout_s: float | None = None) -> None:
        """Return once a leader is known; NO_LEADER after `timeout_s` (default:
        two election timeouts, enough for an election or for a restarted member
        to hear from its leader) and STOPPED if the node stops meanwhile."""
        if self.leader_id != NONE:
            return
        if self.stopped:
            raise errors.STOPPED()
        timeout = 2 * self.election_timeout_s if timeout_s is None else timeout_s
        try:
            await asyncio.wait_for(self._leader_known.wait(), timeout)
        except TimeoutError:
            raise errors.NO_LEADER() from None
        if self.stopped:
            raise errors.STOPPED()

    def check_can_propose(self) -> None:
        """Raise the etcd error a new proposal would get right now, if any."""
        if self.stopped:
            raise errors.STOPPED()
        if self.leader_id == NONE:
            raise errors.NO_LEADER()
        if (
            self.commit_index - self.applied_index > MAX_APPLY_BACKLOG
            or len(self.waiters) > MAX_PENDING_PROPOSALS
        ):
            raise errors.TOO_MANY_REQUESTS()

    def propose(self, data_for_id: Callable[[int], bytes]) -> asyncio.Future[Any]:
        """Queue a proposal; `data_for_id(request_id)` builds the entry payload.

        The returned future resolves with the apply result (or its EtcdError),
        or fails with NO_LEADER / TIMEOUT* / STOPPED."""
        self.check_can_propose()
        rid = self.waiters.next_id()
        fut = self.waiters.register(rid)
        self._proposals.append((data_for_id(rid), rid))
        self._deadlines.append((self._clock() + self.request_timeout_s, rid))
        self._wake.set()
        return fut

    def propose_conf_change(self, cc: ConfChange) -> asyncio.Future[int]:
        """Queue a membership change; resolves with the log index the leader
        appended it at (wait for applied >= that index), or fails with the
        core's ProposalDropped (NotLeader, NoLeader, ConfChangeInProgress)."""
        if self.stopped:
            raise errors.STOPPED()
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._conf_changes.append((cc, fut))
        self._wake.set()
        return fut

    def read_barrier(self) -> asyncio.Future[None]:
        """Linearizable read barrier: resolves once this node has applied
        everything committed before the call (batched ReadIndex)."""
        if self.stopped:
            raise errors.STOPPED()
        if self.leader_id == NONE:
            raise errors.NO_LEADER()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reads.append(fut)
        self._wake.set()
        return fut

    def wait_applied(self, index: int) -> asyncio.Future[None]:
        return self.applied_waiter.wait(index)

    def campaign(self) -> None:
        self._inbox.append(_Campaign())  # type: ignore[arg-type]
        self._wake.set()

    def transfer_leadership(self, target_id: int) -> None:
        self._inbox.append(_Transfer(target_id))  # type: ignore[arg-type]
        self._wake.set()

    def raft_status(self) -> Status:
        return self._core.status()

    def on_snapshot_installed(self, index: int) -> None:
        """The state machine now holds a leader's snapshot at `index` (called by
        the installer, in the driver task, between apply batches)."""
        self.applied_index = index
        self.commit_index = max(self.commit_index, index)
        self.applied_waiter.advance(index)
        self._snapshot_index = index  # log compaction counts from here

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._tick_s, self._on_tick)
        self._task = asyncio.create_task(self._run(), name=f"raft-driver-{self.member_id:x}")

    async def stop(self) -> None:
        """Stop the loop after the current iteration; fail everything pending."""
        self.stopped = True
        self._leader_known.set()  # wake wait_leader() callers; they see `stopped`
        if self._timer is not None:
            self._timer.cancel()
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            except Exception:  # noqa: BLE001 - already logged by _run
                pass
        self._writer.stop()
        self._fail_pending(errors.STOPPED())

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def _on_tick(self) -> None:
        self._ticks_due += 1
        self._wake.set()
        if not self.stopped:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._tick_s, self._on_tick)

    # ----------------------------------------------------------------- the loop
    async def _run(self) -> None:
        try:
            while not self.stopped:
                await self._wake.wait()
                self._wake.clear()
                if self.stopped:
                    break
                self._feed_inputs()
                while self._core.has_ready() and not self.stopped:
                    await self._handle_ready(self._core.ready())
                    if self._wake.is_set() and not self.stopped:
                        # Feed what arrived during that Ready (its fsync) now, so
                        # a commit that `advance` just moved leaves with the new
                        # entries in ONE append per follower, not as an extra
                        # commit-only append followed by another Ready.
                        self._wake.clear()
                        self._feed_inputs()
        except Exception:
            log.exception("raft driver crashed; stopping the node")
            self.stopped = True
            self._fail_pending(errors.STOPPED())
            raise

    def _feed_inputs(self) -> None:
        core = self._core
        ticks, self._ticks_due = self._ticks_due, 0
        for _ in range(min(ticks, 10)):  # a stalled loop must not fire 100 ticks at once
            core.tick()
        if ticks:
            self._expire(self._clock())

        inbox, self._inbox = self._inbox, []
        for msg in inbox:
            try:
                if isinstance(msg, _Local):
                    msg.run(core)
                else:
                    core.step(msg)
            except Exception as exc:  # noqa: BLE001 - one bad message must not kill the node
                log.warning("dropping message %s: %s", getattr(msg, "type", msg), exc)

        if self._proposals:
            proposals, self._proposals = self._proposals, []
            if core.leader_id == NONE:
                for _, rid in proposals:
                    self.waiters.fail(rid, errors.NO_LEADER())
                self.stats.proposals_failed += len(proposals)
            else:
                # One MsgProp for everything queued: the leader appends it as one
                # batch and a follower forwards it as ONE message (not one each).
                ents = tuple(Entry(0, 0, EntryType.NORMAL, data) for data, _ in proposals)
                core.step(Message(MessageType.PROP, sender=self.member_id, entries=ents))

        changes, self._conf_changes = self._conf_changes, []
        for cc, fut in changes:
            try:
                core.propose_conf_change(cc)
                if not fut.done():
                    fut.set_result(core.last_index)
            except ProposalDropped as exc:
                if not fut.done():
                    fut.set_exception(exc)

        # One ReadIndex round in flight at a time (etcd's linearizableReadLoop):
        # reads arriving meanwhile wait and share the next round, so the cost of
        # a round (heartbeats to a quorum) is spread over many reads.
        if self._reads and not self._read_batches:
            reads, self._reads = self._reads, []
            now = self._clock()
            batch = _ReadBatch(
                reads, deadline=now + self.request_timeout_s, retry_at=now + READ_INDEX_RETRY_S
            )
            self._issue_read_index(batch)

    def _issue_read_index(self, batch: _ReadBatch) -> None:
        ctx = next(self._read_seq).to_bytes(8, "big")
        if batch.ctx:
            self._read_batches.pop(batch.ctx, None)
        batch.ctx = ctx
        try:
            self._core.read_index(ctx)
        except ProposalDropped:
            _fail_futures(batch.futures, errors.NO_LEADER())
            return
        self._read_batches[ctx] = batch

    def _expire(self, now: float) -> None:
        """Fail proposals and reads whose deadline passed; retry lost ReadIndexes."""
        dq = self._deadlines
        recent_leader_change = now - self.last_leader_change < self.request_timeout_s
        while dq and dq[0][0] <= now:
            _, rid = dq.popleft()
            exc = errors.TIMEOUT_DUE_TO_LEADER_FAIL() if recent_leader_change else errors.TIMEOUT()
            before = len(self.waiters)
            self.waiters.fail(rid, exc)
            if len(self.waiters) < before:
                self.stats.proposals_failed += 1
        # Drop deadlines of proposals already resolved so the deque stays small.
        if len(dq) > 4 * max(1, len(self.waiters)) + 64:
            live = self.waiters
            self._deadlines = collections.deque(d for d in dq if live.has(d[1]))
        for batch in list(self._read_batches.values()):
            if batch.deadline <= now:
                self._read_batches.pop(batch.ctx, None)
                _fail_futures(batch.futures, errors.TIMEOUT())
            elif batch.retry_at <= now:
                batch.retry_at = now + READ_INDEX_RETRY_S
                if self.leader_id != NONE:
                    # Lost (e.g. to a leader change): retry, taking the waiting
                    # reads along (a newer read index serves them all).
                    batch.futures.extend(self._reads)
                    self._reads = []
                    self._issue_read_index(batch)

    async def _handle_ready(self, rd: Ready) -> None:
        core = self._core
        self.stats.ready_batches += 1
        if rd.soft_state is not None:
            self._on_soft_state(rd.soft_state.leader_id, rd.soft_state.role)
        if rd.hard_state is not None:
            self.term = rd.hard_state.term
            self.commit_index = max(self.commit_index, rd.hard_state.commit)

        if rd.messages:
            self._transport.send(rd.messages)

        snapshot = rd.snapshot if rd.snapshot is not None and not rd.snapshot.is_empty else None
        if snapshot is not None and self._installer is not None:
            # Swap the state machine (and the raft log start) atomically first;
            # the save below then brings the log storage's memory in line.
            self._installer.install(snapshot, rd.hard_state, self._storage.hard_state)
        elif snapshot is not None:
            # Persisting it would reset our log and claim state we do not have:
            # stop the node instead of silently diverging.
            raise SnapshotNotSupported(
                f"member {self.member_id:x} needs a raft snapshot at index "
                f"{snapshot.metadata.index} (it fell behind the leader's compacted log); "
                "no snapshot installer is configured: remove the member, wipe its data "
                "dir and add it again"
            )
        committed = rd.committed_entries
        # Committed entries that were already durable here before this Ready are
        # applied while this Ready's own write is in flight (CPU work overlaps
        # the fsync); the rest wait until the write is done, so the applied index
        # never runs ahead of the local log (exactly-once replay after a crash).
        early: list[Entry] = []
        staged_entries = 0
        if committed and snapshot is None:
            first_new = rd.entries[0].index if rd.entries else None
            if first_new is None or committed[-1].index < first_new:
                early, committed = committed, []
            elif committed[0].index < first_new:
                cut = first_new - committed[0].index
                early, committed = committed[:cut], committed[cut:]

        # A hard state whose only change is the commit index is not written on
        # its own: commit is recoverable from the leader (Raft §5.3), and the
        # applied index lives with the data, so replay stays exactly-once. It is
        # written with the next entries / term / vote change instead.
        if rd.entries or rd.must_sync or snapshot is not None:
            if self._persist_in_thread:
                write = self._writer.submit(
                    self._save, rd.hard_state, rd.entries, snapshot, rd.must_sync
                )
                staged = None
                try:
                    if early:
                        staged_entries = len(early)
                        staged = self._applier.stage(early)
                        early = []
                finally:
                    await write
                if staged is not None:
                    self._finish_apply(self._applier.commit(staged), staged_entries)
            else:
                self._save(rd.hard_state, rd.entries, snapshot, rd.must_sync)
            self.stats.entries_persisted += len(rd.entries)
        if early:
            self._apply(early)

        if rd.messages_after_persist:
            self._transport.send(rd.messages_after_persist)

        if committed:
            self._apply(committed)

        for rs in rd.read_states:
            batch = self._read_batches.pop(rs.request_ctx, None)
            if batch is None:
                continue
            if rs.index <= self.applied_index:
                _resolve_futures(batch.futures)
            else:
                heapq.heappush(self._parked_reads, (rs.index, next(self._park_seq), batch.futures))
        self._release_parked_reads()
        if self._reads and not self._read_batches:
            self._wake.set()  # the round is over: start the next one for waiting reads

        core.advance(rd)
        if self.applied_index - self._snapshot_index >= self._snapshot_count:
            self._compact_log()

    def _save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: Snapshot | None,
        sync: bool,
    ) -> None:
        """The Raft log write (on the writer thread), timed when synced."""
        observer = self._observer
        if observer is None or not sync:
            self._storage.save(hard_state, entries, snapshot, sync)
            return
        t0 = time.perf_counter()
        self._storage.save(hard_state, entries, snapshot, sync)
        observer.observe_wal_fsync(time.perf_counter() - t0)

    def _compact_log(self) -> None:
        """Record a snapshot point at the applied index and drop log entries more
        than `snapshot_count` behind it (etcd: --snapshot-count, catch-up entries).

        The state machine itself lives in RocksDB, so the snapshot record carries
        no data. The generous margin lets a lagging follower catch up from the log,
        because installing snapshots on followers is not supported yet."""
        index = self.applied_index
        self._snapshot_index = index  # on failure too: retry one period later
        try:
            self._storage.create_snapshot(index, self._applier.conf_state(), b"")
            keep_from = index - self._snapshot_count
            if keep_from > 0:
                self._storage.compact(keep_from)
                log.info("raft log compacted up to index %d (snapshot at %d)", keep_from, index)
        except Exception:  # noqa: BLE001 - compaction is an optimisation
            log.exception("log compaction at index %d failed", index)

    def _apply(self, entries: list[Entry]) -> None:
        self._finish_apply(self._applier.apply(entries), len(entries))

    def _finish_apply(self, result: ApplyResult, n_entries: int) -> None:
        """Publish a committed apply batch: indexes, futures, events, readers."""
        self.stats.entries_applied += n_entries
        self.applied_index = result.applied_index
        self.commit_index = max(self.commit_index, self.applied_index)
        waiters = self.waiters
        for rid, outcome in result.results:
            if isinstance(outcome, Exception):  # EtcdError or an auth refusal
                waiters.fail(rid, outcome)
            else:
                waiters.trigger(rid, outcome)
        self.stats.proposals_committed += len(result.results)
        if result.events and self.watch_hook is not None:
            try:
                self.watch_hook(result.events)
            except Exception:  # noqa: BLE001 - watchers must never stall apply
                log.exception("watch hook failed")
        if self._on_apply is not None:
            self._on_apply(result)
        self.applied_waiter.advance(self.applied_index)

    def _release_parked_reads(self) -> None:
        parked = self._parked_reads
        while parked and parked[0][0] <= self.applied_index:
            _, _, futures = heapq.heappop(parked)
            _resolve_futures(futures)

    def _on_soft_state(self, leader_id: int, role: Role) -> None:
        if leader_id != self.leader_id:
            self.stats.leader_changes += 1
            self.last_leader_change = self._clock()
            log.info(
                "member %x: leader is now %x (term %d, role %s)",
                self.member_id,
                leader_id,
                self._core.term,
                role.name,
            )
            if leader_id == NONE:
                # Reads waiting for a ReadIndex answer will not get one.
                for batch in self._read_batches.values():
                    _fail_futures(batch.futures, errors.NO_LEADER())
                self._read_batches.clear()
            else:
                # A round sent to the old leader is lost: retry at the next tick.
                for batch in self._read_batches.values():
                    batch.retry_at = self._clock()
        changed = leader_id != self.leader_id or role != self.role
        self.leader_id = leader_id
        self.role = role
        if leader_id == NONE:
            self._leader_known.clear()
        else:
            self._leader_known.set()
        if changed:
            for listener in self.leadership_listeners:
                try:
                    listener(role == Role.LEADER, leader_id, self._core.term)
                except Exception:  # noqa: BLE001 - a listener bug must not stop raft
                    log.exception("leadership listener failed")

    def _fail_pending(self, exc: errors.EtcdError) -> None:
        self.waiters.fail_all(exc)
        self.applied_waiter.fail_all(exc)
        for batch in self._read_batches.values():
            _fail_futures(batch.futures, exc)
        self._read_batches.clear()
        for _, _, futures in self._parked_reads:
            _fail_futures(futures, exc)
        self._parked_reads.clear()
        _fail_futures(self._reads, exc)
        self._reads = []
        for _, fut in self._conf_changes:
            if not fut.done():
                fut.set_exception(exc)
        self._conf_changes = []


def _resolve_futures(futures: list[asyncio.Future[None]]) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_result(None)


def _fail_futures(futures: list[asyncio.Future[None]], exc: BaseException) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(exc)


class _Local:
    """A local command queued through the inbox so only the driver runs it."""

    def run(self, core: RaftNode) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class _Campaign(_Local):
    def run(self, core: RaftNode) -> None:
        core.campaign()


@dataclass
class _Transfer(_Local):
    target_id: int

    def run(self, core: RaftNode) -> None:
        core.transfer_leadership(self.target_id)


@dataclass
class _Unreachable(_Local):
    peer_id: int

    def run(self, core: RaftNode) -> None:
        core.report_unreachable(self.peer_id)
