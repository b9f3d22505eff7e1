"""The snapshot spool: `<data-dir>/snap/`, where Raft snapshot files wait.

Owns: the file names in the spool and the reference a received snapshot
carries to the installer. The receiver (transport/snapshot_recv.py) writes
`recv-<pid>-<n>.tmp`, renames it to `recv-<index>-<sender>-<n>.snap` once
verified and hands Raft a Snapshot whose data is `file:<path>`; the installer
(maintenance/snapshot_install.py) reads that path back and, once installed,
removes received files up to the index. The leader's sender writes
`send-<peer>-<n>.snap` and removes it after the transfer.
Never: reads or writes snapshot contents (only names and stale files).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

SPOOL_DIRNAME = "snap"
# Snapshot.data of a received snapshot: this prefix + the spooled file's path.
FILE_PREFIX = b"file:"


def file_ref(path: Path) -> bytes:
    """Snapshot.data naming the spooled file `path`."""
    return FILE_PREFIX + str(path).encode()


def file_of(data: bytes) -> Path | None:
    """The spooled file a Snapshot.data names, or None if it names none."""
    if not data.startswith(FILE_PREFIX):
        return None
    return Path(data[len(FILE_PREFIX) :].decode())


def receiving_file(spool: Path, n: int) -> Path:
    """Where the n-th incoming stream of this process is written."""
    return spool / f"recv-{os.getpid()}-{n}.tmp"


def received_file(spool: Path, index: int, sender: int, n: int) -> Path:
    """Where a verified incoming snapshot at `index` is kept until installed."""
    return spool / f"recv-{index}-{sender:x}-{n}.snap"


def sending_file(spool: Path, peer: int, n: int) -> Path:
    """Where the leader writes the n-th state file it sends to `peer`."""
    return spool / f"send-{peer:x}-{n}.snap"


def clean_spool(spool: Path) -> None:
    """Remove files left by an interrupted transfer/install (startup)."""
    if not spool.is_dir():
        return
    for entry in spool.iterdir():
        if entry.suffix in (".tmp", ".snap"):
            with contextlib.suppress(OSError):
                entry.unlink()


def remove_received(spool: Path, up_to_index: int) -> None:
    """Drop received files at or below an installed index (including ones Raft
    rejected as stale, which nothing else would remove before a restart)."""
    for entry in spool.glob("recv-*.snap"):
        try:
            index = int(entry.name.split("-")[1])
        except (IndexError, ValueError):
            continue
        if index <= up_to_index:
            with contextlib.suppress(OSError):
                entry.unlink()
