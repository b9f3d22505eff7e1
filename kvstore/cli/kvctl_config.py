"""`kvctl config load|dump`: YAML/JSON trees <-> flat keys joined with '/'.

Owns: the commands, the optional JSON Schema check of the file (before
anything is read from or written to the cluster), and the diff between a file
and the keys stored under a prefix. The tree <-> keys format itself (typed
leaves: `5432` stays a number, the string "5432" is stored quoted) lives in
`kvstore.client.configtree`, shared with `client.config_view`, so what `load`
writes, `dump` and every config view read back with the same types.
`flatten` / `unflatten` below are the older untyped helpers (every leaf a
string), kept for callers of this module and `dump --raw`.

Invariant: `load` applies the whole diff in ONE Txn guarded by the
mod_revision of every key it read (create_revision == 0 for new keys), so a
concurrent change makes it fail (exit 5) instead of overwriting. etcd caps a
txn at 128 operations: larger loads need `--batch`, which is not atomic and
says so.

Must never: delete keys under the prefix that are missing from the file
unless `--prune` is given.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

import click
import yaml
from rich.console import Console
from rich.progress import Progress

from kvstore.cli.kvctl_common import (
    EXIT_PRECONDITION,
    EXIT_USAGE,
    KvctlError,
    Settings,
    pass_settings,
)
from kvstore.client import Compare, Op
from kvstore.client.config_view import load_schema, schema_errors
from kvstore.client.configtree import build_tree, decode_leaf, flatten_tree

MAX_TXN_OPS = 128  # etcd --max-txn-ops default


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    return str(value)


def flatten(tree: Any, prefix: str) -> dict[str, str]:
    """Nested mappings/lists -> {key: value}; keys are prefix + '/'-joined path."""
    base = prefix.rstrip("/")
    flat: dict[str, str] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            if not node and path:
                flat["/".join([base, *path])] = ""
            for k, v in node.items():
                if "/" in str(k):
                    raise KvctlError(f"key segment {k!r} contains '/'", EXIT_USAGE)
                walk(v, [*path, str(k)])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, [*path, str(i)])
        else:
            if not path:
                raise KvctlError("config file must contain a mapping at the top", EXIT_USAGE)
            flat["/".join([base, *path])] = _scalar(node)

    walk(tree, [])
    return flat


def unflatten(items: dict[str, str], prefix: str) -> Any:
    """Inverse of `flatten` (values stay strings; dicts with keys 0..n-1 become lists)."""
    base = prefix.rstrip("/") + "/"
    root: dict[str, Any] = {}
    for key in sorted(items):
        if not key.startswith(base):
            continue
        parts = key[len(base) :].split("/")
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {"_value": child}
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict):
            node[leaf]["_value"] = items[key]
        else:
            node[leaf] = items[key]
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node = {k: _listify(v) for k, v in node.items()}
    if (
        node
        and all(k.isdigit() for k in node)
        and sorted(int(k) for k in node) == list(range(len(node)))
    ):
        return [node[str(i)] for i in range(len(node))]
    return node


def _jsonable(node: Any) -> Any:
    """YAML dates/times become ISO strings (JSON, schemas and config views
    have no date type); everything else is left as parsed."""
    if isinstance(node, dict):
        return {k: _jsonable(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_jsonable(v) for v in node]
    if isinstance(node, (datetime.date, datetime.datetime)):
        return node.isoformat()
    return node


def flatten_typed(tree: Any, prefix: str) -> dict[str, str]:
    """`flatten` with typed leaves (the configtree format) and full keys."""
    base = prefix.rstrip("/")
    try:
        return {f"{base}/{path}": text for path, text in flatten_tree(tree).items()}
    except (ValueError, TypeError) as exc:
        raise KvctlError(str(exc), EXIT_USAGE) from None


def check_schema(tree: Any, schema_file: str) -> None:
    """Print one "Error: ..." line per schema violation of `tree` and fail
    with exit code 2; nothing has been read from or written to the cluster."""
    try:
        validator = load_schema(schema_file)
    except ValueError as exc:
        raise KvctlError(str(exc), EXIT_USAGE) from None
    problems = schema_errors(validator, tree)
    for line in problems:
        click.echo(f"Error: {line}", err=True)
    if problems:
        raise KvctlError(
            f"{len(problems)} schema error(s) against {schema_file}; nothing written",
            EXIT_USAGE,
        )


@dataclass
class Diff:
    add: dict[str, str]
    change: dict[str, tuple[str, str]]
    delete: list[str]
    revisions: dict[str, int]  # mod_revision of every existing key read

    @property
    def empty(self) -> bool:
        return not (self.add or self.change or self.delete)

    def ops(self) -> int:
        return len(self.add) + len(self.change) + len(self.delete)


def compute_diff(desired: dict[str, str], current: dict[str, tuple[str, int]], prune: bool) -> Diff:
    add = {k: v for k, v in desired.items() if k not in current}
    change = {
        k: (current[k][0], v) for k, v in desired.items() if k in current and current[k][0] != v
    }
    delete = sorted(k for k in current if k not in desired) if prune else []
    return Diff(add, change, delete, {k: rev for k, (_, rev) in current.items()})


def _read_tree(file, fmt: str) -> Any:
    text = file.read()
    try:
        if fmt == "json" or (fmt == "auto" and getattr(file, "name", "").endswith(".json")):
            return json.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise KvctlError(
            f"cannot parse {getattr(file, 'name', 'input')}: {exc}", EXIT_USAGE
        ) from None


@click.group("config")
def config_group():
    """Load or dump YAML/JSON configuration trees as keys under a prefix."""


@config_group.command("load")
@click.argument("file", type=click.File("r"))
@click.option("--prefix", required=True, help="key prefix, e.g. /apps/web")
@click.option("--format", "fmt", default="auto", type=click.Choice(["auto", "yaml", "json"]))
@click.option(
    "--schema",
    "schema_file",
    type=click.Path(dir_okay=False),
    help="JSON Schema (JSON or YAML file) FILE must satisfy; checked before any write",
)
@click.option("--dry-run", is_flag=True, help="print the diff, change nothing")
@click.option("--prune", is_flag=True, help="delete keys under the prefix missing from FILE")
@click.option(
    "--batch",
    is_flag=True,
    help=f"allow more than {MAX_TXN_OPS} changes in several txns (NOT atomic)",
)
@pass_settings
def config_load(s: Settings, file, prefix, fmt, schema_file, dry_run, prune, batch):
    """Apply FILE under PREFIX in one transaction (after showing the diff).

    Leaves keep their type: `port: 5432` is stored as 5432 and dumped back as a
    number, `port: "5432"` as a string. With --schema an invalid FILE is
    refused (exit 2, one line per error) before anything is written."""
    tree = _jsonable(_read_tree(file, fmt))
    if not isinstance(tree, dict):
        raise KvctlError("config file must contain a mapping at the top", EXIT_USAGE)
    if schema_file is not None:
        check_schema(tree, schema_file)
    desired = flatten_typed(tree, prefix)
    client = s.client()
    base = prefix.rstrip("/") + "/"
    existing = client.get(base, prefix=True)
    current = {
        kv.key.decode(): (kv.value.decode("utf-8", "replace"), kv.mod_revision)
        for kv in existing.kvs
    }
    diff = compute_diff(desired, current, prune)
    for k, v in sorted(diff.add.items()):
        click.echo(f"+ {k} = {v}")
    for k, (old, new) in sorted(diff.change.items()):
        click.echo(f"~ {k}: {old} -> {new}")
    for k in diff.delete:
        click.echo(f"- {k}")
    click.echo(
        f"{len(diff.add)} to add, {len(diff.change)} to change, {len(diff.delete)} to delete"
    )
    if dry_run or diff.empty:
        return
    guards_ops = _plan(diff)
    if len(guards_ops) > 1 and not batch:
        raise KvctlError(
            f"{diff.ops()} changes exceed one transaction ({MAX_TXN_OPS} ops); "
            "use --batch to apply them in several (non-atomic) transactions",
            EXIT_USAGE,
        )
    with Progress(
        transient=True, disable=len(guards_ops) == 1, console=Console(stderr=True)
    ) as bar:
        task = bar.add_task("applying", total=diff.ops())
        for guards, ops in guards_ops:
            r = client.txn().if_(*guards).then(*ops).commit()
            if not r.succeeded:
                raise KvctlError(
                    "keys under the prefix changed concurrently; nothing applied "
                    "from this transaction (re-run to see the new diff)",
                    EXIT_PRECONDITION,
                )
            bar.advance(task, len(ops))
    click.echo(f"applied at revision {r.revision}")


def _plan(diff: Diff) -> list[tuple[list, list]]:
    """Split the diff into (guards, ops) transactions of at most MAX_TXN_OPS each."""
    items: list[tuple[Any, Any]] = []
    for k, v in sorted(diff.add.items()):
        items.append((Compare.create(k) == 0, Op.put(k, v)))
    for k, (_old, v) in sorted(diff.change.items()):
        items.append((Compare.mod(k) == diff.revisions[k], Op.put(k, v)))
    for k in diff.delete:
        items.append((Compare.mod(k) == diff.revisions[k], Op.delete(k)))
    chunks = [items[i : i + MAX_TXN_OPS] for i in range(0, len(items), MAX_TXN_OPS)]
    return [([g for g, _ in c], [o for _, o in c]) for c in chunks]


@config_group.command("dump")
@click.option("--prefix", required=True, help="key prefix, e.g. /apps/web")
@click.option("--format", "fmt", default="yaml", type=click.Choice(["yaml", "json"]))
@click.option(
    "--typed",
    is_flag=True,
    hidden=True,
    help="(the default now) values keep their type: 5432 -> number, true -> boolean",
)
@click.option("--raw", is_flag=True, help="every value as the stored string (untyped)")
@pass_settings
def config_dump(s: Settings, prefix, fmt, typed, raw):
    """Print the keys under PREFIX as a YAML or JSON tree (types preserved)."""
    base = prefix.rstrip("/") + "/"
    r = s.client().get(base, prefix=True)
    stored = {kv.key.decode(): kv.value.decode("utf-8", "replace") for kv in r.kvs}
    if raw:
        tree = unflatten(stored, prefix)
    else:
        tree = build_tree({k[len(base) :]: decode_leaf(v) for k, v in stored.items()})
    if fmt == "json":
        click.echo(json.dumps(tree, indent=2, sort_keys=True))
    else:
        click.echo(yaml.safe_dump(tree, sort_keys=True, default_flow_style=False), nl=False)


COMMANDS = [config_group]
