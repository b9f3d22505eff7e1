"""Range permission sets against a naive model (Hypothesis), plus the cases
observed on etcd 3.4.23 (user alice with read [/a, /z), readwrite prefix
/app/, write k1)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.auth.ranges import IntervalSet, RangePermissions, permission_interval
from kvstore.pb import auth_pb2

R, W, RW = auth_pb2.Permission.READ, auth_pb2.Permission.WRITE, auth_pb2.Permission.READWRITE

keys = st.binary(min_size=0, max_size=3).map(lambda b: bytes(x % 3 + 0x61 for x in b))
nonempty_keys = keys.filter(bool)
# A permission's range_end: none (a key), b"\x00" (to the end) or a key.
perm_ends = st.one_of(st.just(b""), st.just(b"\x00"), keys)


def _naive_covered(intervals, key: bytes, end: bytes | None) -> bool:
    """Every point of [key, end) lies in some interval. An uncovered point, if
    any, is `key` itself or the end of some interval inside the range."""

    def inside(p: bytes) -> bool:
        return any(b <= p and (e is None or p < e) for b, e in intervals)

    points = [key] + [
        e for _, e in intervals if e is not None and key < e and (end is None or e < end)
    ]
    return all(inside(p) for p in points)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(keys, perm_ends), max_size=6),
    nonempty_keys,
    st.one_of(st.just(b"\x00"), nonempty_keys),
)
def test_covers_matches_naive_union(perms, key: bytes, end: bytes) -> None:
    intervals = [iv for k, e in perms if (iv := permission_interval(k, e)) is not None]
    q_end = None if end == b"\x00" else end
    if q_end is not None and not key < q_end:
        return  # inverted ranges: see test_inverted_range_as_etcd
    got = IntervalSet.of(intervals).covers(key, end)
    assert got == _naive_covered(intervals, key, q_end)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(keys, perm_ends), max_size=6), nonempty_keys)
def test_single_key_is_the_one_key_range(perms, key: bytes) -> None:
    intervals = [iv for k, e in perms if (iv := permission_interval(k, e)) is not None]
    s = IntervalSet.of(intervals)
    assert s.contains_key(key) == s.covers(key, key + b"\x00")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([R, W, RW]), keys, perm_ends), max_size=6), nonempty_keys)
def test_readwrite_counts_for_both(perms, key: bytes) -> None:
    role = auth_pb2.Role(
        keyPermission=[auth_pb2.Permission(permType=t, key=k, range_end=e) for t, k, e in perms]
    )
    merged = RangePermissions.merge([role])
    as_rw = auth_pb2.Role(
        keyPermission=[
            auth_pb2.Permission(permType=RW, key=k, range_end=e) for t, k, e in perms if t == RW
        ]
    )
    rw_only = RangePermissions.merge([as_rw])
    if rw_only.allows(False, key):
        assert merged.allows(False, key) and merged.allows(True, key)


def _alice() -> RangePermissions:
    role = auth_pb2.Role(
        keyPermission=[
            auth_pb2.Permission(permType=RW, key=b"/app/", range_end=b"/app0"),
            auth_pb2.Permission(permType=R, key=b"/a", range_end=b"/z"),
            auth_pb2.Permission(permType=W, key=b"k1"),
        ]
    )
    return RangePermissions.merge([role])


def test_cases_observed_on_etcd() -> None:
    a = _alice()
    assert a.allows(True, b"k1") and not a.allows(False, b"k1")
    assert a.allows(False, b"/b")
    assert a.allows(False, b"/a", b"/z")
    assert not a.allows(False, b"/a", b"/z\x00")
    assert a.allows(True, b"/app/x") and a.allows(True, b"/app/", b"/app0")
    assert not a.allows(True, b"/app/", b"\x00")
    assert not a.allows(True, b"zz")


def test_inverted_range_as_etcd() -> None:
    # etcd 3.4.23 denied get [/b, /a) to alice (observed); the interval tree
    # visits nothing overlapping an inverted range.
    assert not _alice().allows(False, b"/b", b"/a")


def test_from_key_and_empty_keys() -> None:
    everything = RangePermissions.merge(
        [
            auth_pb2.Role(
                keyPermission=[auth_pb2.Permission(permType=R, key=b"\x00", range_end=b"\x00")]
            )
        ]
    )
    assert everything.allows(False, b"\x00", b"\x00")
    assert everything.allows(False, b"anything")
    assert not everything.allows(True, b"anything")
    empty_key = RangePermissions.merge(
        [auth_pb2.Role(keyPermission=[auth_pb2.Permission(permType=RW, key=b"")])]
    )
    assert not empty_key.allows(False, b"a")  # etcd: an empty begin is +infinity
    assert not everything.allows(False, b"")
