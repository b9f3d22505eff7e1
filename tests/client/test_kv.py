"""KV methods of the client: get/put/delete/txn/compact and error mapping."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.client import AsyncClient, Client, Compare, Op, errors


def test_put_then_get_returns_typed_metadata(client, ns):
    first = client.put(ns + "k", "v1")
    second = client.put(ns + "k", b"v2", prev_kv=True)
    assert second.revision == first.revision + 1
    assert second.prev_kv is not None and second.prev_kv.value == b"v1"
    r = client.get(ns + "k")
    assert r.count == 1 and r.revision >= second.revision
    kv = r.kv
    assert (kv.key, kv.value) == ((ns + "k").encode(), b"v2")
    assert kv.create_revision == first.revision
    assert kv.mod_revision == second.revision
    assert kv.version == 2 and kv.lease == 0


def test_get_missing_key_is_empty_not_error(client, ns):
    r = client.get(ns + "absent")
    assert r.kvs == () and r.count == 0 and r.value is None


def test_get_prefix_from_key_range_limit_and_sort(client, ns):
    for i, v in enumerate(["c", "a", "b"]):
        client.put(f"{ns}{i}", v)
    client.put(ns[:-1] + "0", "outside")  # shares the prefix without the slash
    r = client.get(ns, prefix=True)
    assert [kv.key for kv in r.kvs] == [f"{ns}{i}".encode() for i in range(3)]
    limited = client.get(ns, prefix=True, limit=2)
    assert len(limited.kvs) == 2 and limited.more and limited.count == 3
    by_value = client.get(ns, prefix=True, sort_target="value", sort_order="descend")
    assert [kv.value for kv in by_value] == [b"c", b"b", b"a"]
    ranged = client.get(f"{ns}1", range_end=f"{ns}3")
    assert [kv.value for kv in ranged] == [b"a", b"b"]
    from_key = client.get(f"{ns}1", from_key=True)
    assert from_key.kvs[0].key == f"{ns}1".encode() and from_key.count >= 2
    keys = client.get(ns, prefix=True, keys_only=True)
    assert all(kv.value == b"" for kv in keys) and len(keys) == 3
    counted = client.get(ns, prefix=True, count_only=True)
    assert counted.kvs == () and counted.count == 3


def test_get_at_past_revision_and_serializable(client, ns):
    old = client.put(ns + "k", "old")
    client.put(ns + "k", "new")
    assert client.get(ns + "k", revision=old.revision).value == b"old"
    assert client.get(ns + "k").value == b"new"
    # A serializable read is served locally; it may lag but not go backwards past `old`.
    assert client.get(ns + "k", serializable=True).value in (b"old", b"new")


def test_future_revision_raises_typed_error(client, ns):
    rev = client.put(ns + "k", "v").revision
    with pytest.raises(errors.FutureRevisionError) as ei:
        client.get(ns + "k", revision=rev + 1000)
    assert "future revision" in ei.value.message


def test_delete_prefix_with_prev_kv(client, ns):
    client.put(ns + "a", "1")
    client.put(ns + "b", "2")
    r = client.delete(ns, prefix=True, prev_kv=True)
    assert r.deleted == 2
    assert sorted(kv.value for kv in r.prev_kvs) == [b"1", b"2"]
    assert client.delete(ns + "a").deleted == 0
    assert client.get(ns, prefix=True).count == 0


def test_txn_compares_and_branches(client, ns):
    k = ns + "k"
    created = client.txn().if_(Compare.create(k) == 0).then(Op.put(k, "v1")).commit()
    assert created.succeeded and created.revision > 0
    again = (
        client.txn().if_(Compare.create(k) == 0).then(Op.put(k, "never")).else_(Op.get(k)).commit()
    )
    assert not again.succeeded
    assert again.responses[0].kv.value == b"v1"
    ok = (
        client.txn()
        .if_(
            Compare.value(k) == "v1",
            Compare.version(k) == 1,
            Compare.mod(k) == created.revision,
            Compare.create(k) < created.revision + 1,
            Compare.lease(k) == 0,
            Compare.value(k) != "other",
        )
        .then(Op.put(k, "v2", prev_kv=True), Op.get(k), Op.delete(ns + "none"))
        .commit()
    )
    assert ok.succeeded
    put_r, get_r, del_r = ok.responses
    assert put_r.prev_kv.value == b"v1"
    assert get_r.kv.value == b"v2"  # reads in a txn see its earlier writes
    assert del_r.deleted == 0
    # A value compare on a missing key is always false.
    missing = client.txn().if_(Compare.value(ns + "nope") != "x").then(Op.put(k, "z")).commit()
    assert not missing.succeeded


def test_txn_prefix_compare_and_nested_txn(client, ns):
    client.put(ns + "p/a", "1")
    client.put(ns + "p/b", "1")
    r = (
        client.txn()
        .if_(Compare.value(ns + "p/", prefix=True) == "1")
        .then(Op.txn([Compare.version(ns + "p/a") > 0], [Op.put(ns + "p/c", "n")], []))
        .commit()
    )
    assert r.succeeded and r.responses[0].succeeded
    assert client.get(ns + "p/c").value == b"n"


def test_txn_rejects_duplicate_keys(client, ns):
    with pytest.raises(errors.DuplicateKeyError):
        client.txn().then(Op.put(ns + "d", "1"), Op.put(ns + "d", "2")).commit()


def test_empty_key_and_unknown_lease_errors(client, ns):
    with pytest.raises(errors.EmptyKeyError):
        client.put("", "v")
    with pytest.raises(errors.LeaseNotFoundError) as ei:
        client.put(ns + "k", "v", lease=0x1234567)
    assert ei.value.message == "etcdserver: requested lease not found"


def test_compact_then_old_revision_is_compacted(client, ns):
    old = client.put(ns + "k", "1").revision
    client.put(ns + "k", "2")
    now = client.put(ns + "k", "3").revision
    client.compact(now - 1)
    with pytest.raises(errors.CompactedError):
        client.get(ns + "k", revision=old)
    with pytest.raises(errors.CompactedError):
        client.compact(now - 1)
    assert client.get(ns + "k", revision=now - 1).value == b"2"


def test_endpoints_from_environment(cluster, ns, monkeypatch):
    monkeypatch.setenv("KVSTORE_ENDPOINTS", ",".join(f"http://{e}" for e in cluster.endpoints))
    with Client() as c:
        assert c.endpoints == cluster.endpoints
        c.put(ns + "env", "ok")
        assert c.get(ns + "env").value == b"ok"


def test_async_client_kv_roundtrip(cluster, ns):
    async def main():
        async with AsyncClient(cluster.endpoints) as c:
            await c.put(ns + "a", "1")
            r = await c.txn().if_(Compare.value(ns + "a") == "1").then(Op.get(ns + "a")).commit()
            assert r.succeeded and r.responses[0].kv.value == b"1"
            return (await c.get(ns, prefix=True)).count

    assert asyncio.run(asyncio.wait_for(main(), 30)) == 1


def test_unreachable_cluster_raises_connection_failed(ns):
    from kvstore.testing.waiting import free_port

    with Client([f"127.0.0.1:{free_port()}"], dial_timeout=0.3, command_timeout=2) as c:
        with pytest.raises(errors.ConnectionFailedError):
            c.put(ns + "k", "v")
        with pytest.raises(errors.ConnectionFailedError):
            c.get(ns + "k")
