"""Output formatting for kvctl: etcdctl-compatible `simple`, `json`, `table`.

Owns: how results are rendered. `simple` reproduces etcdctl 3.4's line
format for the common commands (scripts parse it); `json` prints what
etcdctl -w json prints (kvctl_json.py); `table` uses rich.

Must never: talk to the cluster or decide exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from kvstore.cli import kvctl_json
from kvstore.cli.kvctl_common import EXIT_USAGE, KvctlError
from kvstore.client.types import (
    DeleteResult,
    GetResult,
    KeyValue,
    PutResult,
    TxnResult,
)

FORMATS = ("simple", "json", "table")


def print_json(obj: Any) -> None:
    """etcdctl's JSON for a kvctl result (see kvctl_json)."""
    kvctl_json.echo(kvctl_json.document(obj))


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def print_kv(kv: KeyValue, *, value_only: bool = False) -> None:
    """etcdctl printKV: key line (unless value_only) then value line."""
    if not value_only:
        click.echo(_text(kv.key))
    click.echo(_text(kv.value))


def print_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """An ASCII table like etcdctl's; never truncates cells (pipes get full width)."""
    table = Table(box=box.ASCII, show_lines=False)
    for name in columns:
        table.add_column(name, no_wrap=True, overflow="ignore")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:
        console = Console(highlight=False, markup=False, width=100_000, color_system=None)
    console.print(table, crop=False)


def human_bytes(n: int) -> str:
    """go-humanize Bytes (SI): 20480 -> '20 kB' (what etcdctl prints)."""
    if n < 10:
        return f"{n} B"
    units = ["B", "kB", "MB", "GB", "TB", "PB", "EB"]
    val, i = float(n), 0
    while val >= 1000 and i < len(units) - 1:
        val /= 1000
        i += 1
    # humanize rounds to one decimal, then prints without decimals when >= 10.
    val = round(val * 10) / 10
    return f"{val:.1f} {units[i]}" if val < 10 else f"{val:.0f} {units[i]}"


# --- KV results (shared by get/put/del/txn) ------------------------------------------


def simple_get(r: GetResult, *, value_only: bool = False, count_only: bool = False) -> None:
    if count_only:
        click.echo(str(r.count))
        return
    for kv in r.kvs:
        print_kv(kv, value_only=value_only)


def simple_put(r: PutResult) -> None:
    click.echo("OK")
    if r.prev_kv is not None:
        print_kv(r.prev_kv)


def simple_delete(r: DeleteResult) -> None:
    click.echo(str(r.deleted))
    for kv in r.prev_kvs:
        print_kv(kv)


def simple_txn(r: TxnResult) -> None:
    click.echo("SUCCESS" if r.succeeded else "FAILURE")
    for sub in r.responses:
        click.echo("")
        simple_result(sub)


def simple_result(r: Any) -> None:
    if isinstance(r, GetResult):
        simple_get(r)
    elif isinstance(r, PutResult):
        simple_put(r)
    elif isinstance(r, DeleteResult):
        simple_delete(r)
    elif isinstance(r, TxnResult):
        simple_txn(r)
    else:
        raise TypeError(type(r).__name__)


def table_kvs(kvs: Sequence[KeyValue]) -> None:
    print_table(
        ["KEY", "VALUE", "CREATE REV", "MOD REV", "VERSION", "LEASE"],
        [
            [
                _text(kv.key),
                _text(kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                f"{kv.lease:016x}" if kv.lease else "",
            ]
            for kv in kvs
        ],
    )


def emit(fmt: str, result: Any, simple: Any = None, table: Any = None, doc: Any = None) -> None:
    """Render `result` in `fmt`; `simple`/`table` are zero-arg callables;
    `doc` overrides the JSON document (default: kvctl_json.document(result))."""
    if fmt == "json":
        kvctl_json.echo(kvctl_json.document(result) if doc is None else doc)
    elif fmt == "table":
        if table is None:
            raise KvctlError("table not supported as output format", EXIT_USAGE)
        table()
    else:
        (simple or (lambda: simple_result(result)))()
