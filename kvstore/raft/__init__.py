"""kvstore's pure Raft consensus core (see core.py for the contract).

Owns: consensus only. Never imports from the rest of kvstore; never does I/O.
"""

from .confchange import apply_conf_change
from .core import CAMPAIGN_TRANSFER, RaftConfig, RaftCore, Status
from .errors import (
    Compacted,
    ConfChangeInProgress,
    NoLeader,
    NotLeader,
    ProposalDropped,
    RaftError,
    SnapshotTemporarilyUnavailable,
    TransferInProgress,
    Unavailable,
)
from .progress import ProgressState, ProgressView
from .storage import LogStorage, MemoryLogStorage

__all__ = [
    "CAMPAIGN_TRANSFER",
    "Compacted",
    "ConfChangeInProgress",
    "LogStorage",
    "MemoryLogStorage",
    "NoLeader",
    "NotLeader",
    "ProgressState",
    "ProgressView",
    "ProposalDropped",
    "RaftConfig",
    "RaftCore",
    "RaftError",
    "SnapshotTemporarilyUnavailable",
    "Status",
    "TransferInProgress",
    "Unavailable",
    "apply_conf_change",
]
