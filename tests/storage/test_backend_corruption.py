"""A corrupt block must fail an iteration, never end it early.

Regression (robustness disk-fault run): with one byte flipped in the SST of
the `kv` family, RocksDB's iterator became invalid at the damaged block and
`iterate()` took that for the end of the range: the member started, rebuilt
its index from the first third of the keys, and served revision 1002 instead
of 3001 with no error anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kvstore.storage.backend import Backend, StorageCorruption

N = 3000


def _damaged(tmp_path: Path) -> Path:
    path = tmp_path / "db"
    b = Backend.open(str(path))
    batch = b.batch()
    for n in range(N):
        batch.put("kv", b"k%05d" % n, os.urandom(500))
    b.write(batch, sync=True)
    b.flush()
    b.close()
    ssts = sorted(path.rglob("*.sst"), key=lambda p: p.stat().st_size)
    assert ssts, "nothing was flushed"
    target = ssts[-1]  # the kv family's file: by far the largest
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # a data block, not the index or footer
    target.write_bytes(bytes(raw))
    return path


def test_iterate_raises_on_a_corrupt_block_instead_of_ending_early(tmp_path: Path) -> None:
    b = Backend.open(str(_damaged(tmp_path)))
    try:
        seen = 0
        with pytest.raises(StorageCorruption, match="checksum mismatch"):
            for _ in b.iterate("kv"):
                seen += 1
        assert 0 < seen < N
    finally:
        b.close()


def test_snapshot_iterate_raises_on_a_corrupt_block(tmp_path: Path) -> None:
    b = Backend.open(str(_damaged(tmp_path)))
    try:
        with b.snapshot() as snap, pytest.raises(StorageCorruption):
            for _ in snap.iterate("kv"):
                pass
    finally:
        b.close()


def test_intact_data_iterates_completely(tmp_path: Path) -> None:
    path = tmp_path / "db"
    b = Backend.open(str(path))
    batch = b.batch()
    for n in range(N):
        batch.put("kv", b"k%05d" % n, b"v")
    b.write(batch, sync=True)
    b.flush()
    assert sum(1 for _ in b.iterate("kv")) == N
    assert sum(1 for _ in b.iterate("kv", b"k01000", b"k02000")) == 1000
    with b.snapshot() as snap:
        assert sum(1 for _ in snap.iterate("kv")) == N
    b.close()
