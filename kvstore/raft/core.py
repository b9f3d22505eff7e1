"""RaftCore: the pure Raft state machine (mirrors etcd-io/raft `raft` + `RawNode`).

Owns: roles and terms (§5.2), log replication and commitment (§5.3, §5.4),
pre-vote and check-quorum (thesis §9.6), ReadIndex (§6.4), leader transfer
(§3.10), single-server membership changes effective on append (§4.1), snapshots.
Never: sockets, files, clocks, threads, asyncio, or randomness other than the
injected `random.Random`. Single-threaded: only the node driver calls it.

Contract with the driver: call `ready()`, do the work in the order documented
on `types.Ready`, then `advance(ready)` before the next `ready()`.
Invariants:
- the leader counts itself toward a commit quorum only for entries the driver
  has persisted (acknowledged through `advance`), because its appends leave
  before its own fsync;
- messages that promise durable state (vote requests and grants, append and
  heartbeat responses) go in `Ready.messages_after_persist`;
- the configuration is the base ConfState plus every conf-change entry in the
  log; truncating such an entry reverts it.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, field

from . import errors
from .confchange import apply_conf_change
from .follower import FollowerMixin
from .leader import LeaderMixin
from .log import RaftLog
from .membership import MembershipMixin
from .progress import Progress, ProgressState, ProgressView
from .quorum import VoteResult, vote_result
from .read_only import ReadOnly, ReadRequest
from .storage import LogStorage
from .types import (
    NONE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ReadState,
    Ready,
    Role,
    SoftState,
)

MT = MessageType
_NORMAL = EntryType.NORMAL
CAMPAIGN_TRANSFER = b"CampaignTransfer"

# Messages that promise state the driver must have persisted before they leave.
_AFTER_PERSIST = frozenset(
    {MT.APP_RESP, MT.HEARTBEAT_RESP, MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE_RESP}
)


@dataclass(slots=True)
class RaftConfig:
    id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    applied: int = 0
    # Bytes of committed entries per Ready; 0 means max_size_per_msg (as etcd).
    max_committed_size_per_ready: int = 0


@dataclass(frozen=True, slots=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    leader_id: int
    role: Role
    conf_state: ConfState
    progress: dict[int, ProgressView] = field(default_factory=dict)
    lead_transferee: int = NONE


class RaftCore(LeaderMixin, FollowerMixin, MembershipMixin):
    """One Raft peer as a pure state machine (etcd-io/raft `RawNode`).

    Only the node driver task calls it (no locks). Inputs: `tick`, `step`,
    `propose`, `propose_conf_change`, `campaign`, `read_index`,
    `transfer_leadership`, `report_unreachable`, `report_snapshot`. Output: `ready()`
    batches, acknowledged with `advance`. Role handlers live here; leader
    replication in leader.py, follower handlers in follower.py, configuration
    tracking in membership.py.
    """

    def __init__(self, config: RaftConfig, storage: LogStorage, rng: random.Random) -> None:
        if config.id == NONE:
            raise ValueError("id must be non-zero")
        if config.heartbeat_ticks < 1 or config.election_ticks <= config.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        if config.max_inflight_msgs < 1:
            raise ValueError("max_inflight_msgs must be >= 1")
        self._cfg = config
        self._id = config.id
        self._rng = rng
        self._log = RaftLog(storage)
        self._max_apply_bytes = config.max_committed_size_per_ready or config.max_size_per_msg
        hs, cs = storage.initial_state()
        self._term = hs.term
        self._vote = hs.vote
        self._log.commit_to(hs.commit)
        if config.applied:
            self._log.applied_to(min(config.applied, self._log.committed))
        self._msgs: list[Message] = []
        self._msgs_after: list[Message] = []
        self._read_states: list[ReadState] = []
        self._progress: dict[int, Progress] = {}
        # Configuration: base (committed, folded) plus conf entries still in flux.
        self._base_conf = cs
        self._conf_history: list[tuple[int, ConfState]] = []
        self._conf = cs
        self._voters: tuple[int, ...] = cs.voters
        self._lead = NONE
        self._role = Role.FOLLOWER
        self._step_fn = self._step_follower
        self._votes: dict[int, bool] = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks
        self._lead_transferee = NONE
        self._pending_conf_index = 0
        self._read_only = ReadOnly()
        self._reads_before_commit: list[ReadRequest] = []
        self._bcast_pending = False
        first, last = storage.first_index(), storage.last_index()
        if last >= first:  # rebuild the configuration from conf entries in the log
            self._note_appended(storage.entries(first, last + 1))
        self._set_conf()
        self._prev_soft = SoftState()
        self._prev_hard = hs
        self._become_follower(self._term, NONE)

    # --- public properties --------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._id

    @property
    def term(self) -> int:
        return self._term

    @property
    def leader_id(self) -> int:
        return self._lead

    @property
    def role(self) -> Role:
        return self._role

    @property
    def conf_state(self) -> ConfState:
        return self._conf

    @property
    def commit_index(self) -> int:
        return self._log.committed

    @property
    def applied_index(self) -> int:
        return self._log.applied

    @property
    def last_index(self) -> int:
        return self._log.last_index()

    @property
    def raft_log(self) -> RaftLog:
        """Read-only use (tests, status pages): the log with its unstable tail."""
        return self._log

    # --- inputs -------------------------------------------------------------------------
    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        if self._role == Role.LEADER:
            self._tick_heartbeat()
        else:
            self._election_elapsed += 1
            if self._promotable() and self._election_elapsed >= self._randomized_timeout:
                self._election_elapsed = 0
                self._hup(transfer=False)

    def campaign(self) -> None:
        """Start an election now (pre-vote first when enabled)."""
        self.step(Message(MT.HUP, sender=self._id))

    def propose(self, data: bytes) -> None:
        """Propose a normal entry. Raises NoLeader or TransferInProgress."""
        if self._role == Role.LEADER:
            if self._lead_transferee != NONE:
                raise errors.TransferInProgress()
            self._log.append_new(self._term, _NORMAL, data)  # hot path: no per-call list
            self._bcast_pending = True
        elif self._role == Role.FOLLOWER and self._lead != NONE:
            ent = Entry(0, 0, _NORMAL, data)
            self._msgs.append(Message(MT.PROP, to=self._lead, sender=self._id, entries=(ent,)))
        else:
            raise errors.NoLeader()

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; only on the leader, one uncommitted at a time."""
        if self._role != Role.LEADER:
            raise errors.NotLeader() if self._lead != NONE else errors.NoLeader()
        if self._lead_transferee != NONE:
            raise errors.TransferInProgress()
        if self._pending_conf_index > self._log.committed:
            raise errors.ConfChangeInProgress()
        if not apply_conf_change(self._conf, cc).voters:
            raise errors.ProposalDropped("the change would leave no voters")
        self._append_entries([(EntryType.CONF_CHANGE, cc.encode())])

    def read_index(self, ctx: bytes) -> None:
        """Request a linearizable read index; answered later in Ready.read_states."""
        if self._role == Role.LEADER:
            self._leader_read(ReadRequest(ctx, self._id))
        elif self._role == Role.FOLLOWER and self._lead != NONE:
            self._msgs.append(Message(MT.READ_INDEX, to=self._lead, sender=self._id, context=ctx))
        else:
            raise errors.NoLeader()

    def transfer_leadership(self, target_id: int) -> None:
        self.step(Message(MT.TRANSFER_LEADER, sender=target_id))

    def report_unreachable(self, node_id: int) -> None:
        self.step(Message(MT.UNREACHABLE, sender=node_id))

    def report_snapshot(self, node_id: int, success: bool) -> None:
        self.step(Message(MT.SNAP_STATUS, sender=node_id, reject=not success))

    def step(self, m: Message) -> None:
        """Feed one message (from the network, or a local one). Never raises for
        network input: proposals that cannot be forwarded are dropped."""
        if m.term == 0:
            pass  # local message
        elif m.term > self._term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = (
                    self._cfg.check_quorum
                    and self._lead != NONE
                    and self._election_elapsed < self._cfg.election_ticks
                )
                if in_lease and not force:
                    return  # leader stickiness: we heard from a live leader recently
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes never change our term
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self._become_follower(m.term, m.sender)
            else:
                self._become_follower(m.term, NONE)
        elif m.term < self._term:
            if (self._cfg.check_quorum or self._cfg.pre_vote) and m.type in (
                MT.HEARTBEAT,
                MT.APP,
            ):
                # A stale leader (e.g. back from a partition) learns our term and steps down.
                self._send(Message(MT.APP_RESP, to=m.sender, sender=self._id, term=self._term))
            elif m.type == MT.PRE_VOTE:
                resp = Message(
                    MT.PRE_VOTE_RESP, to=m.sender, sender=self._id, term=self._term, reject=True
                )
                self._send(resp)
            return
        if m.type == MT.HUP:
            self._hup(transfer=False)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote(m)
        else:
            # A forwarded proposal or read we cannot serve is dropped; its origin times out.
            with contextlib.suppress(errors.ProposalDropped):
                self._step_fn(m)

    # --- Ready / advance ----------------------------------------------------------------
    def has_ready(self) -> bool:
        log = self._log
        if self._msgs or self._msgs_after or self._read_states or self._bcast_pending:
            return True
        if log._unstable or log.unstable_snapshot is not None or log.has_next_committed():
            return True
        if self._role == Role.LEADER and self._read_only.has_waiting():
            return True
        hs = self._prev_hard
        if (hs.term, hs.vote, hs.commit) != (self._term, self._vote, log.committed):
            return True
        ss = self._prev_soft
        return (ss.leader_id, ss.role) != (self._lead, self._role)

    def ready(self) -> Ready:
        """Collect the pending work. Call `advance` with it before the next `ready`
        (entries are handed out again until advanced; committed entries only once)."""
        self._flush()
        self._fold_conf()
        log = self._log
        soft = None
        ss = self._prev_soft
        if ss.leader_id != self._lead or ss.role != self._role:
            soft = self._prev_soft = SoftState(self._lead, self._role)
        hard = None
        must_sync = False
        hs = self._prev_hard
        if hs.commit != log.committed or hs.term != self._term or hs.vote != self._vote:
            hard = self._prev_hard = HardState(self._term, self._vote, log.committed)
            must_sync = hs.term != self._term or hs.vote != self._vote
        entries = log.unstable_entries()
        snapshot = log.unstable_snapshot
        if entries or snapshot is not None:
            must_sync = True
        rd = Ready(
            soft,
            hard,
            entries,
            snapshot,
            log.next_committed(self._max_apply_bytes),
            self._msgs,
            self._msgs_after,
            self._read_states,
            must_sync,
        )
        self._msgs = []
        self._msgs_after = []
        self._read_states = []
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied everything in `rd`."""
        log = self._log
        self_ack = 0
        if rd.snapshot is not None:
            idx = rd.snapshot.metadata.index
            log.stable_snap_to(idx)
            log.applied_to(idx)
            self_ack = idx
        if rd.entries:
            last = rd.entries[-1]
            if log.stable_to(last.index, last.term):
                self_ack = last.index
        if rd.committed_entries:
            log.applied_to(rd.committed_entries[-1].index)
        if self_ack and self._role == Role.LEADER:
            pr = self._progress.get(self._id)
            if pr is not None and pr.maybe_update(self_ack):
                self._maybe_commit()

    def status(self) -> Status:
        progress: dict[int, ProgressView] = {}
        if self._role == Role.LEADER:
            for pid, pr in self._progress.items():
                progress[pid] = ProgressView(
                    pr.match,
                    pr.next,
                    pr.state,
                    pr.recent_active,
                    pr.is_learner,
                    pr.is_paused(),
                    len(pr.inflights),
                    pr.recent_active or pr.active_last_period,
                )
        return Status(
            self._id,
            self._term,
            self._vote,
            self._log.committed,
            self._log.applied,
            self._lead,
            self._role,
            self._conf,
            progress,
            self._lead_transferee,
        )

    # --- role transitions ---------------------------------------------------------------
    def _reset(self, term: int) -> None:
        if term != self._term:
            self._term = term
            self._vote = NONE
            # An append ack of the old term may cover entries the new term's leader is
            # about to truncate before they are ever persisted: never let it leave.
            if self._msgs_after:
                self._msgs_after = [m for m in self._msgs_after if m.type != MT.APP_RESP]
        self._lead = NONE
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._cfg.election_ticks + self._rng.randrange(
            self._cfg.election_ticks
        )
        self._lead_transferee = NONE
        self._votes = {}
        last = self._log.last_index()
        for pid, pr in self._progress.items():
            fresh = Progress(last + 1, self._cfg.max_inflight_msgs, pr.is_learner)
            if pid == self._id:
                fresh.match = self._log.persisted_index()
            self._progress[pid] = fresh
        self._read_only = ReadOnly()
        self._reads_before_commit = []
        self._pending_conf_index = 0
        self._bcast_pending = False

    def _become_follower(self, term: int, lead: int) -> None:
        self._step_fn = self._step_follower
        self._reset(term)
        self._lead = lead
        self._role = Role.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # Pre-vote changes neither term nor vote (thesis §9.6).
        self._step_fn = self._step_candidate
        self._votes = {}
        self._lead = NONE
        self._role = Role.PRE_CANDIDATE

    def _become_candidate(self) -> None:
        self._step_fn = self._step_candidate
        self._reset(self._term + 1)
        self._vote = self._id
        self._role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._step_fn = self._step_leader
        self._reset(self._term)
        self._lead = self._id
        self._role = Role.LEADER
        me = self._progress.get(self._id)
        if me is not None:
            me.become_replicate()
            me.recent_active = True
        # The empty entry commits this term's first entry, which unblocks reads (§6.4).
        self._append_entries([(EntryType.NORMAL, b"")])
        # No conf change until that entry commits (the thesis §4.1 single-server bug fix).
        self._pending_conf_index = self._log.last_index()

    def _promotable(self) -> bool:
        return self._id in self._voters

    # --- elections ----------------------------------------------------------------------
    def _hup(self, transfer: bool) -> None:
        if self._role == Role.LEADER or not self._promotable():
            return
        if self._cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self._term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self._term
        self._votes[self._id] = True
        if vote_result(self._voters, self._votes) == VoteResult.WON:
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        log = self._log
        last_index, last_term = log.last_index(), log.last_term()
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for pid in self._voters:
            if pid != self._id:
                self._send(
                    Message(
                        vote_type,
                        to=pid,
                        sender=self._id,
                        term=term,
                        index=last_index,
                        log_term=last_term,
                        context=ctx,
                    )
                )

    def _handle_vote(self, m: Message) -> None:
        can_vote = (
            self._vote == m.sender
            or (self._vote == NONE and self._lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self._term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self._log.is_up_to_date(m.index, m.log_term):  # §5.4.1
            self._send(Message(resp, to=m.sender, sender=self._id, term=m.term))
            if m.type == MT.VOTE:
                self._election_elapsed = 0
                self._vote = m.sender
        else:
            self._send(Message(resp, to=m.sender, sender=self._id, term=self._term, reject=True))

    # --- role handlers ------------------------------------------------------------------
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MT.APP:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_append(m)
        elif t == MT.HEARTBEAT:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_heartbeat(m)
        elif t == MT.SNAP:
            self._election_elapsed = 0
            self._lead = m.sender
            self._handle_snapshot(m)
        elif t == MT.PROP:
            if self._lead == NONE:
                raise errors.NoLeader()
            self._msgs.append(Message(MT.PROP, to=self._lead, sender=self._id, entries=m.entries))
        elif t == MT.TRANSFER_LEADER:
            if self._lead != NONE:
                self._msgs.append(
                    Message(MT.TRANSFER_LEADER, to=self._lead, sender=m.sender, term=self._term)
                )
        elif t == MT.TIMEOUT_NOW:
            self._hup(transfer=True)  # leader transfer skips pre-vote and the lease check
        elif t == MT.READ_INDEX_RESP:
            self._read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self._become_follower(m.term, m.sender)  # a leader exists for this term
            self._step_follower(m)
        elif t == MT.PROP:
            raise errors.NoLeader()
        elif (t == MT.VOTE_RESP and self._role == Role.CANDIDATE) or (
            t == MT.PRE_VOTE_RESP and self._role == Role.PRE_CANDIDATE
        ):
            self._votes.setdefault(m.sender, not m.reject)
            result = vote_result(self._voters, self._votes)
            if result == VoteResult.WON:
                if self._role == Role.PRE_CANDIDATE:
                    self._campaign(pre=False, transfer=False)
                else:
                    self._become_leader()
            elif result == VoteResult.LOST:
                self._become_follower(self._term, NONE)

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.BEAT:
            self._bcast_heartbeat(self._read_only.last_round_ctx())
            return
        if t == MT.PROP:
            if self._lead_transferee != NONE:
                raise errors.TransferInProgress()
            items = []
            for e in m.entries:
                if (
                    e.type == EntryType.CONF_CHANGE
                    and self._pending_conf_index > self._log.committed
                ):
                    items.append((EntryType.NORMAL, b""))  # etcd: drop, keep the slot
                    continue
                items.append((e.type, e.data))
            self._append_entries(items)
            return
        if t == MT.READ_INDEX:
            self._leader_read(ReadRequest(m.context, m.sender))
            return
        pr = self._progress.get(m.sender)
        if pr is None:
            return
        if t == MT.APP_RESP:
            self._handle_append_response(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first_one()
            if pr.match < self._log.last_index():
                self._send_append(m.sender, pr)
            if m.context:
                for rnd in self._read_only.ack(m.sender, m.context, self._id, self._voters):
                    for req in rnd.requests:
                        self._answer_read(req, rnd.index)
        elif t == MT.SNAP_STATUS:
            if pr.state != ProgressState.SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            pr.probe_sent = True  # wait for a heartbeat response before probing
        elif t == MT.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
        elif t == MT.TRANSFER_LEADER:
            self._handle_transfer(m.sender, pr)

    def _send(self, m: Message) -> None:
        """Route a message: promises about durable state wait for the persist step."""
        if m.type in _AFTER_PERSIST:
            self._msgs_after.append(m)
        else:
            self._msgs.append(m)
