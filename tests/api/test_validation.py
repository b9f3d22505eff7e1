"""kvstore.api.validation: etcd's v3rpc request checks, case by case.

Each test names the etcd rule it checks (key.go: checkRangeRequest,
checkPutRequest, checkDeleteRequest, checkTxnRequest, checkRequestOp,
checkIntervals). Flat put/delete branches are also checked against a naive
reference with Hypothesis.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore import errors
from kvstore.api.options import MAX_TXN_OPS
from kvstore.api.validation import (
    check_delete_range,
    check_intervals,
    check_put,
    check_range,
    check_request_size,
    check_txn,
)
from kvstore.pb import rpc_pb2

R = rpc_pb2


def put(key: bytes, value: bytes = b"v", **kw) -> R.RequestOp:
    return R.RequestOp(request_put=R.PutRequest(key=key, value=value, **kw))


def get(key: bytes, range_end: bytes = b"") -> R.RequestOp:
    return R.RequestOp(request_range=R.RangeRequest(key=key, range_end=range_end))


def delete(key: bytes, range_end: bytes = b"") -> R.RequestOp:
    return R.RequestOp(request_delete_range=R.DeleteRangeRequest(key=key, range_end=range_end))


def nested(success=(), failure=(), compare=()) -> R.RequestOp:
    return R.RequestOp(
        request_txn=R.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)
        )  # fmt: skip
    )


def cmp(key: bytes) -> R.Compare:
    return R.Compare(key=key, target=R.Compare.VALUE, value=b"x")


def txn(success=(), failure=(), compare=()) -> R.TxnRequest:
    return R.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))


def raises(make, fn, *args) -> None:
    with pytest.raises(errors.EtcdError) as info:
        fn(*args)
    assert info.value == make()


# ------------------------------------------------------ single requests
def test_range_put_delete_need_a_key():
    raises(errors.EMPTY_KEY, check_range, R.RangeRequest(range_end=b"z"))
    raises(errors.EMPTY_KEY, check_put, R.PutRequest(value=b"v"))
    raises(errors.EMPTY_KEY, check_delete_range, R.DeleteRangeRequest(range_end=b"\0"))
    check_range(R.RangeRequest(key=b"\0", range_end=b"\0"))
    check_put(R.PutRequest(key=b"k"))  # empty value is legal
    check_delete_range(R.DeleteRangeRequest(key=b"k"))


def test_put_ignore_value_with_value_and_ignore_lease_with_lease():
    raises(errors.VALUE_PROVIDED, check_put, R.PutRequest(key=b"k", value=b"v", ignore_value=True))
    raises(errors.LEASE_PROVIDED, check_put, R.PutRequest(key=b"k", lease=1, ignore_lease=True))
    # Empty key is reported first, value before lease.
    raises(errors.EMPTY_KEY, check_put, R.PutRequest(value=b"v", ignore_value=True))
    raises(
        errors.VALUE_PROVIDED,
        check_put,
        R.PutRequest(key=b"k", value=b"v", lease=1, ignore_value=True, ignore_lease=True),
    )
    check_put(R.PutRequest(key=b"k", ignore_value=True, ignore_lease=True))
    check_put(R.PutRequest(key=b"k", value=b"v", lease=3))


def test_request_size_limit_is_strictly_greater_than():
    req = R.PutRequest(key=b"k", value=b"x" * 100)
    check_request_size(req, req.ByteSize())
    raises(errors.REQUEST_TOO_LARGE, check_request_size, req, req.ByteSize() - 1)


# ------------------------------------------------------------ op counts
@pytest.mark.parametrize("branch", ["compare", "success", "failure"])
def test_txn_128_ops_ok_129_refused_in_each_part(branch):
    def build(n: int) -> R.TxnRequest:
        if branch == "compare":
            return txn(compare=[cmp(b"k%d" % i) for i in range(n)])
        ops = [put(b"k%d" % i) for i in range(n)]
        return txn(**{branch: ops})

    check_txn(build(MAX_TXN_OPS))
    raises(errors.TOO_MANY_OPS, check_txn, build(MAX_TXN_OPS + 1))


def test_txn_op_count_is_the_max_of_the_parts_not_the_sum():
    t = txn(
        compare=[cmp(b"c%d" % i) for i in range(128)],
        success=[put(b"s%d" % i) for i in range(128)],
        failure=[put(b"f%d" % i) for i in range(128)],
    )
    check_txn(t)


def test_nested_txn_gets_the_budget_its_parent_left():
    # Parent uses 100 of 128: a nested txn may use 28, not 29.
    def build(nested_ops: int) -> R.TxnRequest:
        inner = nested(success=[put(b"n%d" % i) for i in range(nested_ops)])
        return txn(success=[inner] + [put(b"p%d" % i) for i in range(99)])

    check_txn(build(28))
    raises(errors.TOO_MANY_OPS, check_txn, build(29))


def test_nested_budget_applies_to_failure_branch_and_deeper_levels():
    deep = nested(failure=[nested(success=[put(b"d%d" % i) for i in range(n)])
                           for n in (1,)])  # fmt: skip
    check_txn(txn(success=[deep]))
    # Level 1 uses 127 -> level 2 gets 1 -> level 3 gets budget 0 and has 1 op.
    level3 = nested(success=[put(b"x")])
    level2 = nested(success=[level3])
    raises(
        errors.TOO_MANY_OPS,
        check_txn,
        txn(failure=[level2] + [put(b"p%d" % i) for i in range(126)]),
    )
    check_txn(txn(failure=[level2] + [put(b"p%d" % i) for i in range(125)]))


def test_too_many_ops_is_reported_before_empty_keys():
    t = txn(compare=[cmp(b"")], success=[put(b"k%d" % i) for i in range(129)])
    raises(errors.TOO_MANY_OPS, check_txn, t)


# ------------------------------------------------------------- empty keys
@pytest.mark.parametrize(
    "t",
    [
        txn(compare=[cmp(b"ok"), cmp(b"")]),
        txn(success=[put(b"")]),
        txn(success=[get(b"")]),
        txn(failure=[delete(b"")]),
        txn(success=[nested(compare=[cmp(b"")])]),
        txn(failure=[nested(success=[nested(failure=[put(b"")])])]),
    ],
    ids=["compare", "put", "range", "delete", "nested-compare", "deeply-nested-put"],
)
def test_every_txn_key_must_be_provided(t):
    raises(errors.EMPTY_KEY, check_txn, t)


def test_nested_put_ignore_value_rules_apply():
    raises(errors.VALUE_PROVIDED, check_txn,
           txn(success=[nested(success=[put(b"k", b"v", ignore_value=True)])]))  # fmt: skip
    raises(errors.LEASE_PROVIDED, check_txn, txn(failure=[put(b"k", b"", lease=2,
                                                              ignore_lease=True)]))  # fmt: skip


def test_empty_request_op_is_key_not_found_like_etcd():
    raises(errors.KEY_NOT_FOUND, check_txn, txn(success=[R.RequestOp()]))
    raises(errors.KEY_NOT_FOUND, check_txn, txn(success=[nested(failure=[R.RequestOp()])]))


# --------------------------------------------------------- duplicate keys
@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"a")],
        [put(b"a"), get(b"b"), put(b"a", b"other")],
        [delete(b"a"), put(b"a")],
        [put(b"a"), delete(b"a")],
        [delete(b"a", b"c"), put(b"b")],
        [delete(b"a", b"c"), put(b"a")],
        [put(b"a/x"), delete(b"a/", b"a0")],
        # nested txns
        [nested(success=[put(b"a")]), put(b"a")],
        [put(b"a"), nested(failure=[put(b"a")])],
        [nested(success=[delete(b"a")]), put(b"a")],
        [delete(b"a"), nested(success=[put(b"a")])],
        [delete(b"a", b"z"), nested(failure=[put(b"m")])],
        [nested(success=[put(b"a")]), nested(success=[put(b"a")])],
        [nested(success=[put(b"a")]), nested(failure=[put(b"a")])],
        [nested(success=[delete(b"a", b"c")]), nested(success=[put(b"b")])],
        [nested(success=[nested(success=[put(b"a"), put(b"a")])])],
    ],
)
def test_same_key_written_twice_in_a_branch_is_duplicate(ops):
    raises(errors.DUPLICATE_KEY, check_txn, txn(success=ops))
    raises(errors.DUPLICATE_KEY, check_txn, txn(failure=ops))


@pytest.mark.parametrize(
    "ops",
    [
        [put(b"a"), put(b"b")],
        [get(b"a"), put(b"a")],  # a read then a write of the same key is fine
        [delete(b"a"), delete(b"a")],  # two deletes never conflict
        [delete(b"a", b"c"), put(b"c")],  # half-open range
        [delete(b"a"), put(b"a\0")],  # a point delete covers exactly one key
        [delete(b"b"), put(b"a")],
        # etcd 3.4: from-key (range_end "\0") is an empty affine interval, so
        # it never overlaps a put (verified with etcdctl txn in tests/compat).
        [delete(b"a", b"\0"), put(b"b")],
        [delete(b"\0", b"\0"), put(b"b")],
        # inverted range: empty
        [delete(b"c", b"a"), put(b"b")],
        # a nested txn's then/else are exclusive
        [nested(success=[put(b"a")], failure=[put(b"a")])],
        [nested(success=[delete(b"a")], failure=[put(b"a")])],
    ],
)
def test_writes_that_do_not_overlap_are_accepted(ops):
    check_txn(txn(success=ops))


def test_success_and_failure_are_checked_separately():
    check_txn(txn(success=[put(b"a")], failure=[put(b"a")]))
    check_txn(txn(success=[delete(b"a", b"z")], failure=[put(b"b")]))


def test_check_intervals_returns_the_branch_writes():
    puts, dels = check_intervals(
        [put(b"a"), delete(b"x"), nested(success=[put(b"b")], failure=[delete(b"c", b"d")])]
    )
    assert puts == {b"a", b"b"}
    assert sorted(dels) == [(b"c", b"d"), (b"x", b"x\0")]


# ---------------------------------------------- property: flat branches
KEYS = st.lists(st.sampled_from(b"abc\0"), min_size=1, max_size=3).map(bytes)
OPS = st.lists(
    st.one_of(
        st.builds(lambda k: ("put", k, b""), KEYS),
        st.builds(lambda k: ("del", k, b""), KEYS),
        st.builds(lambda k, e: ("del", k, e), KEYS, KEYS),
        st.builds(lambda k: ("get", k, b""), KEYS),
    ),
    max_size=8,
)


def reference_duplicate(ops: list[tuple[str, bytes, bytes]]) -> bool:
    puts = [k for kind, k, _ in ops if kind == "put"]
    if len(puts) != len(set(puts)):
        return True
    for kind, k, end in ops:
        if kind != "del":
            continue
        for p in puts:
            if (not end and p == k) or (end and k <= p < end):
                return True
    return False


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OPS)
def test_flat_branch_duplicates_match_a_naive_reference(ops):
    build = {"put": lambda k, e: put(k), "del": delete, "get": get}
    req = txn(success=[build[kind](k, e) if kind != "put" else put(k) for kind, k, e in ops])
    try:
        check_txn(req)
        got = False
    except errors.EtcdError as exc:
        assert exc == errors.DUPLICATE_KEY()
        got = True
    assert got == reference_duplicate(ops)
