"""etcdctl txn syntax parsing (pure: no cluster needed)."""

from __future__ import annotations

import pytest

from kvstore.cli.kvctl_txn import TxnSyntaxError, parse_compare, parse_op, parse_txn


def test_compare_targets_and_operators():
    c = parse_compare('mod("k1") > "5"')
    assert (c.key, c.target, c.op, c.operand) == (b"k1", 2, ">", 5)
    assert parse_compare('val("k") = "a b"').operand == "a b"
    assert parse_compare('ver("k") != "0"').op == "!="
    assert parse_compare('c("k") < "9"').target == 1
    assert parse_compare('lease("k") = "1f"').operand == 0x1F
    assert parse_compare('value("k") = "say \\"hi\\""').operand == 'say "hi"'


@pytest.mark.parametrize("line", ['mod("k") > 5', 'bogus("k") = "1"', 'mod("k") > "x"', "nonsense"])
def test_malformed_compares_are_rejected(line):
    with pytest.raises(TxnSyntaxError):
        parse_compare(line)


def test_ops_with_flags():
    put = parse_op('put k "two words" --lease=1a --prev-kv').pb.request_put
    assert (put.key, put.value, put.lease, put.prev_kv) == (b"k", b"two words", 0x1A, True)
    get = parse_op("get a --prefix --limit 2").pb.request_range
    assert (get.key, get.range_end, get.limit) == (b"a", b"b", 2)
    rng = parse_op("get a c --rev=7").pb.request_range
    assert (rng.range_end, rng.revision) == (b"c", 7)
    d = parse_op("del k --from-key --prev-kv").pb.request_delete_range
    assert (d.range_end, d.prev_kv) == (b"\0", True)
    for bad in ["put onlykey", "get", "frob k", "get k --nope", "put k v --lease"]:
        with pytest.raises(TxnSyntaxError):
            parse_op(bad)


def test_sections_split_on_blank_lines():
    compares, success, failure = parse_txn(
        ['mod("a") > "0"\n', 'val("b") = "x"\n', "\n", "put a 1\n", "\n", "get a\n", "del b\n"]
    )
    assert len(compares) == 2 and len(success) == 1 and len(failure) == 2
    assert parse_txn(["\n", "\n"]) == ([], [], [])
