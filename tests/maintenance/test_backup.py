"""Snapshot file format: consistency, checksum, chunking, member-local keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kvstore.maintenance import backup
from kvstore.maintenance.backup import (
    CHUNK_BYTES,
    HASH_LEN,
    BackupError,
    inspect_file,
    iter_chunks,
    read_records,
    verify_file,
    write_backup,
)


def test_roundtrip_copies_replicated_state_only(member, tmp_path: Path) -> None:
    model = member.fill(300)
    member.set_meta(b"member_id", b"\x00" * 7 + b"\x01")
    member.set_meta(b"applied_index", (42).to_bytes(8, "big"))
    path = tmp_path / "s.snap"
    info = write_backup(member.backend, path)
    assert info.size == os.path.getsize(path)
    assert info.applied_index == 42
    records = list(read_records(path))
    kv = [(k, v) for f, k, v in records if f == "kv"]
    assert kv == [(bytes(k), bytes(v)) for k, v in member.backend.iterate("kv")]
    assert not [k for f, k, _ in records if f == "meta" and k == b"member_id"]
    assert len(kv) >= len(model)


def test_trailing_hash_is_sha256_of_body(member, tmp_path: Path) -> None:
    member.fill(50)
    path = tmp_path / "s.snap"
    write_backup(member.backend, path)
    raw = path.read_bytes()
    assert raw[-HASH_LEN:] == hashlib.sha256(raw[:-HASH_LEN]).digest()
    assert len(raw) % 512 == HASH_LEN  # what etcdctl snapshot save checks
    assert verify_file(path) == raw[-HASH_LEN:]


@pytest.mark.parametrize("damage", ["flip", "truncate", "magic"])
def test_corruption_is_detected(member, tmp_path: Path, damage: str) -> None:
    member.fill(50)
    path = tmp_path / "s.snap"
    write_backup(member.backend, path)
    raw = bytearray(path.read_bytes())
    if damage == "flip":
        raw[len(raw) // 2] ^= 0x40
    elif damage == "truncate":
        raw = raw[: len(raw) - 10]
    else:
        raw[0:4] = b"XXXX"
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError):
        verify_file(path)
    with pytest.raises(BackupError):
        list(read_records(path))


def test_chunks_match_etcd_stream_shape(member, tmp_path: Path) -> None:
    member.fill(2000)
    path = tmp_path / "s.snap"
    info = write_backup(member.backend, path)
    chunks = list(iter_chunks(path))
    body = info.size - HASH_LEN
    assert body > 2 * CHUNK_BYTES  # several chunks
    assert all(len(b) <= CHUNK_BYTES for b, _ in chunks)
    assert chunks[-1] == (info.sha256, 0)
    assert chunks[-2][1] == 0
    sent = 0
    for blob, remaining in chunks[:-1]:
        sent += len(blob)
        assert remaining == body - sent
    assert b"".join(b for b, _ in chunks) == path.read_bytes()


def test_snapshot_is_consistent_while_writes_continue(member, tmp_path: Path) -> None:
    member.fill(100)
    with member.backend.snapshot() as view:
        before = list(backup.iter_view(view))
        member.put(b"later", b"x")  # after the view was taken
        after_view = list(backup.iter_view(view))
    assert before == after_view
    path = tmp_path / "s.snap"
    info = inspect_file(write_backup(member.backend, path) and path)
    assert info.families["kv"] == len([r for r in before if r[0] == "kv"]) + 1
