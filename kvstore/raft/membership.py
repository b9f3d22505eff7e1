"""Configuration tracking for RaftCore (Raft thesis §4.1: effective on append).

Owns: the configuration = base ConfState (committed, or from a snapshot) plus
every conf-change entry still above the commit index; reverting entries that
are truncated away; keeping the progress table in step with the members.
Never: used on its own; `MembershipMixin` is part of `RaftCore`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .confchange import apply_conf_change
from .log import RaftLog
from .progress import Progress
from .read_only import ReadOnly, ReadRequest
from .types import (
    NONE,
    ConfChange,
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


class MembershipMixin:
    """Configuration tracking; part of RaftCore."""

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

        def _maybe_commit(self) -> bool: ...

    # --- configuration ------------------------------------------------------------------
    def _note_appended(self, ents: list[Entry]) -> None:
        """Entries were appended starting at ents[0].index: revert conf changes that
        were truncated away and apply the new ones (§4.1: effective on append)."""
        history = self._conf_history
        changed = False
        first = ents[0].index
        while history and history[-1][0] >= first:
            history.pop()
            changed = True
        for e in ents:
            if e.type == EntryType.CONF_CHANGE:
                cur = history[-1][1] if history else self._base_conf
                history.append((e.index, apply_conf_change(cur, ConfChange.decode(e.data))))
                changed = True
        if changed:
            self._set_conf()

    def _conf_committed(self) -> bool:
        history = self._conf_history
        return not history or history[-1][0] <= self._log.committed

    def _set_conf(self) -> None:
        history = self._conf_history
        cs = history[-1][1] if history else self._base_conf
        self._conf = cs
        self._voters = cs.voters
        members = set(cs.voters) | set(cs.learners)
        progress = self._progress
        for pid in [p for p in progress if p not in members]:
            del progress[pid]
            if pid == self._lead_transferee:
                self._lead_transferee = NONE
        last = self._log.last_index()
        learners = set(cs.learners)
        for pid in members:
            pr = progress.get(pid)
            if pr is None:
                pr = Progress(last + 1, self._cfg.max_inflight_msgs, pid in learners)
                pr.recent_active = True  # do not count a new member as dead at once
                if pid == self._id:
                    pr.match = self._log.persisted_index()
                    pr.become_replicate()
                progress[pid] = pr
            else:
                pr.is_learner = pid in learners
        if self._role == Role.LEADER:
            self._bcast_pending = True
            self._maybe_commit()  # a smaller quorum may commit more now

    def _fold_conf(self) -> None:
        history = self._conf_history
        committed = self._log.committed
        while history and history[0][0] <= committed:
            self._base_conf = history.pop(0)[1]
