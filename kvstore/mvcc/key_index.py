"""KeyIndex: the revision history of one key, in generations (etcd key_index.go).

Owns: which revisions of a key exist and are visible at a given main revision,
and what compaction keeps. Never touches storage; revisions are (main, sub)
tuples (`Revision` is a NamedTuple, so both compare the same).

A key's life is a list of generations. A generation starts with a put that
(re)creates the key and ends with a tombstone (a delete); the last generation
is the open one and may be empty (the key is currently deleted):

    put(1.0); put(2.0); tombstone(3.0); put(4.0); tombstone(5.0)
    generations = [ {1.0, 2.0, 3.0(t)}, {4.0, 5.0(t)}, {} ]

Invariants:
- a key's revisions strictly increase (`modified` is the last one recorded);
- every generation except the last ends with its tombstone and is non-empty;
- `Generation.ver` counts every put of the generation ever made, so the version
  of revs[i] is `ver - (len(revs) - 1 - i)` even after compaction trimmed revs.

Compaction at `at` keeps, per key, the newest revision <= at (unless it is a
tombstone) and everything newer; a key whose history becomes empty is dropped.
"""

from __future__ import annotations

from bisect import bisect_right

Rev = tuple[int, int]

_MAX_SUB = 1 << 63


class Generation:
    """Revisions of one key between a (re)creation and its tombstone."""

    __slots__ = ("ver", "created", "revs")

    def __init__(self) -> None:
        self.ver = 0
        self.created: Rev = (0, 0)
        self.revs: list[Rev] = []

    def __repr__(self) -> str:
        return f"Generation(ver={self.ver}, created={self.created}, revs={self.revs})"


class KeyIndex:
    """History of one key. Methods mirror etcd's keyIndex."""

    __slots__ = ("key", "modified", "generations")

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.modified: Rev = (0, 0)
        self.generations: list[Generation] = [Generation()]

    def put(self, rev: Rev) -> None:
        """Record a put at `rev` (must be newer than every recorded revision)."""
        if rev <= self.modified:
            raise ValueError(f"revision {rev} is not newer than {self.modified} for {self.key!r}")
        g = self.generations[-1]
        if not g.revs:
            g.created = rev
        g.revs.append(rev)
        g.ver += 1
        self.modified = rev

    def tombstone(self, rev: Rev) -> None:
        """Record a delete at `rev`; the key must be live."""
        if not self.generations[-1].revs:
            raise ValueError(f"tombstone on a deleted key {self.key!r}")
        self.put(rev)
        self.generations.append(Generation())

    def restore(self, created: Rev, modified: Rev, version: int) -> None:
        """Rebuild from disk: the first surviving record of a live generation.

        Compaction may have removed the generation's older puts, so `created`
        and `version` come from the stored KeyValue (as etcd's restore does).
        """
        g = self.generations[-1]
        if g.revs:
            raise ValueError(f"restore on a live key {self.key!r}")
        g.created = created
        g.ver = version
        g.revs.append(modified)
        self.modified = modified

    def is_empty(self) -> bool:
        return len(self.generations) == 1 and not self.generations[0].revs

    def latest(self) -> tuple[Rev, Rev, int] | None:
        """(modified, created, version) of the live key now, or None if deleted."""
        g = self.generations[-1]
        if not g.revs:
            return None
        return g.revs[-1], g.created, g.ver

    def get(self, at: int) -> tuple[Rev, Rev, int] | None:
        """(modified, created, version) visible at main revision `at`, or None."""
        if at >= self.modified[0]:
            # Hot path: reading at (or after) the key's last change.
            g = self.generations[-1]
            return (g.revs[-1], g.created, g.ver) if g.revs else None
        found = self._find_generation(at)
        if found is None:
            return None
        g = found
        n = bisect_right(g.revs, (at, _MAX_SUB)) - 1
        if n < 0:
            return None
        return g.revs[n], g.created, g.ver - (len(g.revs) - 1 - n)

    def _find_generation(self, at: int) -> Generation | None:
        gens = self.generations
        last = len(gens) - 1
        for i in range(last, -1, -1):
            g = gens[i]
            if not g.revs:
                continue
            if i != last and g.revs[-1][0] <= at:
                # The generation ended (tombstone) at or before `at`: deleted then.
                return None
            if g.revs[0][0] <= at:
                return g
        return None

    def since(self, at: int) -> list[Rev]:
        """Every revision with main >= at, oldest first (watch replay helpers)."""
        out: list[Rev] = []
        for g in self.generations:
            for rev in g.revs:
                if rev[0] >= at:
                    out.append(rev)
        return out

    def compact(self, at: int, available: set[Rev]) -> tuple[list[Rev], list[Rev]]:
        """Drop history at or below `at` except what a read at `at` still needs.

        Adds the kept revision (if any) to `available` and returns the removed
        (put revisions, tombstone revisions) so the caller can delete them from
        disk. The caller drops the key if `is_empty()` afterwards.
        """
        puts: list[Rev] = []
        tombs: list[Rev] = []
        gens = self.generations
        gen_idx = 0
        # Skip the generations that ended (tombstone) at or before `at`.
        while gen_idx < len(gens) - 1 and gens[gen_idx].revs[-1][0] <= at:
            dead = gens[gen_idx].revs
            puts.extend(dead[:-1])
            tombs.append(dead[-1])
            gen_idx += 1
        g = gens[gen_idx]
        if g.revs:
            n = bisect_right(g.revs, (at, _MAX_SUB)) - 1
            if n >= 0:
                available.add(g.revs[n])
                puts.extend(g.revs[:n])
                del g.revs[:n]
            # Only the tombstone left in a closed generation: the key is gone at `at`.
            if len(g.revs) == 1 and gen_idx != len(gens) - 1:
                available.discard(g.revs[0])
                tombs.append(g.revs[0])
                gen_idx += 1
        del gens[:gen_idx]
        return puts, tombs

    def __repr__(self) -> str:
        return f"KeyIndex({self.key!r}, modified={self.modified}, {self.generations})"
