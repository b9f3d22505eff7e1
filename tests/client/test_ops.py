"""Pure request building: key ranges as etcdctl sends them, compares, txn builder."""

from __future__ import annotations

import pytest

from kvstore.client import Compare, Op, Txn, prefix_end
from kvstore.client._transport import parse_endpoints
from kvstore.client.ops import key_range, range_request


@pytest.mark.parametrize(
    ("key", "options", "expected"),
    [
        ("foo", {"prefix": True}, (b"foo", b"fop")),
        ("", {"prefix": True}, (b"\0", b"\0")),
        (b"\xff", {"prefix": True}, (b"\xff", b"\0")),
        (b"a\xff", {"prefix": True}, (b"a\xff", b"b")),
        ("a", {"from_key": True}, (b"a", b"\0")),
        ("", {"from_key": True}, (b"\0", b"\0")),
        ("a", {"range_end": "z"}, (b"a", b"z")),
        ("k", {}, (b"k", b"")),
    ],
)
def test_key_ranges_match_etcdctl(key, options, expected):
    assert key_range(key, **options) == expected


def test_prefix_end_and_conflicting_range_options():
    assert prefix_end(b"/app/") == b"/app0"
    with pytest.raises(ValueError):
        key_range("k", prefix=True, from_key=True)


def test_range_request_options_map_to_enums():
    req = range_request("k", sort_order="descend", sort_target="mod", serializable=True)
    assert (req.sort_order, req.sort_target, req.serializable) == (2, 3, True)
    with pytest.raises(ValueError):
        range_request("k", sort_target="size")


def test_compare_builds_etcd_compare_messages():
    c = (Compare.value("k") == "v").to_pb()
    assert (c.key, c.target, c.result, c.value) == (b"k", 3, 0, b"v")
    c = (Compare.mod("k", prefix=True) < 7).to_pb()
    assert (c.range_end, c.target, c.result, c.mod_revision) == (b"l", 2, 2, 7)
    assert (Compare.create("k") != 0).to_pb().result == 3
    assert (Compare.lease("k") > 1).to_pb().WhichOneof("target_union") == "lease"
    assert (Compare.version("k") == 0).to_pb().WhichOneof("target_union") == "version"


def test_txn_builder_accumulates_and_validates():
    sent = []
    txn = Txn(lambda req: sent.append(req) or "done")
    result = (
        txn.if_(Compare.version("a") == 0)
        .then(Op.put("a", "1"), Op.get("a"))
        .else_(Op.delete("a", prefix=True))
        .commit()
    )
    assert result == "done"
    (req,) = sent
    assert len(req.compare) == 1 and len(req.success) == 2 and len(req.failure) == 1
    assert req.failure[0].request_delete_range.range_end == b"b"
    with pytest.raises(TypeError):
        Txn(lambda r: r).if_(True)
    with pytest.raises(TypeError):
        Txn(lambda r: r).then("put a 1")


def test_parse_endpoints():
    assert parse_endpoints("http://a:1, b:2/") == ["a:1", "b:2"]
    with pytest.raises(ValueError):
        parse_endpoints(" , ")
