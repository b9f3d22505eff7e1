"""Follower-side handlers for RaftCore: AppendEntries, heartbeats, snapshots.

Owns: the §5.3 consistency check and conflict hint (etcd reject_hint/log_term),
commit from heartbeats, snapshot restore.
Never: used on its own; `FollowerMixin` is part of `RaftCore`. Every response
goes in `Ready.messages_after_persist`: it promises state the driver persists first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .log import RaftLog
from .progress import Progress
from .read_only import ReadOnly, ReadRequest
from .types import (
    ConfState,
    Entry,
    Message,
    MessageType,
    ReadState,
    Role,
    Snapshot,
)

if TYPE_CHECKING:
    from .core import RaftConfig

MT = MessageType


class FollowerMixin:
    """Follower message handling; part of RaftCore."""

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

        def _send(self, m: Message) -> None: ...
        def _note_appended(self, ents: list[Entry]) -> None: ...
        def _set_conf(self) -> None: ...

    # --- follower handlers --------------------------------------------------------------
    def _handle_append(self, m: Message) -> None:
        log = self._log
        if m.index < log.committed:
            self._send(self._app_resp(m.sender, log.committed))
            return
        if log.match_term(m.index, m.log_term):  # §5.3 consistency check
            ents = m.entries
            last_new = m.index + len(ents)
            if ents:
                ci = log.find_conflict(ents)
                if ci:
                    if ci <= log.committed:
                        raise AssertionError(f"conflict at {ci} <= commit {log.committed}")
                    new = list(ents[ci - m.index - 1 :])
                    log.append(new)
                    self._note_appended(new)
            log.commit_to(min(m.commit, last_new))
            self._send(self._app_resp(m.sender, last_new))
            return
        hint_index = min(m.index, log.last_index())
        hint_index, hint_term = log.find_conflict_by_term(hint_index, m.log_term)
        self._send(
            Message(
                MT.APP_RESP,
                to=m.sender,
                sender=self._id,
                term=self._term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def _app_resp(self, to: int, index: int) -> Message:
        return Message(MT.APP_RESP, to=to, sender=self._id, term=self._term, index=index)

    def _handle_heartbeat(self, m: Message) -> None:
        self._log.commit_to(m.commit)
        self._send(
            Message(
                MT.HEARTBEAT_RESP, to=m.sender, sender=self._id, term=self._term, context=m.context
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        if self._restore(m.snapshot):
            self._send(self._app_resp(m.sender, self._log.last_index()))
        else:
            self._send(self._app_resp(m.sender, self._log.committed))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        log = self._log
        if meta.index <= log.committed:
            return False
        # Unlike etcd we accept a snapshot whose configuration predates our own
        # addition: the entries after it (which add us) follow in later appends.
        cs = meta.conf_state
        if log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # we already have it: fast-forward the commit
            return False
        log.restore(snap)
        self._base_conf = cs
        self._conf_history = []
        self._set_conf()
        return True
