"""Defragmentation: etcd's `Defragment` mapped to a RocksDB manual compaction.

Owns: `defragment(backend)` — compact every column family over its whole key
range, which rewrites SST files without deleted/overwritten versions and
returns space to the file system (what bbolt defrag achieves for etcd).
Never: blocks the event loop (callers run it in a worker thread: RocksDB
keeps serving reads and writes during a manual compaction, so the member
stays online, unlike etcd whose defrag blocks the member); never changes data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from kvstore import failpoints as fp
from kvstore.storage.backend import Backend


@dataclass
class DefragResult:
    size_before: int
    size_after: int
    seconds: float


def defragment(backend: Backend) -> DefragResult:
    """Flush memtables, then compact all families fully. Thread-safe vs. writes."""
    fp.ON and fp.hit("defrag_before")
    before = backend.size_bytes()
    start = time.monotonic()
    backend.flush()
    for family in backend.column_families:
        # Private access by design: the Backend has no public compaction call
        # and this module is its only user (documented in CONTRACTS.md).
        fam = backend._families[family]
        fam.compact_range(None, None)
    fp.ON and fp.hit("defrag_after")
    return DefragResult(before, backend.size_bytes(), time.monotonic() - start)
