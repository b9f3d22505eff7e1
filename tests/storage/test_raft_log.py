"""RocksLogStorage on a real RocksDB under tmp_path: durability across reopen and
crash, tail overwrite, compaction, snapshots, the cache, and a seeded differential
run against MemoryLogStorage (the reference the Raft tests use)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.raft.errors import Compacted, Unavailable
from kvstore.raft.storage import MemoryLogStorage
from kvstore.raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMetadata,
)
from kvstore.storage.backend import Backend
from kvstore.storage.raft_log import RocksLogStorage

ROOT = Path(__file__).resolve().parents[2]


def ents(lo: int, hi: int, term: int, size: int = 8) -> list[Entry]:
    return [Entry(term, i, data=bytes([i % 251]) * size) for i in range(lo, hi + 1)]


class Db:
    """Open/reopen one database directory."""

    def __init__(self, path: Path, **kw: int) -> None:
        self.path = path
        self.kw = kw
        self.backend = Backend.open(path)
        self.log = RocksLogStorage(self.backend, **kw)

    def reopen(self) -> RocksLogStorage:
        self.backend.close()
        self.backend = Backend.open(self.path)
        self.log = RocksLogStorage(self.backend, **self.kw)
        return self.log

    def close(self) -> None:
        self.backend.close()


def now_and_after_reopen(d: Db) -> Iterator[RocksLogStorage]:
    """The live log, then (lazily, after the caller checked it) a reopened one."""
    yield d.log
    yield d.reopen()


@pytest.fixture
def db(tmp_path: Path):
    d = Db(tmp_path / "db")
    yield d
    d.close()


def snapshot_of(log) -> tuple:
    """Everything the Raft core can read, for comparisons."""
    first, last = log.first_index(), log.last_index()
    return (
        log.initial_state(),
        log.snapshot(),
        first,
        last,
        log.term(first - 1),
        log.entries(first, last + 1) if last >= first else [],
    )


def test_fresh_log_is_empty(db: Db) -> None:
    log = db.log
    assert log.initial_state() == (HardState(), ConfState())
    assert (log.first_index(), log.last_index()) == (1, 0)
    assert log.term(0) == 0
    assert log.entries(1, 1) == []
    with pytest.raises(Unavailable):
        log.term(1)
    with pytest.raises(Compacted):
        log.entries(0, 1)
    assert log.snapshot().is_empty


def test_entries_and_hard_state_survive_reopen(db: Db) -> None:
    db.log.save(HardState(term=2, vote=1, commit=3), ents(1, 5, 1) + ents(6, 9, 2), None)
    before = snapshot_of(db.log)
    log = db.reopen()
    assert snapshot_of(log) == before
    assert log.initial_state()[0] == HardState(2, 1, 3)
    assert log.entries(1, 10) == ents(1, 5, 1) + ents(6, 9, 2)
    assert [log.term(i) for i in range(0, 10)] == [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]


def test_conf_change_entry_type_round_trips(db: Db) -> None:
    cc = Entry(1, 1, EntryType.CONF_CHANGE, b'{"t":0}')
    db.log.save(None, [cc, Entry(1, 2)], None)
    assert db.reopen().entries(1, 3) == [cc, Entry(1, 2)]


def test_overwriting_the_tail_deletes_the_conflicting_suffix(db: Db) -> None:
    db.log.save(HardState(1, 1, 0), ents(1, 10, 1), None)
    db.log.save(HardState(3, 2, 0), ents(6, 7, 3), None)  # §5.3: new leader's entries win
    expected = ents(1, 5, 1) + ents(6, 7, 3)
    for log in now_and_after_reopen(db):
        assert log.last_index() == 7
        assert log.entries(1, 8) == expected
        with pytest.raises(Unavailable):
            log.term(8)
    # Appending after the overwrite continues from 8, old 8..10 stay gone.
    db.log.save(None, ents(8, 8, 3), None)
    assert db.reopen().entries(1, 9) == expected + ents(8, 8, 3)


def test_overwrite_with_longer_suffix_and_rewrite_of_the_same_entries(db: Db) -> None:
    db.log.save(None, ents(1, 4, 1), None)
    db.log.save(None, ents(3, 8, 2), None)
    db.log.save(None, ents(3, 8, 2), None)  # idempotent re-save
    assert db.reopen().entries(1, 9) == ents(1, 2, 1) + ents(3, 8, 2)


def test_gap_is_refused_and_writes_nothing(db: Db) -> None:
    db.log.save(None, ents(1, 3, 1), None)
    with pytest.raises(Unavailable):
        db.log.save(HardState(9, 9, 9), ents(5, 6, 1), None)
    log = db.reopen()
    assert log.last_index() == 3
    assert log.initial_state()[0] == HardState()


def test_save_is_one_synced_write(db: Db) -> None:
    writes: list[tuple[int, bool]] = []
    real_write = db.backend.write

    def counting_write(batch, sync: bool) -> None:
        writes.append((len(batch), sync))
        real_write(batch, sync)

    db.backend.write = counting_write  # type: ignore[method-assign]
    db.log.save(HardState(1, 1, 0), ents(1, 10, 1), None)
    db.log.save(HardState(2, 1, 0), ents(4, 5, 2), None, sync=True)  # overwrite + hard state
    db.log.save(HardState(2, 1, 5), [], None, sync=False)
    assert [s for _, s in writes] == [True, True, False]
    # 10 entries + hard state + last index; 2 entries + tail delete + hs + last index.
    assert [n for n, _ in writes] == [12, 5, 1]


def test_compaction_keeps_the_term_of_the_compaction_point(db: Db) -> None:
    db.log.save(HardState(2, 1, 10), ents(1, 5, 1) + ents(6, 10, 2), None)
    cs = ConfState(voters=(1, 2, 3))
    snap = db.log.create_snapshot(7, cs, b"state@7")
    assert snap == Snapshot(SnapshotMetadata(7, 2, cs), b"state@7")
    db.log.compact(7)
    for log in now_and_after_reopen(db):
        assert (log.first_index(), log.last_index()) == (8, 10)
        assert log.term(7) == 2
        with pytest.raises(Compacted):
            log.term(6)
        with pytest.raises(Compacted):
            log.entries(7, 9)
        assert log.entries(8, 11) == ents(8, 10, 2)
        assert log.snapshot() == snap
        assert log.initial_state() == (HardState(2, 1, 10), cs)
    # Compacting is refused past the snapshot, a no-op below the current point.
    with pytest.raises(ValueError):
        db.log.compact(9)
    db.log.compact(3)
    assert db.log.first_index() == 8
    # Appending entries that are partly compacted keeps only the new part.
    db.log.save(None, ents(6, 12, 2), None)
    assert db.log.entries(8, 13) == ents(8, 12, 2)


def test_compact_everything_then_append(db: Db) -> None:
    db.log.save(None, ents(1, 4, 1), None)
    db.log.create_snapshot(4, ConfState(voters=(1,)), b"")
    db.log.compact(4)
    log = db.reopen()
    assert (log.first_index(), log.last_index(), log.term(4)) == (5, 4, 1)
    assert log.entries(5, 5) == []
    log.save(None, ents(5, 6, 2), None)
    assert db.reopen().entries(5, 7) == ents(5, 6, 2)


def test_applied_snapshot_resets_the_log(db: Db) -> None:
    db.log.save(HardState(1, 1, 3), ents(1, 8, 1), None)
    cs = ConfState(voters=(1, 2), learners=(3,))
    snap = Snapshot(SnapshotMetadata(20, 4, cs), b"leader state")
    # A follower installs a snapshot and appends in the same Ready (one write).
    db.log.save(HardState(4, 2, 20), ents(21, 22, 4), snap)
    for log in now_and_after_reopen(db):
        assert (log.first_index(), log.last_index()) == (21, 22)
        assert log.term(20) == 4
        assert log.snapshot() == snap
        assert log.initial_state() == (HardState(4, 2, 20), cs)
        assert log.entries(21, 23) == ents(21, 22, 4)
        with pytest.raises(Compacted):
            log.term(8)
    # An older snapshot is ignored.
    db.log.apply_snapshot(Snapshot(SnapshotMetadata(10, 3, ConfState()), b"old"))
    assert db.log.snapshot() == snap
    # A snapshot behind our last index but newer than our snapshot still resets.
    db.log.apply_snapshot(Snapshot(SnapshotMetadata(21, 4, cs), b"s21"))
    assert (db.log.first_index(), db.log.last_index()) == (22, 21)


def test_bootstrap_conf_state(db: Db) -> None:
    cs = ConfState(voters=(1, 2, 3))
    db.log.set_conf_state(cs)
    assert db.reopen().initial_state() == (HardState(), cs)
    # The fallback path the data dir uses without set_conf_state: an index-0 snapshot.
    cs2 = ConfState(voters=(1,))
    db.log.save(HardState(), [], Snapshot(SnapshotMetadata(0, 0, cs2)), True)
    assert db.reopen().initial_state() == (HardState(), cs2)
    assert (db.log.first_index(), db.log.last_index()) == (1, 0)


def test_reads_beyond_the_cache_come_from_disk(tmp_path: Path) -> None:
    d = Db(tmp_path / "db", cache_entries=16, cache_bytes=1 << 20)
    try:
        for lo in range(1, 200, 10):
            d.log.save(None, ents(lo, lo + 9, 1 + lo // 50, size=20), None)
        expected = [e for lo in range(1, 200, 10) for e in ents(lo, lo + 9, 1 + lo // 50, 20)]
        for log in now_and_after_reopen(d):
            first_cached, last_cached = log.cached_range()
            assert last_cached == 200 and first_cached > 1 and last_cached - first_cached < 16
            assert log.entries(1, 201) == expected
            assert [log.term(i) for i in range(1, 201)] == [e.term for e in expected]
            # max_bytes: 44 bytes per entry estimate -> 3 entries, across disk/cache too.
            assert log.entries(1, 201, max_bytes=3 * 44) == expected[:3]
            assert (
                log.entries(first_cached - 1, 201, max_bytes=3 * 44)
                == expected[first_cached - 2 : first_cached + 1]
            )
            assert log.entries(5, 6, max_bytes=1) == [expected[4]]
        # Overwrite below the cache: the cache restarts from the new entries.
        d.log.save(None, ents(50, 52, 9, 20), None)
        assert d.log.entries(45, 53) == expected[44:49] + ents(50, 52, 9, 20)
        assert d.log.cached_range()[1] == 52
    finally:
        d.close()


def test_cache_byte_bound(tmp_path: Path) -> None:
    d = Db(tmp_path / "db", cache_entries=10_000, cache_bytes=10 * 1024)
    try:
        d.log.save(None, ents(1, 100, 1, size=1000), None)
        first, last = d.log.cached_range()
        assert last == 100 and (last - first + 1) * 1024 <= 10 * 1024
        assert d.log.entries(1, 101) == ents(1, 100, 1, size=1000)
    finally:
        d.close()


def test_synced_writes_survive_a_killed_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from kvstore.raft.types import Entry, HardState
        from kvstore.storage.backend import Backend
        from kvstore.storage.raft_log import RocksLogStorage
        log = RocksLogStorage(Backend.open({str(path)!r}))
        for i in range(1, 51):
            log.save(HardState(i, 1, i - 1), [Entry(i, i, data=b"e%d" % i)], None, sync=True)
        log.save(HardState(60, 2, 49), [Entry(60, 40, data=b"new")], None, sync=True)
        print("saved", flush=True)
        os._exit(0)  # no close, no flush: like a crash right after the last ack
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "saved" in out.stdout
    d = Db(path)
    try:
        assert d.log.initial_state()[0] == HardState(60, 2, 49)
        assert d.log.last_index() == 40
        assert d.log.entries(1, 41) == [Entry(i, i, data=b"e%d" % i) for i in range(1, 40)] + [
            Entry(60, 40, data=b"new")
        ]
    finally:
        d.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matches_memory_log_storage_under_random_operations(tmp_path: Path, seed: int) -> None:
    """Differential check: after every operation (and every reopen) both storages
    answer every read the same way."""
    rng = random.Random(seed)
    d = Db(tmp_path / "db", cache_entries=8, cache_bytes=1 << 20)
    mem = MemoryLogStorage()
    term = 1
    try:
        for step in range(150):
            op = rng.random()
            last = mem.last_index()
            if op < 0.6:  # append, sometimes overwriting a suffix
                lo = rng.randint(max(mem.first_index(), last - 5), last + 1)
                if rng.random() < 0.3:
                    term += 1
                new = [
                    Entry(term, i, data=rng.randbytes(rng.randint(0, 12)))
                    for i in range(lo, lo + rng.randint(1, 6))
                ]
                hs = HardState(term, rng.randint(0, 3), min(mem.hard_state.commit + 1, lo))
                d.log.save(hs, new, None, sync=False)
                mem.append(new)
                mem.set_hard_state(hs)
            elif op < 0.75 and last >= mem.first_index():  # snapshot + compact
                at = rng.randint(mem.first_index(), last)
                cs = ConfState(voters=(1, 2, 3))
                assert d.log.create_snapshot(at, cs, b"s%d" % at) == mem.create_snapshot(
                    at, cs, b"s%d" % at
                )
                cut = rng.randint(mem.first_index() - 1, at)
                d.log.compact(cut)
                mem.compact(cut)
            elif op < 0.82:  # install a leader snapshot past our log
                at = last + rng.randint(1, 5)
                term += 1
                snap = Snapshot(SnapshotMetadata(at, term, ConfState(voters=(1, 2))), b"x")
                d.log.apply_snapshot(snap)
                mem.apply_snapshot(snap)
            elif rng.random() < 0.4:  # reopen: ~7% of steps (each costs a RocksDB open)
                d.reopen()
            assert snapshot_of(d.log) == snapshot_of(mem), f"seed {seed} step {step}"
            lo = rng.randint(mem.first_index(), mem.last_index() + 1)
            hi = rng.randint(lo, mem.last_index() + 1)
            mb = rng.choice([None, 1, 50, 200])
            assert d.log.entries(lo, hi, mb) == mem.entries(lo, hi, mb), f"seed {seed}"
    finally:
        d.close()
