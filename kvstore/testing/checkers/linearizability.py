"""Linearizability checker for single-key KV histories (Wing-Gong / Lowe search).

Owns: the sequential model of one key (put / get / delete / compare-and-swap),
partitioning a history by key, and the search for a linearization with
memoisation over (linearized-set bitmask, model state), as porcupine does
(Lowe, "Testing for linearizability", 2017).

Never: talks to a server or reads a clock. Input is plain `Operation`s.

Indeterminate operations (timeout, connection lost, unknown outcome) have
`ret = INF` and `output = UNKNOWN`: they may take effect at any point after
their invocation, or never (a pending operation linearized after every
completed one is indistinguishable from one that never happened). A failed
read (definitely no effect) should simply be left out of the history.

Model of one key: state = the current value (bytes) or None when absent.
    put(v)            -> "ok"                 state := v
    get()             -> value | None         state unchanged
    delete()          -> deleted count (0/1)  state := None
    cas(expect, new)  -> succeeded (bool)     if state == expect: state := new
                         (expect None = "key absent", i.e. version == 0)
Every operation touches exactly one key, so keys are independent and the
history is checked one key at a time (P-compositionality), which keeps the
search small; values should be unique per put so that a read names its write.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

INF = math.inf


class _Unknown:
    """Output of an operation whose outcome the client never learned."""

    _instance: _Unknown | None = None

    def __new__(cls) -> _Unknown:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()

PUT = "put"
GET = "get"
DELETE = "delete"
CAS = "cas"
_KINDS = (PUT, GET, DELETE, CAS)


@dataclass(frozen=True)
class Operation:
    """One client operation on one key.

    call/ret: times (any monotonic clock, same for the whole history);
    ret = INF for an indeterminate operation. `arg` is the value for put,
    (expect, new) for cas, None for get/delete. `output` is what the server
    answered (see the module docstring) or UNKNOWN."""

    client: int
    kind: str
    key: bytes
    arg: Any
    output: Any
    call: float
    ret: float
    op_id: int = -1
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown operation kind {self.kind!r}")
        if self.ret < self.call:
            raise ValueError(f"operation returns before it is invoked: {self}")

    @property
    def pending(self) -> bool:
        return self.ret == INF or self.output is UNKNOWN

    def describe(self) -> str:
        ret = "inf" if self.ret == INF else f"{self.ret:.6f}"
        return (
            f"#{self.op_id} client {self.client} {self.kind}({self.key!r}, {self.arg!r})"
            f" -> {self.output!r} [{self.call:.6f}, {ret}]"
        )


def step(state: bytes | None, op: Operation) -> tuple[bool, bytes | None]:
    """The sequential specification: (is `op.output` legal in `state`, next state)."""
    out = op.output
    unknown = out is UNKNOWN
    if op.kind == PUT:
        return (unknown or out == "ok"), op.arg
    if op.kind == GET:
        return (unknown or out == state), state
    if op.kind == DELETE:
        expected = 0 if state is None else 1
        return (unknown or out == expected), None
    expect, new = op.arg
    ok = state == expect
    if not unknown and bool(out) != ok:
        return False, state
    return True, (new if ok else state)


@dataclass
class KeyResult:
    key: bytes
    ok: bool
    operations: int
    # When not ok: the longest linearized prefix found and the operations that
    # could not be placed after it (the witnesses of the violation).
    longest_prefix: list[Operation] = field(default_factory=list)
    unplaceable: list[Operation] = field(default_factory=list)
    exhausted: bool = False  # gave up after `max_steps` (result unknown)

    def describe(self, tail: int = 12) -> str:
        if self.ok:
            return f"key {self.key!r}: linearizable ({self.operations} operations)"
        if self.exhausted:
            return f"key {self.key!r}: search budget exhausted ({self.operations} operations)"
        lines = [f"key {self.key!r}: NOT linearizable ({self.operations} operations)"]
        lines.append(f"  longest linearized prefix ({len(self.longest_prefix)} ops), last {tail}:")
        lines += ["    " + op.describe() for op in self.longest_prefix[-tail:]]
        lines.append("  cannot be placed next (each is illegal there or would be out of order):")
        lines += ["    " + op.describe() for op in self.unplaceable[:tail]]
        return "\n".join(lines)


class _Node:
    __slots__ = ("op_index", "is_call", "match", "prev", "next")

    def __init__(self, op_index: int, is_call: bool) -> None:
        self.op_index = op_index
        self.is_call = is_call
        self.match: _Node | None = None
        self.prev: _Node | None = None
        self.next: _Node | None = None


def _build_list(ops: Sequence[Operation]) -> _Node:
    events: list[tuple[float, int, int, _Node]] = []
    calls: list[_Node] = []
    for i, op in enumerate(ops):
        c, r = _Node(i, True), _Node(i, False)
        c.match = r
        calls.append(c)
        # At equal times a call sorts before a return: the two operations are
        # then treated as concurrent (the lenient reading, as porcupine does).
        events.append((op.call, 0, i, c))
        events.append((op.ret, 1, i, r))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    head = _Node(-1, False)
    prev = head
    for _, _, _, node in events:
        prev.next = node
        node.prev = prev
        prev = node
    return head


def _lift(call: _Node) -> None:
    """Take a call and its return out of the list (every node but the head
    has a prev; a call always has its return after it)."""
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    call.prev.next = call.next
    if call.next is not None:
        call.next.prev = call.prev
    ret.prev.next = ret.next
    if ret.next is not None:
        ret.next.prev = ret.prev


def _unlift(call: _Node) -> None:
    """Put them back where they were (their own links were left intact)."""
    ret = call.match
    assert call.prev is not None and ret is not None and ret.prev is not None
    ret.prev.next = ret
    if ret.next is not None:
        ret.next.prev = ret
    call.prev.next = call
    if call.next is not None:
        call.next.prev = call


def check_key(
    ops: Sequence[Operation],
    initial: bytes | None = None,
    max_steps: int = 2_000_000,
) -> KeyResult:
    """Search for a linearization of `ops` (all on one key) from `initial`."""
    key = ops[0].key if ops else b""
    result = KeyResult(key=key, ok=True, operations=len(ops))
    if not ops:
        return result
    head = _build_list(ops)
    state: bytes | None = initial
    linearized = 0
    seen: set[tuple[int, bytes | None]] = set()
    stack: list[tuple[_Node, bytes | None]] = []
    best: list[int] = []
    entry = head.next
    steps = 0
    while head.next is not None:
        steps += 1
        if steps > max_steps:
            result.ok = False
            result.exhausted = True
            return result
        assert entry is not None
        if entry.is_call:
            legal, new_state = step(state, ops[entry.op_index])
            if legal:
                new_linearized = linearized | (1 << entry.op_index)
                memo = (new_linearized, new_state)
                if memo not in seen:
                    seen.add(memo)
                    stack.append((entry, state))
                    state, linearized = new_state, new_linearized
                    _lift(entry)
                    if len(stack) > len(best):
                        best = [n.op_index for n, _ in stack]
                    entry = head.next
                    continue
            entry = entry.next
        else:
            # A return whose call is still unlinearized: nothing after it may
            # go first, so undo the last choice.
            if not stack:
                result.ok = False
                _explain(result, ops, best, initial)
                return result
            entry, state = stack.pop()
            linearized &= ~(1 << entry.op_index)
            _unlift(entry)
            entry = entry.next
    return result


def _explain(
    result: KeyResult, ops: Sequence[Operation], best: list[int], initial: bytes | None
) -> None:
    """Fill the witnesses: the longest prefix and the ops that cannot follow it."""
    result.longest_prefix = [ops[i] for i in best]
    done = set(best)
    state = initial
    for i in best:
        state = step(state, ops[i])[1]
    rest = [ops[i] for i in range(len(ops)) if i not in done]
    first_ret = min((op.ret for op in rest), default=INF)
    # The candidates for "next" are the ops invoked before the earliest
    # outstanding return; every one of them is illegal in `state` (or leads
    # to a dead end).
    result.unplaceable = sorted(
        (op for op in rest if op.call <= first_ret), key=lambda op: (op.call, op.op_id)
    )
    result.unplaceable = [op for op in result.unplaceable if not step(state, op)[0]] or (
        result.unplaceable
    )


@dataclass
class HistoryResult:
    ok: bool
    keys: list[KeyResult]

    @property
    def failures(self) -> list[KeyResult]:
        return [k for k in self.keys if not k.ok]

    def describe(self) -> str:
        bad = self.failures
        if not bad:
            return (
                f"linearizable: {len(self.keys)} keys, {sum(k.operations for k in self.keys)} ops"
            )
        return "\n".join(k.describe() for k in bad)


def partition(ops: Iterable[Operation]) -> dict[bytes, list[Operation]]:
    by_key: dict[bytes, list[Operation]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    return dict(by_key)


def check_history(
    ops: Iterable[Operation],
    initial: dict[bytes, bytes] | None = None,
    max_steps_per_key: int = 2_000_000,
) -> HistoryResult:
    """Check a whole history, one key at a time; `initial`: values before it."""
    numbered = [op if op.op_id >= 0 else _with_id(op, i) for i, op in enumerate(ops)]
    results = [
        check_key(key_ops, (initial or {}).get(key), max_steps_per_key)
        for key, key_ops in sorted(partition(numbered).items())
    ]
    return HistoryResult(ok=all(r.ok for r in results), keys=results)


def _with_id(op: Operation, op_id: int) -> Operation:
    return Operation(op.client, op.kind, op.key, op.arg, op.output, op.call, op.ret, op_id, op.meta)


def check_real_time_revisions(ops: Iterable[Operation]) -> list[str]:
    """Revisions respect real time across keys: if A returned before B was
    invoked, B's header revision is not below A's (for operations that carry
    `meta["revision"]`, i.e. linearizable reads and completed writes). This
    catches a stale read on a key with no other traffic, which the per-key
    search cannot see."""
    timed = sorted(
        (op for op in ops if not op.pending and "revision" in op.meta),
        key=lambda op: op.call,
    )
    by_ret = sorted(timed, key=lambda op: op.ret)
    out: list[str] = []
    # Sweep calls in order, keeping the highest revision of any op that
    # returned before the current call.
    j = 0
    best: Operation | None = None
    for op in timed:
        while j < len(by_ret) and by_ret[j].ret < op.call:
            if best is None or by_ret[j].meta["revision"] > best.meta["revision"]:
                best = by_ret[j]
            j += 1
        if best is not None and op.meta["revision"] < best.meta["revision"]:
            out.append(
                f"revision went back in real time: {best.describe()} at revision "
                f"{best.meta['revision']} returned before {op.describe()} at revision "
                f"{op.meta['revision']} was invoked"
            )
    return out
