"""Request builders, transaction compares/ops and the Txn builder.

Owns: turning Python arguments into etcd protobuf requests (RangeRequest,
PutRequest, DeleteRangeRequest, Compare, RequestOp, TxnRequest). Both the async
and the sync client use these builders, so argument handling exists once.

Must never: perform I/O. A `Txn` only holds a `commit` callable supplied by
the client that created it.

Key ranges follow etcd (ETCD_API §1.3): `prefix=True` → range_end =
prefix_end(key) (b"\\0" when every byte is 0xff, and key b"" becomes b"\\0");
`from_key=True` → range_end = b"\\0".

Example::

    from kvstore.client import Compare, Op
    result = await client.txn() \\
        .if_(Compare.version(b"cfg") == 0) \\
        .then(Op.put(b"cfg", b"v1")) \\
        .else_(Op.get(b"cfg")) \\
        .commit()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from kvstore.pb import rpc_pb2

KeyLike = str | bytes
LeaseLike = Any
"""A lease id (int) or any object with an integer `.id` (the Lease returned
by `client.lease()`, sync or async), as python-etcd3 accepts."""

_SORT_ORDER = {"none": 0, "ascend": 1, "descend": 2}
_SORT_TARGET = {"key": 0, "version": 1, "create": 2, "mod": 3, "modify": 3, "value": 4}


def to_bytes(value: KeyLike) -> bytes:
    """Keys and values may be given as str (UTF-8) or bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"expected str or bytes, got {type(value).__name__}")


def lease_id_of(lease: LeaseLike) -> int:
    """The integer id of `lease`: an int, or an object with an int `.id`.

    Raises TypeError for anything else, and ValueError for a lease object
    that was not granted yet (id 0 would silently mean "no lease")."""
    if isinstance(lease, bool):
        raise TypeError("lease must be a lease id (int) or a Lease, not bool")
    if isinstance(lease, int):
        return lease
    lease_id = getattr(lease, "id", None)
    if isinstance(lease_id, int) and not isinstance(lease_id, bool):
        if lease_id == 0:
            raise ValueError("lease object has not been granted yet (id 0)")
        return lease_id
    raise TypeError(f"lease must be a lease id (int) or a Lease, got {type(lease).__name__}")


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key starting with `prefix` (etcd GetPrefixRangeEnd)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    # Every byte was 0xff (or empty prefix): "all keys >= prefix".
    return b"\0"


def key_range(
    key: KeyLike,
    *,
    prefix: bool = False,
    from_key: bool = False,
    range_end: KeyLike | None = None,
) -> tuple[bytes, bytes]:
    """(key, range_end) as etcdctl sends them for the given options."""
    k = to_bytes(key)
    if sum((prefix, from_key, range_end is not None)) > 1:
        raise ValueError("prefix, from_key and range_end are mutually exclusive")
    if range_end is not None:
        return k, to_bytes(range_end)
    if prefix:
        if not k:
            return b"\0", b"\0"
        return k, prefix_end(k)
    if from_key:
        return (k or b"\0"), b"\0"
    return k, b""


def _enum(table: dict[str, int], value: str | int, what: str) -> int:
    if isinstance(value, int):
        return value
    try:
        return table[value.lower()]
    except KeyError:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(table)}") from None


def range_request(
    key: KeyLike,
    *,
    prefix: bool = False,
    from_key: bool = False,
    range_end: KeyLike | None = None,
    revision: int = 0,
    limit: int = 0,
    sort_order: str | int = "none",
    sort_target: str | int = "key",
    serializable: bool = False,
    keys_only: bool = False,
    count_only: bool = False,
    min_mod_revision: int = 0,
    max_mod_revision: int = 0,
    min_create_revision: int = 0,
    max_create_revision: int = 0,
) -> rpc_pb2.RangeRequest:
    k, end = key_range(key, prefix=prefix, from_key=from_key, range_end=range_end)
    return rpc_pb2.RangeRequest(
        key=k,
        range_end=end,
        revision=revision,
        limit=limit,
        sort_order=_enum(_SORT_ORDER, sort_order, "sort order"),
        sort_target=_enum(_SORT_TARGET, sort_target, "sort target"),
        serializable=serializable,
        keys_only=keys_only,
        count_only=count_only,
        min_mod_revision=min_mod_revision,
        max_mod_revision=max_mod_revision,
        min_create_revision=min_create_revision,
        max_create_revision=max_create_revision,
    )


def put_request(
    key: KeyLike,
    value: KeyLike = b"",
    *,
    lease: LeaseLike = 0,
    prev_kv: bool = False,
    ignore_value: bool = False,
    ignore_lease: bool = False,
) -> rpc_pb2.PutRequest:
    return rpc_pb2.PutRequest(
        key=to_bytes(key),
        value=to_bytes(value),
        lease=lease_id_of(lease),
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )


def delete_request(
    key: KeyLike,
    *,
    prefix: bool = False,
    from_key: bool = False,
    range_end: KeyLike | None = None,
    prev_kv: bool = False,
) -> rpc_pb2.DeleteRangeRequest:
    k, end = key_range(key, prefix=prefix, from_key=from_key, range_end=range_end)
    return rpc_pb2.DeleteRangeRequest(key=k, range_end=end, prev_kv=prev_kv)


# --- compares ------------------------------------------------------------------

_RESULT = {"==": 0, ">": 1, "<": 2, "!=": 3}
_TARGET_FIELD = {0: "version", 1: "create_revision", 2: "mod_revision", 3: "value", 4: "lease"}


@dataclass(frozen=True, slots=True)
class Comparison:
    """One Txn guard, e.g. `Compare.mod(b"k") < 10`."""

    key: bytes
    target: int
    op: str
    operand: Any
    range_end: bytes = b""

    def to_pb(self) -> rpc_pb2.Compare:
        cmp = rpc_pb2.Compare(
            key=self.key, range_end=self.range_end, target=self.target, result=_RESULT[self.op]
        )
        field = _TARGET_FIELD[self.target]
        setattr(cmp, field, to_bytes(self.operand) if field == "value" else int(self.operand))
        return cmp


class _Target:
    """Left-hand side of a comparison; the operators build a Comparison."""

    __hash__ = None  # type: ignore[assignment]  # == builds a Comparison, not a bool

    def __init__(self, key: KeyLike, target: int, prefix: bool, range_end: KeyLike | None):
        self._key, self._end = key_range(key, prefix=prefix, range_end=range_end)
        self._target = target

    def _cmp(self, op: str, other: Any) -> Comparison:
        return Comparison(self._key, self._target, op, other, self._end)

    def __eq__(self, other: Any) -> Comparison:  # type: ignore[override]
        return self._cmp("==", other)

    def __ne__(self, other: Any) -> Comparison:  # type: ignore[override]
        return self._cmp("!=", other)

    def __lt__(self, other: Any) -> Comparison:
        return self._cmp("<", other)

    def __gt__(self, other: Any) -> Comparison:
        return self._cmp(">", other)


class Compare:
    """Txn compare helpers: `Compare.<target>(key) <op> operand`.

    Targets: `version`, `create` (create revision; `== 0` means "absent"),
    `mod` (mod revision), `value`, `lease`. Operators: ==, !=, <, >.
    `prefix=True` / `range_end=` compare every key in the range (etcd ≥ 3.3).
    A `value` compare on a missing key is always false (etcd semantics).

    >>> Compare.create(b"lock") == 0   # the key does not exist
    """

    @staticmethod
    def version(key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None):
        return _Target(key, 0, prefix, range_end)

    @staticmethod
    def create(key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None):
        return _Target(key, 1, prefix, range_end)

    @staticmethod
    def mod(key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None):
        return _Target(key, 2, prefix, range_end)

    @staticmethod
    def value(key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None):
        return _Target(key, 3, prefix, range_end)

    @staticmethod
    def lease(key: KeyLike, *, prefix: bool = False, range_end: KeyLike | None = None):
        return _Target(key, 4, prefix, range_end)


# --- ops -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TxnOp:
    """One operation inside a Txn branch (wraps an etcd RequestOp)."""

    pb: rpc_pb2.RequestOp


class Op:
    """Txn branch operations: `Op.get`, `Op.put`, `Op.delete`, `Op.txn` (nested)."""

    @staticmethod
    def get(key: KeyLike, **kwargs: Any) -> TxnOp:
        """Same keyword arguments as `AsyncClient.get`."""
        return TxnOp(rpc_pb2.RequestOp(request_range=range_request(key, **kwargs)))

    @staticmethod
    def put(key: KeyLike, value: KeyLike = b"", **kwargs: Any) -> TxnOp:
        return TxnOp(rpc_pb2.RequestOp(request_put=put_request(key, value, **kwargs)))

    @staticmethod
    def delete(key: KeyLike, **kwargs: Any) -> TxnOp:
        return TxnOp(rpc_pb2.RequestOp(request_delete_range=delete_request(key, **kwargs)))

    @staticmethod
    def txn(
        compare: Iterable[Comparison] = (),
        success: Iterable[TxnOp] = (),
        failure: Iterable[TxnOp] = (),
    ) -> TxnOp:
        return TxnOp(rpc_pb2.RequestOp(request_txn=txn_request(compare, success, failure)))


def txn_request(
    compare: Iterable[Comparison], success: Iterable[TxnOp], failure: Iterable[TxnOp]
) -> rpc_pb2.TxnRequest:
    return rpc_pb2.TxnRequest(
        compare=[c.to_pb() for c in compare],
        success=[o.pb for o in success],
        failure=[o.pb for o in failure],
    )


T = TypeVar("T")


class Txn(Generic[T]):
    """Fluent transaction builder; `commit()` sends it with the owning client.

    `if_` / `then` / `else_` may each be called several times (arguments
    accumulate). `commit()` returns a TxnResult (awaitable with AsyncClient).
    """

    def __init__(self, commit: Callable[[rpc_pb2.TxnRequest], T]) -> None:
        self._commit = commit
        self._compare: list[Comparison] = []
        self._success: list[TxnOp] = []
        self._failure: list[TxnOp] = []

    def if_(self, *compares: Comparison) -> Txn[T]:
        for c in compares:
            if not isinstance(c, Comparison):
                raise TypeError(f"if_() takes Compare.<target>(key) <op> value, got {c!r}")
        self._compare.extend(compares)
        return self

    def then(self, *ops: TxnOp) -> Txn[T]:
        self._success.extend(_check_ops(ops))
        return self

    def else_(self, *ops: TxnOp) -> Txn[T]:
        self._failure.extend(_check_ops(ops))
        return self

    def to_pb(self) -> rpc_pb2.TxnRequest:
        return txn_request(self._compare, self._success, self._failure)

    def commit(self) -> T:
        return self._commit(self.to_pb())


def _check_ops(ops: Iterable[TxnOp]) -> list[TxnOp]:
    out = list(ops)
    for o in out:
        if not isinstance(o, TxnOp):
            raise TypeError(f"expected Op.get/put/delete/txn(...), got {o!r}")
    return out
