"""Configuration trees <-> flat keys, and the typed encoding of leaf values.

Owns: the ONE format shared by `kvctl config load|dump` and
`client.config_view(decode="yaml")`:

  * a tree of mappings and lists under a prefix becomes one key per leaf,
    path segments joined with '/', list items numbered 0..n-1::

        {"db": {"host": "db1", "port": 5432}, "peers": ["a", "b"]}
        under /app  ->  /app/db/host = db1      /app/db/port = 5432
                        /app/peers/0 = a        /app/peers/1 = b

  * each leaf is stored as a YAML scalar that reads back as the same value
    and type: numbers, booleans and null plain (`5432`, `true`, `null`),
    strings plain when that is unambiguous (`db1`) and double-quoted when the
    plain text would read back as something else (the string "5432" is stored
    as `"5432"`, "yes" as `"yes"`, "" as the empty value); empty mappings and
    lists as `{}` / `[]`. Plain strings stay readable with `etcdctl get`.

Invariant (tested as a property): `decode_leaf(encode_leaf(v)) == v` for every
JSON scalar `v`, so dump(load(tree)) == tree with types preserved.

Must never: perform I/O, or decode a value to a type JSON cannot represent
(YAML dates, binary, ... are returned as the stored text).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from typing import Any

import yaml

Decoder = Callable[[bytes], Any]

_JSON_SCALARS = (str, int, float, bool, type(None))


def _json_compatible(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list):
        return all(_json_compatible(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_compatible(v) for k, v in value.items())
    return False


def decode_leaf(text: str) -> Any:
    """A stored leaf (YAML scalar text) -> its value.

    "" is the empty string; text that is not valid YAML, or that YAML reads
    as a non-JSON type (a date, binary ...), is returned unchanged."""
    if text == "":
        return ""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if _json_compatible(value) else text


def _yaml_float(value: float) -> str:
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    # PyYAML needs a '.' in the mantissa to read "1e+20" as a float.
    return yaml.safe_dump(value).split("\n", 1)[0]


def encode_leaf(value: Any) -> str:
    """A JSON-compatible leaf value -> the text stored in the key.

    Raises TypeError for values JSON cannot represent."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _yaml_float(value)
    if isinstance(value, str):
        if decode_leaf(value) == value and type(decode_leaf(value)) is str:
            return value
        # JSON's double-quoted string is a valid YAML double-quoted scalar.
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict) and not value:
        return "{}"
    if isinstance(value, list) and not value:
        return "[]"
    if _json_compatible(value):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    raise TypeError(f"cannot store a {type(value).__name__} as a configuration value")


def flatten_tree(tree: Any, encode: Callable[[Any], str] = encode_leaf) -> dict[str, str]:
    """Nested mappings/lists -> {relative path: encoded leaf}.

    Raises ValueError when the top is not a mapping or a key segment is
    empty or contains '/' (it could not be read back)."""
    if not isinstance(tree, dict):
        raise ValueError("a configuration tree must be a mapping at the top")
    flat: dict[str, str] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict) and (node or not path):
            for k, v in node.items():
                seg = str(k)
                if "/" in seg or not seg:
                    raise ValueError(f"key segment {seg!r} is empty or contains '/'")
                walk(v, [*path, seg])
        elif isinstance(node, list) and node:
            for i, v in enumerate(node):
                walk(v, [*path, str(i)])
        else:
            flat["/".join(path)] = encode(node)

    walk(tree, [])
    return flat


class _Branch(dict):
    """A mapping built from paths (as opposed to a decoded mapping leaf)."""


def build_tree(items: Mapping[str, Any]) -> dict[str, Any]:
    """{relative path: value} -> nested mappings; a mapping whose keys are
    exactly 0..n-1 becomes a list. A path that is both a leaf and a parent
    keeps the leaf under the key "_value" (`flatten_tree` never writes that;
    only a hand-written key can)."""
    root = _Branch()
    for path in sorted(items):
        parts = path.split("/")
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, _Branch):
                child = _Branch() if part not in node else _Branch(_value=node[part])
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), _Branch):
            node[leaf]["_value"] = items[path]
        else:
            node[leaf] = items[path]
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, _Branch):
        return node  # a leaf, decoded mappings included, is kept as it is
    plain = {k: _listify(v) for k, v in node.items()}
    if (
        plain
        and all(k.isascii() and k.isdigit() and k == str(int(k)) for k in plain)
        and sorted(int(k) for k in plain) == list(range(len(plain)))
    ):
        return [plain[str(i)] for i in range(len(plain))]
    return plain


# --- decoders of stored values (config_view's `decode=`) ---------------------


def decode_yaml(raw: bytes) -> Any:
    """The kvctl config format (see the module docstring); UnicodeDecodeError
    for values that are not UTF-8."""
    return decode_leaf(raw.decode("utf-8"))


def decode_json(raw: bytes) -> Any:
    """Each value is one JSON document; ValueError when it is not."""
    return json.loads(raw.decode("utf-8"))


def decode_raw(raw: bytes) -> str:
    """The value as text; UnicodeDecodeError when it is not UTF-8."""
    return raw.decode("utf-8")


DECODERS: dict[str, Decoder] = {"yaml": decode_yaml, "json": decode_json, "raw": decode_raw}


def decoder_for(decode: str | Decoder) -> Decoder:
    """A decoder by name ("yaml", "json", "raw") or a callable bytes -> value."""
    if callable(decode):
        return decode
    try:
        return DECODERS[decode]
    except KeyError:
        raise ValueError(
            f"unknown decode {decode!r}; expected one of {sorted(DECODERS)} or a callable"
        ) from None
