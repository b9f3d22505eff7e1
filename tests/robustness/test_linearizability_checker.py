"""The linearizability checker accepts linearizable histories and rejects the
classic anomalies (stale read, lost update, a read of a write that never
completed and later vanishes, a delete that reports the wrong count)."""

from __future__ import annotations

import random

import pytest

from kvstore.testing.checkers.linearizability import (
    CAS,
    DELETE,
    GET,
    INF,
    PUT,
    UNKNOWN,
    Operation,
    check_history,
    check_key,
    check_real_time_revisions,
)

K = b"k"


def op(client: int, kind: str, arg, out, call: float, ret: float, key: bytes = K, **meta):
    return Operation(client, kind, key, arg, out, call, ret, meta=meta)


def test_sequential_history_is_linearizable() -> None:
    h = [
        op(1, PUT, b"a", "ok", 0, 1),
        op(1, GET, None, b"a", 2, 3),
        op(1, CAS, (b"a", b"b"), True, 4, 5),
        op(1, CAS, (b"a", b"c"), False, 6, 7),
        op(1, DELETE, None, 1, 8, 9),
        op(1, DELETE, None, 0, 10, 11),
        op(1, GET, None, None, 12, 13),
    ]
    assert check_history(h).ok


def test_concurrent_reads_may_see_either_side_of_a_concurrent_write() -> None:
    h = [
        op(1, PUT, b"a", "ok", 0, 1),
        op(2, PUT, b"b", "ok", 2, 10),
        op(3, GET, None, b"b", 3, 4),  # b took effect early
        op(4, GET, None, b"b", 5, 6),
    ]
    assert check_history(h).ok


def test_stale_read_is_rejected() -> None:
    h = [
        op(1, PUT, b"a", "ok", 0, 1),
        op(1, PUT, b"b", "ok", 2, 3),
        op(2, GET, None, b"a", 4, 5),  # b was acknowledged before this read began
    ]
    result = check_history(h)
    assert not result.ok
    bad = result.failures[0]
    assert any(o.kind == GET and o.output == b"a" for o in bad.unplaceable), bad.describe()


def test_read_flapping_between_concurrent_writes_is_rejected() -> None:
    # Both writes overlap both reads, but once a read saw b then a, a later
    # read cannot see b again (no third write of b).
    h = [
        op(1, PUT, b"a", "ok", 0, 100),
        op(2, PUT, b"b", "ok", 0, 100),
        op(3, GET, None, b"b", 10, 11),
        op(3, GET, None, b"a", 12, 13),
        op(3, GET, None, b"b", 14, 15),
    ]
    assert not check_history(h).ok


def test_lost_update_is_rejected() -> None:
    # Two CAS from the same old value both succeed: one update was lost.
    h = [
        op(1, PUT, b"0", "ok", 0, 1),
        op(2, CAS, (b"0", b"x"), True, 2, 5),
        op(3, CAS, (b"0", b"y"), True, 2, 5),
    ]
    assert not check_history(h).ok
    h[2] = op(3, CAS, (b"0", b"y"), False, 2, 5)
    assert check_history(h).ok


def test_indeterminate_write_may_take_effect_or_not() -> None:
    base = [op(1, PUT, b"a", "ok", 0, 1), op(2, PUT, b"b", UNKNOWN, 2, INF)]
    assert check_history(base + [op(3, GET, None, b"a", 5, 6)]).ok
    assert check_history(base + [op(3, GET, None, b"b", 5, 6)]).ok
    # ... but not both, in this order: once b is seen, a cannot come back.
    assert not check_history(base + [op(3, GET, None, b"b", 5, 6), op(3, GET, None, b"a", 7, 8)]).ok


def test_read_of_a_write_that_never_completed_and_later_vanishes_is_rejected() -> None:
    # The put of b failed for the client (unknown); a read saw b; a later read
    # sees the old value a again with no write of a in between.
    h = [
        op(1, PUT, b"a", "ok", 0, 1),
        op(2, PUT, b"b", UNKNOWN, 2, INF),
        op(3, GET, None, b"b", 3, 4),
        op(3, GET, None, b"a", 5, 6),
    ]
    assert not check_history(h).ok


def test_indeterminate_write_cannot_take_effect_before_it_is_invoked() -> None:
    h = [
        op(1, PUT, b"a", "ok", 0, 1),
        op(3, GET, None, b"b", 2, 3),
        op(2, PUT, b"b", UNKNOWN, 4, INF),
    ]
    assert not check_history(h).ok


def test_delete_count_must_match_state() -> None:
    assert not check_history([op(1, DELETE, None, 1, 0, 1)]).ok
    assert not check_history([op(1, PUT, b"a", "ok", 0, 1), op(1, DELETE, None, 0, 2, 3)]).ok
    assert check_history([op(1, PUT, b"a", "ok", 0, 1), op(1, DELETE, None, 1, 2, 3)]).ok


def test_cas_on_absent_key() -> None:
    h = [op(1, CAS, (None, b"a"), True, 0, 1), op(2, CAS, (None, b"b"), True, 2, 3)]
    assert not check_history(h).ok
    assert check_history(h[:1] + [op(2, GET, None, b"a", 2, 3)]).ok


def test_keys_are_checked_independently_and_initial_values_count() -> None:
    h = [
        op(1, GET, None, b"x0", 0, 1, key=b"x"),
        op(1, GET, None, None, 0, 1, key=b"y"),
        op(2, PUT, b"z", "ok", 0, 1, key=b"z"),
        op(2, GET, None, b"q", 2, 3, key=b"z"),  # the only anomaly
    ]
    result = check_history(h, initial={b"x": b"x0"})
    assert [r.key for r in result.failures] == [b"z"]
    assert "NOT linearizable" in result.describe()


def test_real_time_revision_order_catches_cross_key_stale_read() -> None:
    h = [
        op(1, PUT, b"a", "ok", 0, 1, key=b"x", revision=10),
        op(2, GET, None, None, 2, 3, key=b"y", revision=9),  # served from a stale replica
    ]
    assert check_history(h).ok  # per key it is fine ...
    assert check_real_time_revisions(h)  # ... but the revision went back
    ok = [h[0], op(2, GET, None, None, 0.5, 3, key=b"y", revision=9)]  # concurrent: fine
    assert check_real_time_revisions(ok) == []


def _random_linearizable_history(rng: random.Random, n: int) -> list[Operation]:
    """Run a real register sequentially at chosen linearization points, then
    widen every operation's interval around its point: always linearizable."""
    state: bytes | None = None
    ops: list[Operation] = []
    t = 0.0
    for i in range(n):
        t += 1.0
        kind = rng.choice([PUT, GET, DELETE, CAS])
        if kind == PUT:
            arg, out, state = b"v%d" % i, "ok", b"v%d" % i
        elif kind == GET:
            arg, out = None, state
        elif kind == DELETE:
            arg, out, state = None, int(state is not None), None
        else:
            expect = rng.choice([state, b"nope"])
            arg, out = (expect, b"c%d" % i), state == expect
            if out:
                state = b"c%d" % i
        call = t - rng.uniform(0, 3)
        ret = t + rng.uniform(0, 3)
        if kind != GET and rng.random() < 0.1:
            out, ret = UNKNOWN, INF
        ops.append(Operation(i % 5, kind, K, arg, out, call, ret, op_id=i))
    return ops


@pytest.mark.parametrize("seed", range(20))
def test_random_linearizable_histories_pass(seed: int) -> None:
    rng = random.Random(seed)
    result = check_key(_random_linearizable_history(rng, 60))
    assert result.ok, f"seed {seed}: {result.describe()}"


@pytest.mark.parametrize("seed", range(20))
def test_random_histories_with_one_corrupted_read_fail(seed: int) -> None:
    rng = random.Random(seed)
    ops = _random_linearizable_history(rng, 60)
    # A read of a value nobody ever wrote can never be linearized.
    i = rng.randrange(len(ops))
    bad = ops[i]
    ops[i] = Operation(
        bad.client,
        GET,
        K,
        None,
        b"never-written",
        bad.call,
        max(bad.call, bad.ret if bad.ret != INF else bad.call + 1),
        op_id=bad.op_id,
    )
    assert not check_key(ops).ok


def test_search_budget_reports_exhaustion_not_success() -> None:
    ops = [op(i, PUT, b"v%d" % i, UNKNOWN, 0, INF) for i in range(30)]
    ops.append(op(99, GET, None, b"zzz", 1, 2))
    result = check_key(ops, max_steps=1000)
    assert not result.ok and result.exhausted
