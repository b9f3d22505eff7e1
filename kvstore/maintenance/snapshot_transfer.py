"""Compatibility re-exports: Raft snapshot transfer now lives in three places.

- sending (leader, network): kvstore.transport.snapshot_send.SnapshotSender
- receiving (follower, network): kvstore.transport.snapshot_recv.SnapshotReceiver
- the state side (the file a leader sends, the atomic install on a follower,
  ThreadWork): kvstore.maintenance.snapshot_install
- spool file names and the `file:` reference: kvstore.storage.snapshot_spool

Import from those modules in new code. This module only keeps the old import
path working while code written against it (maintenance/wiring.py) is
replaced; delete it then.
"""

from kvstore.maintenance.snapshot_install import (
    BackupSnapshotSource,
    SnapshotInstaller,
    ThreadWork,
    conf_state_from_members,
)
from kvstore.storage.snapshot_spool import FILE_PREFIX, SPOOL_DIRNAME, clean_spool
from kvstore.transport.snapshot_recv import SnapshotReceiver
from kvstore.transport.snapshot_send import TRANSFER_CHUNK_BYTES, SnapshotSender

__all__ = [
    "FILE_PREFIX",
    "SPOOL_DIRNAME",
    "TRANSFER_CHUNK_BYTES",
    "BackupSnapshotSource",
    "SnapshotInstaller",
    "SnapshotReceiver",
    "SnapshotSender",
    "ThreadWork",
    "clean_spool",
    "conf_state_from_members",
]
