"""Revision(main, sub) and its fixed-width big-endian key encoding (etcd layout).

Owns: the byte layout of keys in the `kv` column family. Never touches storage.

    byte:  0 ........ 7   8    9 ....... 16   [17]
           main (BE u64)  '_'  sub (BE u64)   ['t' = tombstone]

Big-endian fixed width makes bytewise key order equal to (main, sub) order, so
iterating the column family walks history in revision order. A tombstone (the
record a delete leaves) carries a trailing 't'; it sorts right after the plain
key of the same revision, and no two records share a revision.

Invariants: 0 <= main, sub < 2**63 (etcd's int64 revisions).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

REV_BYTES_LEN = 17
MARKED_REV_BYTES_LEN = 18
TOMBSTONE_MARK = b"t"

_PACK = struct.Struct(">QcQ")  # main, "_", sub
_SEP = b"_"


class Revision(NamedTuple):
    """A point in the store's history: `main` per write txn, `sub` per change in it."""

    main: int
    sub: int = 0


def encode_revision(rev: tuple[int, int], tombstone: bool = False) -> bytes:
    """The `kv` column family key of `rev` (18 bytes with the tombstone mark)."""
    raw = _PACK.pack(rev[0], _SEP, rev[1])
    return raw + TOMBSTONE_MARK if tombstone else raw


def decode_revision(raw: bytes) -> Revision:
    """Inverse of `encode_revision` (the tombstone mark is ignored; see `is_tombstone`)."""
    if len(raw) not in (REV_BYTES_LEN, MARKED_REV_BYTES_LEN) or raw[8:9] != _SEP:
        raise ValueError(f"not an encoded revision: {raw!r}")
    main, _, sub = _PACK.unpack_from(raw)
    return Revision(main, sub)


def is_tombstone(raw: bytes) -> bool:
    return len(raw) == MARKED_REV_BYTES_LEN and raw[-1:] == TOMBSTONE_MARK


def revision_start(main: int) -> bytes:
    """The smallest encoded key with this main revision (for range scans)."""
    return _PACK.pack(main, _SEP, 0)
