"""Revision key encoding: fixed width, big-endian, order-preserving, tombstone mark."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvstore.mvcc.revision import (
    MARKED_REV_BYTES_LEN,
    REV_BYTES_LEN,
    Revision,
    decode_revision,
    encode_revision,
    is_tombstone,
    revision_start,
)

ints = st.integers(min_value=0, max_value=2**63 - 1)
revs = st.tuples(ints, ints)


@given(revs, st.booleans())
def test_roundtrip(rev: tuple[int, int], tomb: bool) -> None:
    raw = encode_revision(rev, tombstone=tomb)
    assert len(raw) == (MARKED_REV_BYTES_LEN if tomb else REV_BYTES_LEN)
    assert decode_revision(raw) == Revision(*rev)
    assert is_tombstone(raw) == tomb


@given(revs, revs)
def test_byte_order_is_revision_order(a: tuple[int, int], b: tuple[int, int]) -> None:
    ea, eb = encode_revision(a), encode_revision(b)
    assert (ea < eb) == (a < b)
    assert (ea == eb) == (a == b)


@given(revs, revs)
def test_tombstone_sorts_between_its_revision_and_the_next(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    if a < b:
        assert encode_revision(a) < encode_revision(a, True) < encode_revision(b)


@given(ints, ints)
def test_revision_start_bounds_every_sub(main: int, sub: int) -> None:
    assert revision_start(main) <= encode_revision((main, sub))
    if main < 2**63 - 1:
        assert encode_revision((main, sub), True) < revision_start(main + 1)


def test_layout_matches_etcd() -> None:
    assert encode_revision((2, 1)) == b"\x00" * 7 + b"\x02_" + b"\x00" * 7 + b"\x01"
    assert encode_revision((2, 1), tombstone=True)[-1:] == b"t"


@pytest.mark.parametrize("raw", [b"", b"x" * 17, b"\x00" * 16, b"\x00" * 19])
def test_decode_rejects_garbage(raw: bytes) -> None:
    with pytest.raises(ValueError):
        decode_revision(raw)
