"""The server's log format: JSON lines with stable field names (etcd 3.5 style) or text.

Owns: `configure()` (called ONCE, by kvstore/cli/server_cmd.py: the root
logger's level, handlers and formatter from --log-format, --log-level and
--log-outputs), the member context every line carries once known
(`set_member`), `JsonFormatter` and the table of event fields.

Why the standard library and not structlog: every module already logs
through `logging.getLogger(__name__)` with %-style messages; a formatter at
the root turns all of them (and gRPC's, asyncio's) into JSON without touching
a single call site, and adds no dependency. structlog would mean rewriting
every call or bridging back to logging anyway.

A JSON line (one object per line, keys in this order)::

    {"level":"info","ts":"2026-12-06T09:11:05.681Z","caller":"server/node.py:546",
     "msg":"member 8e9e05c5: leader is now 8e9e05c5 (term 2, role LEADER)",
     "member-id":"8e9e05c52164694d","cluster-id":"cdf818194e3a8c32",
     "leader-id":"8e9e05c52164694d","term":2,"role":"LEADER"}

  * level: debug | info | warn | error (zap's names, as etcd prints them);
    ts: UTC, RFC 3339 with milliseconds; caller: path under kvstore/ and line;
  * member-id, cluster-id: hex, on every line once the member knows them;
  * per-event fields: ids in hex (`*-id`), terms, indexes, sizes as numbers,
    durations as Go duration strings (`took`) — from `extra={...}` on the
    call (underscores become dashes), or, for the existing messages, from
    EVENT_FIELDS (message template -> names of its arguments), so no call
    site had to change and the message text (which tests and operators grep)
    stays exactly what it was;
  * error and stacktrace when the record carries an exception.

Must never: raise from a formatter (a broken record still prints, with its
raw message), or write anything but one JSON object per line in JSON mode.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, TextIO

FORMATS = ("json", "text")
LEVELS = ("debug", "info", "warn", "error")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_ZAP_LEVEL = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep

# Message template -> (field name, kind) per %-argument; None skips one.
# kind: "id" (hex string), "int", "str", "float", "duration" (seconds -> Go string).
Field = tuple[str, str] | None
EVENT_FIELDS: dict[str, tuple[Field, ...]] = {
    # Elections (server/node.py)
    "member %x: leader is now %x (term %d, role %s)": (
        None, ("leader-id", "id"), ("term", "int"), ("role", "str"),
    ),
    # Raft log snapshots (server/node.py) and snapshot transfer (maintenance/)
    "raft log compacted up to index %d (snapshot at %d)": (
        ("compact-index", "int"), ("snapshot-index", "int"),
    ),
    "sent snapshot at index %d (%d bytes) to member %x": (
        ("snapshot-index", "int"), ("snapshot-size-bytes", "int"), ("remote-peer-id", "id"),
    ),
    "received snapshot at index %d (%d bytes) from member %x": (
        ("snapshot-index", "int"), ("snapshot-size-bytes", "int"), ("remote-peer-id", "id"),
    ),
    "installed snapshot at index %d (term %d): %d records in %d batches, %s": (
        ("snapshot-index", "int"), ("snapshot-term", "int"), ("records", "int"),
        ("batches", "int"), ("how", "str"),
    ),
    "snapshot to member %x failed: %s": (("remote-peer-id", "id"), ("error", "str")),
    "snapshot to %x: peer acknowledged %d of %d bytes": (
        ("remote-peer-id", "id"), ("acknowledged-bytes", "int"), ("snapshot-size-bytes", "int"),
    ),
    # Membership and peers
    "applied conf change %s for member %x": (("conf-change", "str"), ("changed-member-id", "id")),
    "rejected stream from remote peer %x because it was removed": (("remote-peer-id", "id"),),
    "peer %x says this member (%x) %s": (("remote-peer-id", "id"), None, None),
    "member %x has been permanently removed from the cluster (%s)": (
        ("removed-member-id", "id"), ("reason", "str"),
    ),
    "joining cluster %x as member %x (member list from %x at %s)": (
        ("join-cluster-id", "id"), ("join-member-id", "id"), ("remote-peer-id", "id"),
        ("remote-peer-url", "str"),
    ),
    # Apply
    "skipping undecodable entry at index %d": (("index", "int"),),
    "skipping undecodable conf change at index %d": (("index", "int"),),
    "dropping message %s: %s": (("message-type", "str"), ("error", "str")),
    # Leases, watches, maintenance
    "revoke of expired lease %x failed: %s": (("lease-id", "id"), ("error", "str")),
    "no leader for %d checks: canceling %d stream(s)": (("checks", "int"), ("streams", "int")),
    "defragmented: %d -> %d bytes in %.2fs": (
        ("size-before-bytes", "int"), ("size-after-bytes", "int"), ("took", "duration"),
    ),
    "database size %d exceeds quota %d: raising NOSPACE alarm": (
        ("db-size-bytes", "int"), ("quota-bytes", "int"),
    ),
}  # fmt: skip

# LogRecord's own attributes: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

_context_lock = threading.Lock()
_context: dict[str, str] = {}


def set_member(member_id: int, cluster_id: int) -> None:
    """From now on every line carries member-id and cluster-id (hex)."""
    with _context_lock:
        _context["member-id"] = f"{member_id:016x}"
        _context["cluster-id"] = f"{cluster_id:016x}"


def clear_member() -> None:
    with _context_lock:
        _context.clear()


def go_duration(seconds: float) -> str:
    """Go's time.Duration.String() for `seconds`: 1.5s, 2.345ms, 350ns, 1m30s."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1000:
        return f"{sign}{ns}ns"
    if ns < 10**9:
        unit, size, digits = ("µs", 10**3, 3) if ns < 10**6 else ("ms", 10**6, 6)
        whole, frac = divmod(ns, size)
        return sign + f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") + unit
    h, rest = divmod(ns, 3600 * 10**9)
    m, rest = divmod(rest, 60 * 10**9)
    s, frac = divmod(rest, 10**9)
    secs = f"{s}.{frac:09d}".rstrip("0").rstrip(".") + "s"
    if h:
        return f"{sign}{h}h{m}m{secs}"
    if m:
        return f"{sign}{m}m{secs}"
    return sign + secs


def _convert(value: Any, kind: str) -> Any:
    if kind == "id":
        return f"{value:016x}" if isinstance(value, int) else str(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "duration":
        return go_duration(float(value))
    return str(value)


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime.timedelta):
        return go_duration(value.total_seconds())
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; see the module docstring for the fields."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            doc = self._document(record)
        except Exception as exc:  # noqa: BLE001 - a log line must never be lost
            doc = {
                "level": _ZAP_LEVEL.get(record.levelno, record.levelname.lower()),
                "ts": self._ts(record),
                "msg": str(record.msg),
                "log-format-error": repr(exc),
            }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), default=str)

    def _ts(self, record: logging.LogRecord) -> str:
        t = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"

    def _caller(self, record: logging.LogRecord) -> str:
        path = record.pathname
        if path.startswith(_PACKAGE_DIR):
            path = path[len(_PACKAGE_DIR) :]
        else:
            path = os.path.join(*path.split(os.sep)[-2:]) if os.sep in path else path
        return f"{path}:{record.lineno}"

    def _document(self, record: logging.LogRecord) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "level": _ZAP_LEVEL.get(record.levelno, record.levelname.lower()),
            "ts": self._ts(record),
            "caller": self._caller(record),
            "msg": record.getMessage(),
        }
        with _context_lock:
            doc.update(_context)
        spec = EVENT_FIELDS.get(record.msg) if isinstance(record.msg, str) else None
        args = record.args if isinstance(record.args, tuple) else ()
        if spec is not None and len(spec) == len(args):
            for field, value in zip(spec, args, strict=True):
                if field is not None:
                    doc[field[0]] = _convert(value, field[1])
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key.replace("_", "-")] = _jsonable(value)
        if record.exc_info and record.exc_info[1] is not None:
            doc["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            doc["stacktrace"] = self.formatException(record.exc_info)
        elif record.exc_text:
            doc["stacktrace"] = record.exc_text
        return doc


def level_number(level: str) -> int:
    """--log-level name -> logging level (ValueError for an unknown name)."""
    table = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
             "warning": logging.WARNING, "error": logging.ERROR}  # fmt: skip
    try:
        return table[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; expected one of {LEVELS}") from None


def split_outputs(value: str | Sequence[str]) -> list[str]:
    """--log-outputs: comma separated stderr | stdout | default (stderr) | FILE."""
    items = value.split(",") if isinstance(value, str) else list(value)
    outputs = [o.strip() for o in items if o.strip()]
    return outputs or ["stderr"]


def _stream(output: str) -> TextIO | None:
    if output in ("stderr", "default"):
        return sys.stderr
    if output == "stdout":
        return sys.stdout
    return None


def configure(
    fmt: str = "json",
    level: str = "info",
    outputs: str | Sequence[str] = "stderr",
    *,
    force: bool = False,
) -> None:
    """Install the process's log handlers on the root logger.

    Like logging.basicConfig, a root logger that already has handlers (an
    embedding application, pytest running the command in-process) is left
    alone unless `force`; the arguments are still validated. Raises
    ValueError for an unknown format or level, OSError when a log file cannot
    be opened (the caller turns both into one line and exit 2)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r}; expected one of {FORMATS}")
    number = level_number(level)
    root = logging.getLogger()
    if root.handlers and not force:
        for output in split_outputs(outputs):
            if _stream(output) is None:
                open(output, "a", encoding="utf-8").close()  # noqa: SIM115 - checks it opens
        return
    formatter: logging.Formatter = (
        JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)
    )
    handlers: list[logging.Handler] = []
    for output in split_outputs(outputs):
        stream = _stream(output)
        handler: logging.Handler
        if stream is not None:
            handler = logging.StreamHandler(stream)
        else:
            handler = logging.FileHandler(output, encoding="utf-8", delay=False)
        handler.setFormatter(formatter)
        handlers.append(handler)
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(number)
    logging.captureWarnings(True)
