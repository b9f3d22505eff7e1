"""Parser for etcdctl's `txn` input syntax (pure; no I/O).

Owns: turning the three blank-line-separated sections (compares, success
ops, failure ops) into `Comparison` / `TxnOp` objects of kvstore.client.

    mod("key1") > "0"              <- compares: target("key") op "value"
    value("key2") = "x"
                                   <- blank line
    put key1 "new value"           <- success ops: put / get / del + flags
    get key2
                                   <- blank line
    del key3 --prefix              <- failure ops
                                   <- blank line (or end of input)

Targets: ver|version, c|create, m|mod, val|value, lease; operators = != < >.
Lease IDs in `lease(...)` compares and `put --lease` are hexadecimal like etcdctl.

Must never: talk to a server. Raises TxnSyntaxError with the offending line.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from kvstore.client import Compare, Op
from kvstore.client.ops import Comparison, TxnOp


class TxnSyntaxError(ValueError):
    pass


_COMPARE = re.compile(r'^\s*(\w+)\("((?:[^"\\]|\\.)*)"\)\s*(=|==|!=|<|>)\s*"((?:[^"\\]|\\.)*)"\s*$')
_TARGETS = {
    "ver": Compare.version, "version": Compare.version,
    "c": Compare.create, "create": Compare.create,
    "m": Compare.mod, "mod": Compare.mod,
    "val": Compare.value, "value": Compare.value,
    "lease": Compare.lease,
}  # fmt: skip


def _unquote(s: str) -> str:
    return s.encode("latin-1", "backslashreplace").decode("unicode_escape")


def parse_compare(line: str) -> Comparison:
    m = _COMPARE.match(line)
    if not m:
        raise TxnSyntaxError(f"malformed comparison: {line}")
    target, key, op, raw = m.group(1), _unquote(m.group(2)), m.group(3), _unquote(m.group(4))
    make = _TARGETS.get(target)
    if make is None:
        raise TxnSyntaxError(f"malformed comparison: {line} (unknown target {target})")
    lhs = make(key)
    if target in ("val", "value"):
        operand: object = raw
    else:
        try:
            operand = int(raw, 16) if target == "lease" else int(raw)
        except ValueError:
            raise TxnSyntaxError(f"malformed comparison: {line} (not a number: {raw})") from None
    op = "==" if op == "=" else op
    return {"==": lhs == operand, "!=": lhs != operand, "<": lhs < operand,
            ">": lhs > operand}[op]  # fmt: skip


def _flags(words: list[str], allowed: dict[str, bool]) -> tuple[list[str], dict[str, str | bool]]:
    """Split `words` into positionals and --flags (bool flags or --flag=value / --flag value)."""
    positional: list[str] = []
    flags: dict[str, str | bool] = {}
    it = iter(words)
    for w in it:
        if w.startswith("--") and len(w) > 2:
            name, eq, value = w[2:].partition("=")
            if name not in allowed:
                raise TxnSyntaxError(f"unknown flag --{name}")
            takes_value = allowed[name]
            if takes_value and not eq:
                value = next(it, None)
                if value is None:
                    raise TxnSyntaxError(f"flag --{name} needs a value")
            flags[name] = value if takes_value else (value.lower() != "false" if eq else True)
        else:
            positional.append(w)
    return positional, flags


def parse_op(line: str) -> TxnOp:
    try:
        words = shlex.split(line)
    except ValueError as exc:
        raise TxnSyntaxError(f"invalid request: {line} ({exc})") from None
    if not words:
        raise TxnSyntaxError("empty request")
    verb, args = words[0], words[1:]
    if verb == "put":
        pos, fl = _flags(
            args, {"lease": True, "prev-kv": False, "ignore-value": False, "ignore-lease": False}
        )
        if fl.get("ignore-value") and len(pos) == 1:
            pos.append("")
        if len(pos) != 2:
            raise TxnSyntaxError(f"put needs <key> <value>: {line}")
        return Op.put(
            pos[0],
            pos[1],
            lease=int(str(fl.get("lease", "0")), 16),
            prev_kv=bool(fl.get("prev-kv")),
            ignore_value=bool(fl.get("ignore-value")),
            ignore_lease=bool(fl.get("ignore-lease")),
        )
    if verb == "get":
        pos, fl = _flags(
            args,
            {
                "prefix": False,
                "from-key": False,
                "limit": True,
                "rev": True,
                "keys-only": False,
                "count-only": False,
            },
        )
        if len(pos) not in (1, 2):
            raise TxnSyntaxError(f"get needs <key> [range_end]: {line}")
        return Op.get(
            pos[0],
            range_end=pos[1] if len(pos) == 2 else None,
            prefix=bool(fl.get("prefix")),
            from_key=bool(fl.get("from-key")),
            limit=int(fl.get("limit", 0)),
            revision=int(fl.get("rev", 0)),
            keys_only=bool(fl.get("keys-only")),
            count_only=bool(fl.get("count-only")),
        )
    if verb in ("del", "delete"):
        pos, fl = _flags(args, {"prefix": False, "from-key": False, "prev-kv": False})
        if len(pos) not in (1, 2):
            raise TxnSyntaxError(f"del needs <key> [range_end]: {line}")
        return Op.delete(
            pos[0],
            range_end=pos[1] if len(pos) == 2 else None,
            prefix=bool(fl.get("prefix")),
            from_key=bool(fl.get("from-key")),
            prev_kv=bool(fl.get("prev-kv")),
        )
    raise TxnSyntaxError(f"unknown request {verb!r} (expected put, get or del)")


def parse_txn(lines: Iterable[str]) -> tuple[list[Comparison], list[TxnOp], list[TxnOp]]:
    """Parse etcdctl txn input: returns (compares, success ops, failure ops)."""
    sections: list[list[str]] = [[], [], []]
    index = 0
    for raw in lines:
        line = raw.rstrip("\r\n")
        if not line.strip():
            index += 1
            if index >= 3:
                break
            continue
        sections[index].append(line)
    return (
        [parse_compare(x) for x in sections[0]],
        [parse_op(x) for x in sections[1]],
        [parse_op(x) for x in sections[2]],
    )
