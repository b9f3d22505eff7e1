"""Txn compare evaluation (etcd applyCompare / compareKV semantics).

Owns: turning a `Compare` and the KeyValues in its range into a bool.
Never reads storage itself: the caller passes the KeyValues (or None when the
range holds no key).

Rules: every key in [key, range_end) must satisfy the compare; with no key in
range a VALUE compare is false and other targets compare against 0; a target
value taken from the wrong oneof member counts as 0 / b"".
"""

from __future__ import annotations

from collections.abc import Sequence

from kvstore.pb import kv_pb2, rpc_pb2

Compare = rpc_pb2.Compare

_FIELD = {
    Compare.VERSION: "version",
    Compare.CREATE: "create_revision",
    Compare.MOD: "mod_revision",
    Compare.VALUE: "value",
    Compare.LEASE: "lease",
}

# Targets answerable from the key index alone (no value read needed).
INDEX_TARGETS = frozenset({Compare.VERSION, Compare.CREATE, Compare.MOD})


def _target_value(c: rpc_pb2.Compare) -> int | bytes:
    field = _FIELD.get(c.target)
    if field is not None and c.WhichOneof("target_union") == field:
        return getattr(c, field)
    return b"" if c.target == Compare.VALUE else 0


def _holds(c: rpc_pb2.Compare, actual: int | bytes, expected: int | bytes) -> bool:
    result = (actual > expected) - (actual < expected)  # type: ignore[operator]
    if c.result == Compare.EQUAL:
        return result == 0
    if c.result == Compare.NOT_EQUAL:
        return result != 0
    if c.result == Compare.GREATER:
        return result > 0
    if c.result == Compare.LESS:
        return result < 0
    return True


def compare_holds(c: rpc_pb2.Compare, kvs: Sequence[kv_pb2.KeyValue]) -> bool:
    """Evaluate `c` against the KeyValues currently in its range."""
    expected = _target_value(c)
    field = _FIELD.get(c.target, "version")
    if not kvs:
        if c.target == Compare.VALUE:
            # A missing key has no value; etcd never matches it (nil == "" on the wire).
            return False
        return _holds(c, 0, expected)
    return all(_holds(c, getattr(kv, field), expected) for kv in kvs)
