"""Snapshot file: a consistent copy of a member's replicated state + SHA-256.

Owns: the on-disk/over-the-wire format written by `write_backup` and read by
`read_records` (used by `Maintenance/Snapshot`, `kvstore snapshot restore` and
Raft snapshot transfer), checksum verification and 32 KiB chunking the way
etcd streams `Maintenance/Snapshot`.
Never: writes to the backend; never includes the Raft log or member-local
identity keys (a snapshot describes the cluster's state, not one member).

Format (all integers big-endian):

    body    = MAGIC, then records, then END (one 0 byte), then zero padding
              up to a multiple of 512 bytes (etcdctl `snapshot save` checks
              that size % 512 == 32, as for a bbolt file + hash)
    record  = family:u8 (1 kv, 2 meta, 3 lease) | klen:u32 | vlen:u32 | key | value
    file    = body | sha256(body)          (32 bytes, like etcd's trailing hash)

Invariant: the records come from ONE `Backend.snapshot()` view, so the MVCC
data, the applied index stored in `meta` and the member table agree.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvstore.storage.fsutil import fsync_dir

MAGIC = b"KVSTORE-SNAPSHOT/1\n"
HASH_LEN = 32
CHUNK_BYTES = 32 * 1024  # etcd streams 32 KiB blobs
PAGE_BYTES = 512  # etcdctl checks size % 512 == 32 (bbolt page multiple + SHA-256)

FAMILY_CODES: dict[str, int] = {"kv": 1, "meta": 2, "lease": 3}
CODE_FAMILIES: dict[int, str] = {v: k for k, v in FAMILY_CODES.items()}
# Keys of the `meta` family that identify ONE member; never copied between members.
LOCAL_META_KEYS: frozenset[bytes] = frozenset({b"member_id", b"cluster_id", b"member_name"})
APPLIED_INDEX_KEY = b"applied_index"
APPLIED_TERM_KEY = b"applied_term"
MEMBERS_KEY = b"members"

_REC = struct.Struct(">BII")
_U64 = struct.Struct(">Q")
_WRITE_BUFFER = 1 << 20


class BackupError(Exception):
    """A snapshot file is truncated, corrupt or not a kvstore snapshot."""


@dataclass
class BackupInfo:
    """What a snapshot file holds, gathered while writing or reading it."""

    size: int = 0  # file size including the trailing hash
    sha256: bytes = b""
    records: int = 0
    applied_index: int = 0
    applied_term: int = 0
    members: bytes = b""  # meta[b"members"] (JSON member table) or b""
    families: dict[str, int] = field(default_factory=dict)


def _u64(raw: bytes | None) -> int:
    return _U64.unpack(bytes(raw))[0] if raw and len(raw) == 8 else 0


def _note(info: BackupInfo, family: str, key: bytes, value: bytes) -> None:
    info.records += 1
    info.families[family] = info.families.get(family, 0) + 1
    if family == "meta":
        if key == APPLIED_INDEX_KEY:
            info.applied_index = _u64(value)
        elif key == APPLIED_TERM_KEY:
            info.applied_term = _u64(value)
        elif key == MEMBERS_KEY:
            info.members = bytes(value)


def iter_view(view: Any) -> Iterator[tuple[str, bytes, bytes]]:
    """(family, key, value) of the replicated state in a BackendSnapshot view."""
    for family in FAMILY_CODES:
        for key, value in view.iterate(family):
            key = bytes(key)
            if family == "meta" and key in LOCAL_META_KEYS:
                continue
            yield family, key, bytes(value)


def write_records(
    records: Iterator[tuple[str, bytes, bytes]], path: str | os.PathLike[str]
) -> BackupInfo:
    """Write `records` as a snapshot file at `path` (via path.tmp + rename, fsynced)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    info = BackupInfo()
    h = hashlib.sha256()
    size = 0
    with open(tmp, "wb", buffering=_WRITE_BUFFER) as f:

        def emit(data: bytes) -> None:
            nonlocal size
            h.update(data)
            f.write(data)
            size += len(data)

        emit(MAGIC)
        pack = _REC.pack
        for family, key, value in records:
            emit(pack(FAMILY_CODES[family], len(key), len(value)))
            emit(key)
            emit(value)
            _note(info, family, key, value)
        emit(b"\x00")
        # Pad the body to a multiple of 512 bytes: etcdctl's `snapshot save`
        # refuses a download unless size % 512 == 32 (bbolt pages + hash).
        emit(b"\x00" * (-size % PAGE_BYTES))
        digest = h.digest()
        f.write(digest)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    info.size = size + HASH_LEN
    info.sha256 = digest
    return info


def write_backup(backend: Any, path: str | os.PathLike[str]) -> BackupInfo:
    """Consistent snapshot of `backend` (one read view) written to `path`.

    Safe to run in a worker thread while the node keeps applying: the view
    pins the state of the instant it was taken."""
    with backend.snapshot() as view:
        return write_records(iter_view(view), path)


def verify_file(path: str | os.PathLike[str]) -> bytes:
    """Check the trailing SHA-256 of `path`; return it. Raises BackupError."""
    size = os.path.getsize(path)
    if size < len(MAGIC) + 1 + HASH_LEN:
        raise BackupError(f"{path}: too short to be a kvstore snapshot ({size} bytes)")
    h = hashlib.sha256()
    remaining = size - HASH_LEN
    with open(path, "rb") as f:
        head = f.read(len(MAGIC))
        if head != MAGIC:
            raise BackupError(f"{path}: not a kvstore snapshot (bad magic)")
        h.update(head)
        remaining -= len(head)
        while remaining > 0:
            block = f.read(min(remaining, _WRITE_BUFFER))
            if not block:
                raise BackupError(f"{path}: truncated")
            h.update(block)
            remaining -= len(block)
        trailer = f.read(HASH_LEN)
    if h.digest() != trailer:
        raise BackupError(f"{path}: snapshot checksum mismatch (corrupt or truncated file)")
    return trailer


def read_records(
    path: str | os.PathLike[str], *, verify: bool = True
) -> Iterator[tuple[str, bytes, bytes]]:
    """(family, key, value) records of a snapshot file, checksum verified first."""
    if verify:
        verify_file(path)
    with open(path, "rb", buffering=_WRITE_BUFFER) as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise BackupError(f"{path}: not a kvstore snapshot (bad magic)")
        while True:
            code = f.read(1)
            if not code:
                raise BackupError(f"{path}: truncated (no end marker)")
            if code == b"\x00":
                return
            rest = f.read(_REC.size - 1)
            if len(rest) != _REC.size - 1:
                raise BackupError(f"{path}: truncated record header")
            fam, klen, vlen = _REC.unpack(code + rest)
            family = CODE_FAMILIES.get(fam)
            if family is None:
                raise BackupError(f"{path}: unknown family code {fam}")
            key = f.read(klen)
            value = f.read(vlen)
            if len(key) != klen or len(value) != vlen:
                raise BackupError(f"{path}: truncated record")
            yield family, key, value


def inspect_file(path: str | os.PathLike[str]) -> BackupInfo:
    """Verify and summarise a snapshot file (records per family, applied index)."""
    info = BackupInfo(size=os.path.getsize(path))
    info.sha256 = verify_file(path)
    for family, key, value in read_records(path, verify=False):
        _note(info, family, key, value)
    return info


def iter_chunks(
    path: str | os.PathLike[str], chunk_bytes: int = CHUNK_BYTES
) -> Iterator[tuple[bytes, int]]:
    """(blob, remaining_bytes) pieces of a snapshot file, as etcd's Snapshot RPC
    streams them: the body in `chunk_bytes` pieces with the bytes still to come
    of the body, then the 32-byte SHA-256 alone with remaining 0."""
    total = os.path.getsize(path) - HASH_LEN
    sent = 0
    with open(path, "rb") as f:
        while sent < total:
            blob = f.read(min(chunk_bytes, total - sent))
            if not blob:
                raise BackupError(f"{path}: shrank while streaming")
            sent += len(blob)
            yield blob, total - sent
        trailer = f.read(HASH_LEN)
    if len(trailer) != HASH_LEN:
        raise BackupError(f"{path}: truncated while streaming")
    yield trailer, 0
