"""kvctl config load/dump: schema checks before any write, dry run, prune, and
types that survive the round trip (against etcd and kvstore)."""

from __future__ import annotations

import json

import yaml

from kvstore.client import Client

TREE = {
    "db": {"host": "db1", "port": 5432, "ratio": 0.75, "big": 10**18, "neg": -3},
    "flags": {"tls": True, "debug": False, "nothing": None},
    "looks_typed": {"port": "5432", "yes": "yes", "empty": "", "null": "null"},
    "replicas": ["a", "b", {"name": "c", "weight": 2}],
    "nested": {"deeper": {"deepest": [1, [2, 3]]}},
    "empty_list": [],
    "empty_map": {},
}

SCHEMA = {
    "type": "object",
    "properties": {
        "db": {
            "type": "object",
            "properties": {"port": {"type": "integer", "maximum": 65535}},
            "required": ["host", "port"],
        },
        "replicas": {"type": "array", "minItems": 1},
    },
    "required": ["db"],
}


def _count(kvctl, prefix: str) -> str:
    return kvctl("get", prefix + "/", "--prefix", "--count-only").out


def test_dump_round_trips_numbers_booleans_lists_and_nested_maps(kvctl, cluster, ns, tmp_path):
    prefix = ns + "app"
    src = tmp_path / "app.yaml"
    src.write_text(yaml.safe_dump(TREE))
    assert kvctl("config", "load", str(src), "--prefix", prefix).code == 0
    # Stored plainly where unambiguous, quoted where a plain value would change type.
    assert kvctl("get", f"{prefix}/db/port", "--print-value-only").out == "5432\n"
    assert kvctl("get", f"{prefix}/looks_typed/port", "--print-value-only").out == '"5432"\n'
    assert kvctl("get", f"{prefix}/db/host", "--print-value-only").out == "db1\n"
    dumped_json = kvctl("config", "dump", "--prefix", prefix, "--format", "json")
    assert json.loads(dumped_json.out) == TREE
    dumped_yaml = kvctl("config", "dump", "--prefix", prefix).out
    assert yaml.safe_load(dumped_yaml) == TREE
    assert isinstance(yaml.safe_load(dumped_yaml)["db"]["port"], int)
    # Loading the dump again changes nothing; a config view reads the same tree.
    src.write_text(dumped_yaml)
    again = kvctl("config", "load", str(src), "--prefix", prefix, "--prune")
    assert again.out == "0 to add, 0 to change, 0 to delete\n"
    with Client(cluster.endpoints) as c, c.config_view(prefix) as view:
        assert view.tree() == TREE
    raw = json.loads(kvctl("config", "dump", "--prefix", prefix, "--format", "json", "--raw").out)
    assert raw["db"]["port"] == "5432" and raw["looks_typed"]["port"] == '"5432"'


def test_schema_refuses_an_invalid_tree_before_writing_anything(kvctl, ns, tmp_path):
    prefix = ns + "app"
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    kvctl("put", f"{prefix}/db/host", "keep")
    bad = "db:\n  port: 70000\nreplicas: []\nextra: 1\n"
    r = kvctl("config", "load", "-", "--prefix", prefix, "--schema", str(schema), input=bad)
    assert r.code == 2
    assert r.err.splitlines() == [
        "Error: $.db: 'host' is a required property",
        "Error: $.db.port: 70000 is greater than the maximum of 65535",
        "Error: $.replicas: [] should be non-empty",
        f"Error: 3 schema error(s) against {schema}; nothing written",
    ]
    assert r.out == ""  # refused before computing a diff: nothing read, nothing written
    assert _count(kvctl, prefix) == "1\n"
    assert kvctl("get", f"{prefix}/db/host", "--print-value-only").out == "keep\n"
    # The same check passes a valid tree, in a dry run and for real.
    good = "db:\n  host: db1\n  port: 5432\nreplicas: [a]\n"
    args = ("config", "load", "-", "--prefix", prefix, "--schema", str(schema))
    dry = kvctl(*args, "--dry-run", input=good)
    assert dry.code == 0 and dry.out.endswith("2 to add, 1 to change, 0 to delete\n")
    assert _count(kvctl, prefix) == "1\n"
    assert kvctl(*args, input=good).code == 0
    assert _count(kvctl, prefix) == "3\n"


def test_schema_file_errors_are_one_clear_line(kvctl, ns, tmp_path):
    prefix = ns + "app"
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "no-such-type"}')
    r = kvctl("config", "load", "-", "--prefix", prefix, "--schema", str(broken), input="a: 1\n")
    assert r.code == 2 and r.err.startswith("Error: invalid JSON Schema:")
    missing = tmp_path / "missing.json"
    r = kvctl("config", "load", "-", "--prefix", prefix, "--schema", str(missing), input="a: 1\n")
    assert r.code == 2 and r.err.startswith(f"Error: cannot read schema {missing}")
    assert len(r.err.splitlines()) == 1 and "Traceback" not in r.err
    assert _count(kvctl, prefix) == "0\n"


def test_prune_deletes_only_with_the_flag_and_dates_load_as_strings(kvctl, ns):
    prefix = ns + "app"
    assert kvctl("config", "load", "-", "--prefix", prefix, input="a: 1\nb: 2\n").code == 0
    keep = kvctl("config", "load", "-", "--prefix", prefix, input="a: 1\n")
    assert keep.out == "0 to add, 0 to change, 0 to delete\n" and _count(kvctl, prefix) == "2\n"
    pruned = kvctl("config", "load", "-", "--prefix", prefix, "--prune", input="a: 1\n")
    assert f"- {prefix}/b" in pruned.out and _count(kvctl, prefix) == "1\n"
    dated = kvctl("config", "load", "-", "--prefix", prefix, input="day: 2024-01-31\n")
    assert dated.code == 0
    dumped = json.loads(kvctl("config", "dump", "--prefix", prefix, "--format", "json").out)
    assert dumped == {"a": 1, "day": "2024-01-31"}
