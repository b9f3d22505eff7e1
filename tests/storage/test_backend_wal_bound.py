"""The RocksDB write-ahead log stays bounded when a busy family shares it with
families that take only tiny writes (the apply path: kv/raft_log big, meta
small on every batch). Without a WAL cap RocksDB keeps every WAL file until
the small families flush, i.e. until ~2.5 GiB here (disk_growth_bench.py)."""

from __future__ import annotations

import random
from pathlib import Path

from kvstore.storage.backend import _MAX_TOTAL_WAL_BYTES, Backend

WRITE_BYTES = 96 << 20  # 6x the 16 MiB cap; far below RocksDB's default WAL limit


def wal_bytes(path: Path) -> int:
    total = 0
    for p in path.glob("*.log"):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # deleted by RocksDB after the listing
            continue
    return total


def test_wal_is_recycled_while_kv_is_overwritten_and_meta_ticks(tmp_path: Path) -> None:
    db = tmp_path / "db"
    b = Backend.open(db)
    rng = random.Random(7)
    written = 0
    peak = 0
    try:
        # 6x the cap in 64 KiB batches of incompressible values, each batch
        # also bumping a meta key, as every apply batch does.
        for i in range(WRITE_BYTES // (64 << 10)):
            batch = b.batch()
            for j in range(16):
                batch.put("kv", b"k%03d" % ((i * 16 + j) % 500), rng.randbytes(4096))
            batch.put("meta", b"applied_index", i.to_bytes(8, "big"))
            b.write(batch, sync=False)
            written += 16 * 4096
            peak = max(peak, wal_bytes(db))
        assert written >= WRITE_BYTES
        # RocksDB switches WAL files once the cap is passed and deletes the
        # old ones when their flush is done (in the background, while these
        # unpaced writes go on): allow up to 3x the cap, half what was written.
        assert peak < 3 * _MAX_TOTAL_WAL_BYTES <= WRITE_BYTES // 2, peak
    finally:
        b.close()
