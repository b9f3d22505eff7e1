"""Errors of the Raft core.

Owns: the exceptions `RaftCore` and `LogStorage` raise.
Never: imports from other kvstore layers; the node layer maps these to etcd errors.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base class of every error raised by kvstore.raft."""


class ProposalDropped(RaftError):
    """A proposal, conf change or read request was refused; the caller may retry."""

    reason = "proposal dropped"

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or self.reason)
        self.reason = reason or self.reason


class NoLeader(ProposalDropped):
    reason = "no leader"


class NotLeader(ProposalDropped):
    reason = "not the leader"


class TransferInProgress(ProposalDropped):
    reason = "leadership transfer in progress"


class ConfChangeInProgress(ProposalDropped):
    reason = "another membership change is not yet committed"


class StorageError(RaftError):
    """Base class of LogStorage read errors."""


class Compacted(StorageError):
    """The requested index is at or below the compaction point."""


class Unavailable(StorageError):
    """The requested index is beyond the last stored index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The storage cannot produce a snapshot right now; the leader retries later."""
