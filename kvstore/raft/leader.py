"""Leader-side replication for RaftCore: appends, flow control, commitment,
heartbeats, leader transfer and ReadIndex.

Owns: what the leader sends to each follower and when an index commits
(§5.3, §5.4.2, thesis §3.10 transfer, §6.4 ReadIndex).
Never: used on its own. `LeaderMixin` is one part of `RaftCore` and works on
its state (see core.py for the attributes and the invariants). Every message
it queues goes in `Ready.messages` (the leader's sends may precede its fsync).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import Compacted, SnapshotTemporarilyUnavailable
from .log import RaftLog
from .progress import Progress, ProgressState
from .quorum import committed_index, majority
from .read_only import ReadOnly, ReadRequest
from .types import (
    NONE,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ReadState,
    Role,
)

if TYPE_CHECKING:
    from .core import RaftConfig

MT = MessageType


class LeaderMixin:
    """Leader replication; part of RaftCore."""

    _cfg: RaftConfig
    _id: int
    _term: int
    _lead: int
    _role: Role
    _log: RaftLog
    _progress: dict[int, Progress]
    _voters: tuple[int, ...]
    _msgs: list[Message]
    _msgs_after: list[Message]
    _read_states: list[ReadState]
    _read_only: ReadOnly
    _reads_before_commit: list[ReadRequest]
    _lead_transferee: int
    _pending_conf_index: int
    _bcast_pending: bool
    _election_elapsed: int
    _heartbeat_elapsed: int
    _base_conf: ConfState
    _conf_history: list[tuple[int, ConfState]]
    _conf: ConfState

    if TYPE_CHECKING:  # provided by RaftCore or another of its mixins

        def _note_appended(self, ents: list[Entry]) -> None: ...
        def _conf_committed(self) -> bool: ...
        def _become_follower(self, term: int, lead: int) -> None: ...

    # --- replication (leader) -----------------------------------------------------------
    def _append_entries(self, items: list[tuple[EntryType, bytes]]) -> None:
        log = self._log
        term = self._term
        first = log.last_index() + 1
        ents = [Entry(term, first + i, typ, data) for i, (typ, data) in enumerate(items)]
        log.append(ents)
        for e in ents:
            if e.type == EntryType.CONF_CHANGE:
                self._pending_conf_index = e.index
                self._note_appended(ents)
                break
        self._bcast_pending = True

    def _flush(self) -> None:
        """Leader: start a read round for waiting reads and broadcast new entries/commit."""
        if self._role != Role.LEADER:
            self._bcast_pending = False
            return
        if self._read_only.has_waiting():
            self._bcast_heartbeat(self._read_only.start_round(self._log.committed))
        if self._bcast_pending:
            self._bcast_pending = False
            committed = self._log.committed
            for pid, pr in self._progress.items():
                if pid == self._id:
                    continue
                sent = False
                while self._send_append(pid, pr, send_if_empty=False):
                    sent = True
                # A commit-only (empty) append only when nothing sent to this peer
                # since the commit moved carries it: with a steady stream of
                # proposals the commit rides on the next append, which halves the
                # peer messages; otherwise the follower still learns it now.
                if not sent and pr.sent_commit < committed:
                    self._send_append(pid, pr)

    def _send_append(self, to: int, pr: Progress, send_if_empty: bool = True) -> bool:
        if pr.is_paused():
            return False
        log = self._log
        try:
            prev_term = log.term(pr.next - 1)
            ents = log.entries_from(pr.next, self._cfg.max_size_per_msg)
        except Compacted:
            return self._send_snapshot(to, pr)
        if not ents and not send_if_empty:
            return False
        self._msgs.append(
            Message(
                MT.APP,
                to=to,
                sender=self._id,
                term=self._term,
                log_term=prev_term,
                index=pr.next - 1,
                entries=tuple(ents),
                commit=log.committed,
            )
        )
        pr.sent_commit = log.committed
        if pr.state == ProgressState.REPLICATE:
            if ents:
                last = ents[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
        else:
            pr.probe_sent = True  # probe: one message per round trip
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self._log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty:
            raise AssertionError("log compacted but storage has no snapshot")
        pr.become_snapshot(snap.metadata.index)
        self._msgs.append(Message(MT.SNAP, to=to, sender=self._id, term=self._term, snapshot=snap))
        return True

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            # Skip the whole conflicting term at once (etcd findConflictByTerm).
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self._log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender, pr)
            return
        old_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= self._log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if self._role != Role.LEADER:
                return  # stepped down after committing its own removal
        elif old_paused:
            self._send_append(m.sender, pr)
        while self._send_append(m.sender, pr, send_if_empty=False):
            pass
        if m.sender == self._lead_transferee and pr.match == self._log.last_index():
            self._send_timeout_now(m.sender)

    def _maybe_commit(self) -> bool:
        progress = self._progress
        mci = committed_index(progress[v].match if v in progress else 0 for v in self._voters)
        if not self._log.maybe_commit(mci, self._term):  # §5.4.2: current-term entries only
            return False
        self._bcast_pending = True
        if self._reads_before_commit:
            for req in self._reads_before_commit:
                self._leader_read(req)
            self._reads_before_commit = []
        if self._id not in self._voters and self._conf_committed():
            # §4.2.2: a removed leader steps down once its removal commits; tell the
            # followers that commit first so they apply the new configuration now.
            self._flush()
            self._become_follower(self._term, NONE)
        return True

    def _bcast_heartbeat(self, ctx: bytes) -> None:
        committed = self._log.committed
        for pid, pr in self._progress.items():
            if pid != self._id:
                self._msgs.append(
                    Message(
                        MT.HEARTBEAT,
                        to=pid,
                        sender=self._id,
                        term=self._term,
                        commit=min(pr.match, committed),  # never past what pid has
                        context=ctx,
                    )
                )

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self._cfg.election_ticks:
            self._election_elapsed = 0
            if self._cfg.check_quorum and not self._quorum_active():
                self._become_follower(self._term, NONE)
                return
            self._lead_transferee = NONE  # a transfer that took an election timeout failed
        if self._heartbeat_elapsed >= self._cfg.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._bcast_heartbeat(self._read_only.last_round_ctx())

    def _quorum_active(self) -> bool:
        active = 0
        for pid in self._voters:
            pr = self._progress.get(pid)
            if pid == self._id or (pr is not None and pr.recent_active):
                active += 1
        for pid, pr in self._progress.items():
            if pid != self._id:
                pr.active_last_period = pr.recent_active
                pr.recent_active = False
        return active >= majority(len(self._voters))

    # --- leader transfer ----------------------------------------------------------------
    def _handle_transfer(self, target: int, pr: Progress) -> None:
        if pr.is_learner or target == self._id or target == self._lead_transferee:
            return
        self._election_elapsed = 0  # the transfer must finish within an election timeout
        self._lead_transferee = target
        if pr.match == self._log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target, pr)

    def _send_timeout_now(self, to: int) -> None:
        self._msgs.append(Message(MT.TIMEOUT_NOW, to=to, sender=self._id, term=self._term))

    # --- ReadIndex (§6.4) ---------------------------------------------------------------
    def _leader_read(self, req: ReadRequest) -> None:
        log = self._log
        if not log.match_term(log.committed, self._term):
            self._reads_before_commit.append(req)  # wait for this term's first commit
        elif self._voters == (self._id,):
            self._answer_read(req, log.committed)
        else:
            self._read_only.add(req)

    def _answer_read(self, req: ReadRequest, index: int) -> None:
        if req.sender == self._id:
            self._read_states.append(ReadState(index, req.ctx))
        else:
            self._msgs.append(
                Message(
                    MT.READ_INDEX_RESP,
                    to=req.sender,
                    sender=self._id,
                    term=self._term,
                    index=index,
                    context=req.ctx,
                )
            )
