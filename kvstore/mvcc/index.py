"""TreeIndex: every key's KeyIndex in bytewise key order (etcd index.go).

Owns: key -> KeyIndex, range resolution (single key, [key, end), key and up)
and whole-index compaction. Never touches storage.

Range conventions (already mapped by the caller from the wire):
`end is None` -> the single key; `end == b""` -> every key >= key;
otherwise [key, end). An `end <= key` yields nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

from sortedcontainers import SortedDict

from kvstore.mvcc.key_index import KeyIndex, Rev

ALL_KEYS_END = b""


def wire_range_end(range_end: bytes) -> bytes | None:
    """Map an etcd request's range_end to this index's convention.

    b"" (unset) -> None (single key); b"\\x00" -> b"" (no upper bound).
    """
    if not range_end:
        return None
    if range_end == b"\x00":
        return ALL_KEYS_END
    return range_end


class TreeIndex:
    """Ordered map of key -> KeyIndex."""

    __slots__ = ("_keys",)

    def __init__(self, keys: dict[bytes, KeyIndex] | None = None) -> None:
        self._keys: SortedDict = SortedDict(keys or {})

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, key: bytes) -> KeyIndex | None:
        return self._keys.get(key)

    def put(self, key: bytes, rev: Rev) -> None:
        ki = self._keys.get(key)
        if ki is None:
            ki = KeyIndex(key)
            self._keys[key] = ki
        ki.put(rev)

    def tombstone(self, key: bytes, rev: Rev) -> None:
        self._keys[key].tombstone(rev)

    def key_indexes(self, key: bytes, end: bytes | None) -> Iterator[KeyIndex]:
        """KeyIndexes of the keys in the range, ascending."""
        if end is None:
            ki = self._keys.get(key)
            if ki is not None:
                yield ki
            return
        if end == ALL_KEYS_END:
            names = self._keys.irange(key, None)
        elif end <= key:
            return
        else:
            names = self._keys.irange(key, end, inclusive=(True, False))
        keys = self._keys
        for name in names:
            yield keys[name]

    def revisions(
        self, key: bytes, end: bytes | None, at: int
    ) -> list[tuple[bytes, Rev]]:
        """(key, modified revision) of every key live at main revision `at`, key order."""
        out: list[tuple[bytes, Rev]] = []
        for ki in self.key_indexes(key, end):
            found = ki.get(at)
            if found is not None:
                out.append((ki.key, found[0]))
        return out

    def compact(self, at: int) -> tuple[list[Rev], list[Rev]]:
        """Compact every key at `at`; drop keys left empty.

        Returns (removed put revisions, removed tombstone revisions) to delete
        from disk.
        """
        available: set[Rev] = set()
        puts: list[Rev] = []
        tombs: list[Rev] = []
        empty: list[bytes] = []
        for ki in self._keys.values():
            removed_puts, removed_tombs = ki.compact(at, available)
            puts.extend(removed_puts)
            tombs.extend(removed_tombs)
            if ki.is_empty():
                empty.append(ki.key)
        for key in empty:
            del self._keys[key]
        return puts, tombs

    def items(self) -> Iterator[tuple[bytes, KeyIndex]]:
        return iter(self._keys.items())
