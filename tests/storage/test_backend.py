"""Backend: column families, atomic batches, bytewise iteration, snapshots, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import rocksdict

from kvstore.storage.backend import COLUMN_FAMILIES, Backend


@pytest.fixture
def backend(tmp_path: Path):
    b = Backend.open(tmp_path / "db")
    yield b
    b.close()


def _put(b: Backend, cf: str, items: dict[bytes, bytes], sync: bool = False) -> None:
    batch = b.batch()
    for k, v in items.items():
        batch.put(cf, k, v)
    b.write(batch, sync=sync)


def test_open_creates_every_column_family(tmp_path: Path) -> None:
    b = Backend.open(tmp_path / "db")
    b.close()
    names = rocksdict.Rdict.list_cf(str(tmp_path / "db"), rocksdict.Options(raw_mode=True))
    assert set(COLUMN_FAMILIES) <= set(names)


def test_reopen_keeps_data_in_every_family(tmp_path: Path) -> None:
    b = Backend.open(tmp_path / "db")
    batch = b.batch()
    for cf in COLUMN_FAMILIES:
        batch.put(cf, b"k", cf.encode())
    b.write(batch, sync=True)
    b.close()
    b = Backend.open(tmp_path / "db")
    try:
        assert {cf: b.get(cf, b"k") for cf in COLUMN_FAMILIES} == {
            cf: cf.encode() for cf in COLUMN_FAMILIES
        }
    finally:
        b.close()


def test_unknown_family_on_disk_is_opened(tmp_path: Path) -> None:
    path = str(tmp_path / "db")
    opts = rocksdict.Options(raw_mode=True)
    db = rocksdict.Rdict(path, opts)
    db.create_column_family("extra", rocksdict.Options(raw_mode=True))
    db.close()
    del db
    b = Backend.open(path)
    try:
        assert "extra" in b.column_families
        assert set(COLUMN_FAMILIES) <= set(b.column_families)
    finally:
        b.close()


def test_families_are_separate_key_spaces(backend: Backend) -> None:
    batch = backend.batch()
    batch.put("kv", b"same", b"in-kv")
    batch.put("meta", b"same", b"in-meta")
    backend.write(batch, sync=False)
    assert backend.get("kv", b"same") == b"in-kv"
    assert backend.get("meta", b"same") == b"in-meta"
    assert backend.get("lease", b"same") is None


def test_empty_value_is_not_missing(backend: Backend) -> None:
    _put(backend, "kv", {b"k": b""})
    assert backend.get("kv", b"k") == b""
    assert backend.get("kv", b"other") is None


def test_batch_delete_and_delete_range(backend: Backend) -> None:
    _put(backend, "kv", {bytes([c]): b"v" for c in b"abcdef"})
    batch = backend.batch()
    batch.delete("kv", b"a")
    batch.delete_range("kv", b"c", b"e")
    batch.put("kv", b"z", b"new")
    assert len(batch) == 3 and batch.size_bytes() > 0
    backend.write(batch, sync=True)
    assert [k for k, _ in backend.iterate("kv")] == [b"b", b"e", b"f", b"z"]


def test_iterate_is_half_open_and_bytewise(backend: Backend) -> None:
    keys = [b"\x00", b"a", b"a\x00", b"a\xff", b"b", b"\xff", b"\xff\xff"]
    _put(backend, "kv", {k: k + b"!" for k in reversed(keys)})
    assert [k for k, _ in backend.iterate("kv")] == keys
    assert list(backend.iterate("kv", b"a", b"b")) == [
        (b"a", b"a!"), (b"a\x00", b"a\x00!"), (b"a\xff", b"a\xff!")
    ]
    assert [k for k, _ in backend.iterate("kv", b"a\x01")] == [b"a\xff", b"b", b"\xff", b"\xff\xff"]
    assert list(backend.iterate("kv", b"c", b"c")) == []


def test_snapshot_is_a_consistent_view(backend: Backend) -> None:
    _put(backend, "kv", {b"a": b"1", b"b": b"1"})
    _put(backend, "meta", {b"applied": b"1"})
    with backend.snapshot() as snap:
        batch = backend.batch()
        batch.put("kv", b"a", b"2")
        batch.put("kv", b"aa", b"2")
        batch.delete("kv", b"b")
        batch.put("meta", b"applied", b"2")
        backend.write(batch, sync=False)
        assert snap.get("kv", b"a") == b"1"
        assert snap.get("kv", b"aa") is None
        assert snap.get("meta", b"applied") == b"1"
        assert list(snap.iterate("kv")) == [(b"a", b"1"), (b"b", b"1")]
        assert list(snap.iterate("kv", b"b")) == [(b"b", b"1")]
    assert list(backend.iterate("kv")) == [(b"a", b"2"), (b"aa", b"2")]


def test_snapshot_iterations_may_interleave(backend: Backend) -> None:
    _put(backend, "kv", {bytes([c]): b"v" for c in b"abcd"})
    with backend.snapshot() as snap:
        outer = snap.iterate("kv")
        seen = []
        for key, _ in outer:
            inner = [k for k, _ in snap.iterate("kv", key)]
            assert snap.get("kv", b"a") == b"v"
            seen.append((key, inner))
        assert seen == [
            (b"a", [b"a", b"b", b"c", b"d"]),
            (b"b", [b"b", b"c", b"d"]),
            (b"c", [b"c", b"d"]),
            (b"d", [b"d"]),
        ]


def test_closed_snapshot_refuses_reads(backend: Backend) -> None:
    snap = backend.snapshot()
    snap.close()
    with pytest.raises(RuntimeError):
        snap.get("kv", b"a")


def test_checkpoint_is_an_openable_copy(backend: Backend, tmp_path: Path) -> None:
    _put(backend, "kv", {b"a": b"1"}, sync=True)
    _put(backend, "raft_state", {b"hs": b"x"}, sync=True)
    backend.checkpoint(tmp_path / "cp")
    _put(backend, "kv", {b"a": b"2"})
    copy = Backend.open(tmp_path / "cp")
    try:
        assert copy.get("kv", b"a") == b"1"
        assert copy.get("raft_state", b"hs") == b"x"
    finally:
        copy.close()


def test_size_grows_with_data(backend: Backend) -> None:
    before = backend.size_bytes()
    _put(backend, "kv", {b"k%05d" % i: b"x" * 200 for i in range(2000)}, sync=True)
    backend.flush()
    assert backend.size_bytes() > before
    assert backend.size_in_use_bytes() > 0


def test_closed_backend_refuses_writes(tmp_path: Path) -> None:
    b = Backend.open(tmp_path / "db")
    batch = b.batch()
    batch.put("kv", b"a", b"1")
    b.close()
    b.close()  # idempotent
    with pytest.raises(RuntimeError):
        b.write(batch, sync=False)
