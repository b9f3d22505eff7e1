"""What a TxnRequest may do, answered by one walk over its branches.

Owns: `txn_has_op` (does any branch, nested txns included, hold an op of one
of these kinds?) and the two questions asked of it — `txn_is_read_only`
(the facade serves such a txn as a read; the batch skips its write path)
and `txn_puts` (while NOSPACE is raised, a txn that may put is refused).
Never: evaluates compares (which branch runs is decided at apply time).
"""

from __future__ import annotations

from kvstore.pb import rpc_pb2

WRITE_OPS = frozenset(("request_put", "request_delete_range"))
PUT_OPS = frozenset(("request_put",))


def txn_has_op(txn: rpc_pb2.TxnRequest, kinds: frozenset[str]) -> bool:
    """True when a branch of `txn` (recursively) holds an op of `kinds`."""
    for ops in (txn.success, txn.failure):
        for op in ops:
            kind = op.WhichOneof("request")
            if kind in kinds:
                return True
            if kind == "request_txn" and txn_has_op(op.request_txn, kinds):
                return True
    return False


def txn_is_read_only(txn: rpc_pb2.TxnRequest) -> bool:
    """No branch writes: the txn is served (and applied) as a read."""
    return not txn_has_op(txn, WRITE_OPS)


def txn_puts(txn: rpc_pb2.TxnRequest) -> bool:
    """Some branch may put (etcd's applierV3Capped refuses those under NOSPACE;
    DeleteRange-only txns free space and pass)."""
    return txn_has_op(txn, PUT_OPS)
