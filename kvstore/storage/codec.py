"""The fixed-width integer encoding every layer stores in RocksDB values.

Owns: `encode_u64` / `decode_u64` (8 bytes, big-endian, so encoded ids and
indexes sort like the numbers) — the one copy mvcc/, server/ and the
backend's meta records share.
Never: touches RocksDB itself.
"""

from __future__ import annotations

import struct

U64 = struct.Struct(">Q")


def encode_u64(value: int) -> bytes:
    return U64.pack(value)


def decode_u64(data: bytes | None) -> int:
    """The value of an 8-byte record; 0 for a missing (None or empty) one."""
    return U64.unpack(data)[0] if data else 0
