"""KeyIndex: generations, tombstones, visibility and compaction (etcd key_index.go rules),
checked case by case and against a naive reference history with Hypothesis."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.mvcc.key_index import KeyIndex

Rev = tuple[int, int]


def build(events: list[tuple[int, bool]]) -> KeyIndex:
    """events: (main, is_tombstone) with increasing mains; sub is always 0."""
    ki = KeyIndex(b"k")
    for main, tomb in events:
        if tomb:
            ki.tombstone((main, 0))
        else:
            ki.put((main, 0))
    return ki


def test_get_across_generations() -> None:
    ki = build([(2, False), (4, False), (6, True), (8, False), (9, True)])
    assert ki.get(1) is None
    assert ki.get(2) == ((2, 0), (2, 0), 1)
    assert ki.get(5) == ((4, 0), (2, 0), 2)
    assert ki.get(6) is None  # deleted at 6
    assert ki.get(7) is None
    assert ki.get(8) == ((8, 0), (8, 0), 1)  # new generation: version restarts
    assert ki.get(9) is None
    assert ki.latest() is None


def test_tombstone_on_deleted_key_is_rejected() -> None:
    ki = build([(2, False), (3, True)])
    with pytest.raises(ValueError):
        ki.tombstone((4, 0))


def test_put_must_increase() -> None:
    ki = build([(5, False)])
    with pytest.raises(ValueError):
        ki.put((5, 0))


def test_compact_keeps_newest_at_or_below() -> None:
    ki = build([(2, False), (4, False), (6, False)])
    available: set[Rev] = set()
    puts, tombs = ki.compact(5, available)
    assert available == {(4, 0)} and puts == [(2, 0)] and tombs == []
    assert ki.get(5) == ((4, 0), (2, 0), 2)  # version survives trimming
    assert ki.get(6) == ((6, 0), (2, 0), 3)


def test_compact_at_tombstone_drops_the_generation() -> None:
    ki = build([(2, False), (3, True)])
    available: set[Rev] = set()
    puts, tombs = ki.compact(3, available)
    assert (puts, tombs, available) == ([(2, 0)], [(3, 0)], set())
    assert ki.is_empty()


def test_compact_before_tombstone_keeps_it() -> None:
    ki = build([(2, False), (3, True), (5, False)])
    available: set[Rev] = set()
    puts, tombs = ki.compact(2, available)
    assert (puts, tombs, available) == ([], [], {(2, 0)})
    assert ki.get(2) == ((2, 0), (2, 0), 1) and ki.get(3) is None


def test_restore_uses_stored_create_and_version() -> None:
    ki = KeyIndex(b"k")
    ki.restore((2, 0), (7, 0), 4)
    ki.put((9, 0))
    assert ki.get(8) == ((7, 0), (2, 0), 4)
    assert ki.get(9) == ((9, 0), (2, 0), 5)


# --- naive reference --------------------------------------------------------------


def ref_get(events: list[tuple[int, bool]], at: int) -> tuple[Rev, Rev, int] | None:
    visible = None
    created = None
    version = 0
    for main, tomb in events:
        if main > at:
            break
        if tomb:
            visible, created, version = None, None, 0
        else:
            if created is None:
                created = (main, 0)
            version += 1
            visible = ((main, 0), created, version)
    return visible


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[int, bool]]:
    n = draw(st.integers(min_value=1, max_value=25))
    gaps = draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))
    events: list[tuple[int, bool]] = []
    main = 1
    live = False
    for gap in gaps:
        main += gap
        tomb = live and draw(st.booleans())
        events.append((main, tomb))
        live = not tomb
    return events


@settings(max_examples=300, deadline=None)
@given(histories(), st.lists(st.integers(0, 80), max_size=4))
def test_matches_reference_through_compactions(
    events: list[tuple[int, bool]], points: list[int]
) -> None:
    ki = build(events)
    last = events[-1][0]
    on_disk = {(m, 0) for m, _ in events}
    floor = 0
    for at in sorted(set(points)):
        available: set[Rev] = set()
        puts, tombs = ki.compact(at, available)
        floor = at
        removed = set(puts) | set(tombs)
        assert not removed & available
        on_disk -= removed
        # Everything above the compaction point stays on disk.
        assert {(m, 0) for m, _ in events if m > at} <= on_disk
        # What a read at `at` needs is kept; nothing else at or below `at` is.
        wanted = ref_get(events, at)
        assert {r for r in on_disk if r[0] <= at} == ({wanted[0]} if wanted else set())
        if ki.is_empty():
            assert wanted is None and last <= at
            return
    for at in range(floor, last + 2):
        assert ki.get(at) == ref_get(events, at), at
