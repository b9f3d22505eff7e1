"""kvctl KV commands: put, get, del, txn, compaction, watch.

Owns: flag parsing and output for the KV verbs, with etcdctl 3.4's flag names
and `simple` output. Talks to the cluster only through kvstore.client.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys

import click

from kvstore.cli import kvctl_json
from kvstore.cli import kvctl_output as out
from kvstore.cli.kvctl_common import (
    EXIT_USAGE,
    KvctlError,
    Settings,
    parse_hex_id,
    pass_settings,
)
from kvstore.cli.kvctl_txn import TxnSyntaxError, _flags, parse_txn
from kvstore.client import AsyncClient, Event
from kvstore.client.ops import txn_request

_SORT_TARGETS = ["CREATE", "KEY", "MODIFY", "VALUE", "VERSION"]


@click.command("put")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--lease", default="0", help="lease ID (hexadecimal) to attach to the key")
@click.option("--prev-kv", is_flag=True, help="return the previous key-value pair")
@click.option("--ignore-value", is_flag=True, help="update the key using its current value")
@click.option("--ignore-lease", is_flag=True, help="update the key using its current lease")
@pass_settings
def put_cmd(s: Settings, key, value, lease, prev_kv, ignore_value, ignore_lease):
    """Put KEY VALUE into the store (VALUE from stdin when omitted)."""
    if value is None:
        if ignore_value:
            value = ""
        else:
            value = sys.stdin.read()
            if not value:
                raise KvctlError(
                    "put command needs 1 argument and input from stdin or 2 arguments", EXIT_USAGE
                )
    r = s.client().put(
        key,
        value,
        lease=parse_hex_id(lease, "lease ID"),
        prev_kv=prev_kv,
        ignore_value=ignore_value,
        ignore_lease=ignore_lease,
    )
    out.emit(s.write_out, r, lambda: out.simple_put(r))


@click.command("get")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="get keys with matching prefix")
@click.option("--from-key", is_flag=True, help="get keys >= KEY (byte order)")
@click.option("--limit", default=0, type=int, help="maximum number of results")
@click.option("--rev", default=0, type=int, help="read at this revision")
@click.option(
    "--sort-by", type=click.Choice(_SORT_TARGETS, case_sensitive=False), help="sort target"
)
@click.option(
    "--order",
    type=click.Choice(["ASCEND", "DESCEND"], case_sensitive=False),
    help="order of results (ASCEND by default)",
)
@click.option("--keys-only", is_flag=True, help="get only the keys")
@click.option("--count-only", is_flag=True, help="get only the count")
@click.option("--print-value-only", is_flag=True, help="only print values (simple format)")
@click.option(
    "--consistency",
    default="l",
    type=click.Choice(["l", "s"]),
    help="linearizable (l) or serializable (s)",
)
@pass_settings
def get_cmd(
    s: Settings,
    key,
    range_end,
    prefix,
    from_key,
    limit,
    rev,
    sort_by,
    order,
    keys_only,
    count_only,
    print_value_only,
    consistency,
):
    """Get KEY or the range [KEY, RANGE_END)."""
    if range_end is not None and (prefix or from_key):
        raise KvctlError(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            EXIT_USAGE,
        )
    if prefix and from_key:
        raise KvctlError("`--prefix` and `--from-key` cannot be set at the same time", EXIT_USAGE)
    sort_target = (sort_by or "KEY").lower()
    sort_order = (order or ("ASCEND" if sort_by else "NONE")).lower()
    r = s.client().get(
        key,
        range_end=range_end,
        prefix=prefix,
        from_key=from_key,
        limit=limit,
        revision=rev,
        sort_target=sort_target,
        sort_order=sort_order,
        keys_only=keys_only,
        count_only=count_only,
        serializable=consistency == "s",
    )
    out.emit(
        s.write_out,
        r,
        lambda: out.simple_get(r, value_only=print_value_only, count_only=count_only),
        lambda: out.table_kvs(r.kvs),
    )


@click.command("del")
@click.argument("key")
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="delete keys with matching prefix")
@click.option("--prev-kv", is_flag=True, help="return deleted key-value pairs")
@click.option("--from-key", is_flag=True, help="delete keys >= KEY (byte order)")
@pass_settings
def del_cmd(s: Settings, key, range_end, prefix, prev_kv, from_key):
    """Remove KEY or the range [KEY, RANGE_END); prints the number deleted."""
    if range_end is not None and (prefix or from_key):
        raise KvctlError(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
            EXIT_USAGE,
        )
    r = s.client().delete(
        key, range_end=range_end, prefix=prefix, from_key=from_key, prev_kv=prev_kv
    )
    out.emit(s.write_out, r, lambda: out.simple_delete(r))


@click.command("txn")
@click.option("-i", "--interactive", is_flag=True, help="prompt for each section")
@click.option("--file", "file_", type=click.File("r"), help="read the txn from a file")
@pass_settings
def txn_cmd(s: Settings, interactive, file_):
    """Atomic If/Then/Else from stdin (or --file) in etcdctl's syntax:
    compares, blank line, success ops, blank line, failure ops."""
    src = file_ or sys.stdin
    if interactive and file_ is None:
        lines = []
        for prompt in (
            "compares:",
            "success requests (get, put, del):",
            "failure requests (get, put, del):",
        ):
            click.echo(prompt)
            while True:
                line = src.readline()
                if not line or not line.strip():
                    break
                lines.append(line)
            lines.append("\n")
    else:
        lines = src.readlines()
    try:
        compares, success, failure = parse_txn(lines)
    except TxnSyntaxError as exc:
        raise KvctlError(str(exc), EXIT_USAGE) from None
    r = s.client().txn_request(txn_request(compares, success, failure))
    out.emit(s.write_out, r, lambda: out.simple_txn(r))


@click.command("compaction")
@click.argument("revision", type=int)
@click.option("--physical", is_flag=True, help="wait until the compaction is physically applied")
@pass_settings
def compaction_cmd(s: Settings, revision, physical):
    """Discard all history before REVISION."""
    s.client().compact(revision, physical=physical)
    click.echo(f"compacted revision {revision}")


# --- watch -------------------------------------------------------------------------


def _print_event(ev: Event) -> None:
    click.echo(ev.type.name)
    if ev.prev_kv is not None:
        out.print_kv(ev.prev_kv)
    out.print_kv(ev.kv)


def _print_batch(fmt: str, events: list[Event], limit: int = 0) -> list[Event]:
    """Print one watch response (etcdctl: one JSON document per response, or
    the events one by one); returns the events printed (at most `limit`)."""
    shown = events[:limit] if limit else events
    if fmt == "json":
        kvctl_json.echo(kvctl_json.watch_response(shown))
    else:
        for ev in shown:
            _print_event(ev)
    sys.stdout.flush()
    return shown


def _exec(command: str, ev: Event) -> None:
    """Run `command` with the event in ETCD_WATCH_* variables (like etcdctl)."""
    env = {
        **os.environ,
        "ETCD_WATCH_REVISION": str(ev.header_revision or ev.revision),
        "ETCD_WATCH_EVENT_TYPE": ev.type.name,
        "ETCD_WATCH_KEY": ev.key.decode("utf-8", "replace"),
        "ETCD_WATCH_VALUE": ev.value.decode("utf-8", "replace"),
    }
    subprocess.run(shlex.split(command), env=env, check=False)


@click.command("watch")
@click.argument("key", required=False)
@click.argument("range_end", required=False)
@click.option("--prefix", is_flag=True, help="watch on a prefix")
@click.option("--rev", default=0, type=int, help="revision to start watching from")
@click.option("--prev-kv", is_flag=True, help="get the previous key-value pair of each event")
@click.option(
    "-i",
    "--interactive",
    is_flag=True,
    help="read 'watch [--prefix] [--rev N] [--prev-kv] KEY [END]' lines from stdin",
)
@click.option(
    "--exec",
    "exec_",
    metavar="CMD",
    help="run CMD on every event (event in ETCD_WATCH_* environment variables)",
)
@click.option(
    "--max-events",
    default=0,
    type=int,
    hidden=True,
    help="exit after this many events (for scripts and tests)",
)
@pass_settings
def watch_cmd(s: Settings, key, range_end, prefix, rev, prev_kv, interactive, exec_, max_events):
    """Watch KEY (or a range/prefix) and print events as they happen.

    Survives member failures: the watch resumes on another endpoint without
    losing or repeating events."""
    if interactive:
        asyncio.run(_interactive(s, max_events))
        return
    if key is None:
        raise KvctlError("watch needs a key (or -i)", EXIT_USAGE)
    seen = 0
    with s.client().watch(
        key,
        range_end=range_end,
        prefix=prefix,
        start_revision=rev,
        prev_kv=prev_kv,
        reconnect_timeout=3600,
    ) as watcher:
        while True:
            try:
                batch = watcher.next_batch()
            except StopAsyncIteration:
                return
            for ev in _print_batch(s.write_out, batch, max_events - seen if max_events else 0):
                if exec_:
                    _exec(exec_, ev)
                seen += 1
            if max_events and seen >= max_events:
                return


async def _interactive(s: Settings, max_events: int) -> None:
    loop = asyncio.get_running_loop()
    async with AsyncClient(
        s.endpoints, dial_timeout=s.dial_timeout, command_timeout=s.command_timeout
    ) as client:
        seen = 0
        done = asyncio.Event()

        async def pump(watcher) -> None:
            nonlocal seen
            async with watcher:
                while True:
                    try:
                        batch = await watcher.next_batch()
                    except StopAsyncIteration:
                        return
                    seen += len(_print_batch(s.write_out, batch))
                    if max_events and seen >= max_events:
                        done.set()

        tasks = []
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                break
            words = shlex.split(line)
            if not words or words[0] == "progress":
                continue
            if words[0] != "watch":
                click.echo(
                    f"Invalid command {words[0]} (only watch and progress supported)", err=True
                )
                continue
            try:
                pos, fl = _flags(words[1:], {"prefix": False, "rev": True, "prev-kv": False})
            except TxnSyntaxError as exc:
                click.echo(f"Invalid command: {exc}", err=True)
                continue
            if not pos:
                click.echo("Invalid command: watch needs a key", err=True)
                continue
            watcher = client.watch(
                pos[0],
                range_end=pos[1] if len(pos) > 1 else None,
                prefix=bool(fl.get("prefix")),
                start_revision=int(fl.get("rev", 0)),
                prev_kv=bool(fl.get("prev-kv")),
                reconnect_timeout=3600,
            )
            await watcher.start()
            tasks.append(asyncio.ensure_future(pump(watcher)))
        if tasks:
            waiter = asyncio.ensure_future(done.wait())
            await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
            for t in [*tasks, waiter]:
                t.cancel()
            for t in tasks:
                if t.done() and not t.cancelled() and t.exception():
                    raise t.exception()


COMMANDS = [put_cmd, get_cmd, del_cmd, txn_cmd, compaction_cmd, watch_cmd]
