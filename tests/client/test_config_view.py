"""Live configuration views: one revision at a time, schema-checked, surviving
compaction and the loss of the member they watch (against etcd and kvstore)."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest

from kvstore.client import (
    AsyncClient,
    Client,
    ConfigRejection,
    ConfigValidationError,
    Op,
    errors,
)
from kvstore.client.configtree import decode_leaf, encode_leaf
from kvstore.testing.waiting import wait_until
from tests.client.tcp_proxy import TcpProxy

SCHEMA = {
    "type": "object",
    "properties": {
        "db": {
            "type": "object",
            "properties": {"host": {"type": "string"}, "port": {"type": "integer"}},
            "required": ["host", "port"],
        },
        "replicas": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["db"],
}


def test_view_reads_the_tree_and_applies_a_transaction_at_once(client, ns):
    client.put(ns + "db/host", "db1")
    client.put(ns + "db/port", "5432")
    seen: list[tuple[dict, dict, int]] = []
    with client.config_view(ns, on_change=lambda o, n, r: seen.append((dict(o), dict(n), r))) as v:
        assert dict(v) == {"db/host": "db1", "db/port": 5432}
        assert v.tree() == {"db": {"host": "db1", "port": 5432}}
        start = v.revision
        assert start == client.get(ns + "db/port").header.revision
        r = (
            client.txn()
            .then(
                Op.put(ns + "db/host", "db2"),
                Op.put(ns + "db/port", "6432"),
                Op.put(ns + "replicas/0", "a"),
                Op.put(ns + "replicas/1", "b"),
            )
            .commit()
        )
        v.wait_for_revision(r.revision, timeout=20)
        assert v.revision == r.revision
        assert v.tree() == {"db": {"host": "db2", "port": 6432}, "replicas": ["a", "b"]}
        d = client.delete(ns + "replicas/", prefix=True)
        v.wait_for_revision(d.header.revision, timeout=20)
        assert "replicas/0" not in v and v["db/port"] == 6432
    # One callback per transaction, never a mix of two revisions.
    assert [rev for _, _, rev in seen] == [r.revision, d.header.revision]
    assert seen[0][0] == {"db/host": "db1", "db/port": 5432}
    assert seen[0][1] == {"db/host": "db2", "db/port": 6432, "replicas/0": "a", "replicas/1": "b"}
    assert seen[1][1] == {"db/host": "db2", "db/port": 6432}


def test_schema_failure_keeps_the_previous_view_and_is_reported(client, ns):
    client.put(ns + "db/host", "db1")
    client.put(ns + "db/port", "5432")
    rejected: list[ConfigRejection] = []
    changes: list[int] = []
    with client.config_view(
        ns, schema=SCHEMA, on_change=lambda o, n, r: changes.append(r), on_error=rejected.append
    ) as v:
        good = v.snapshot
        bad = client.put(ns + "db/port", "not-a-number")
        v.wait_for_revision(bad.header.revision, timeout=20)
        assert v.snapshot is good and v["db/port"] == 5432  # previous good view stays
        assert [r.revision for r in rejected] == [bad.header.revision]
        assert rejected[0].errors == ("$.db.port: 'not-a-number' is not of type 'integer'",)
        assert v.rejections == 1 and v.last_rejection == rejected[0]
        # The next good revision applies to the real store state.
        fixed = client.put(ns + "db/host", "db2")
        v.wait_for_revision(fixed.header.revision, timeout=20)
        assert v.snapshot is good  # port still invalid in the store
        fixed = client.put(ns + "db/port", "7000")
        v.wait_for_revision(fixed.header.revision, timeout=20)
        assert dict(v) == {"db/host": "db2", "db/port": 7000}
        assert changes == [fixed.header.revision]


def test_invalid_tree_at_start_raises_and_bad_schema_is_refused(client, ns):
    client.put(ns + "db/host", "db1")
    with pytest.raises(ConfigValidationError, match=r"\$.db: 'port' is a required property"):
        client.config_view(ns, schema=SCHEMA)
    with pytest.raises(ValueError, match="invalid JSON Schema"):
        client.config_view(ns, schema={"type": "no-such-type"})
    with pytest.raises(ValueError, match="unknown decode"):
        client.config_view(ns, decode="toml")


def test_decode_json_rejects_a_malformed_value_and_raw_keeps_text(client, ns):
    client.put(ns + "feature", json.dumps({"enabled": True, "ratio": 0.5}))
    with client.config_view(ns, decode="json") as v, client.config_view(ns, decode="raw") as raw:
        assert v["feature"] == {"enabled": True, "ratio": 0.5}
        bad = client.put(ns + "feature", '{"enabled": tru')
        v.wait_for_revision(bad.header.revision, timeout=20)
        raw.wait_for_revision(bad.header.revision, timeout=20)
        assert v["feature"] == {"enabled": True, "ratio": 0.5}
        assert v.last_rejection is not None and "feature: cannot decode" in str(v.last_rejection)
        assert raw["feature"] == '{"enabled": tru'


def test_async_view_with_an_async_callback(cluster, ns):
    async def main() -> list[int]:
        revisions: list[int] = []

        async def on_change(old, new, revision):
            await asyncio.sleep(0)
            revisions.append(revision)

        async with AsyncClient(cluster.endpoints) as c:
            await c.put(ns + "x", "1")
            async with await c.config_view(ns, on_change=on_change) as v:
                assert v["x"] == 1
                r = await c.put(ns + "x", "2")
                await v.wait_for_revision(r.header.revision, timeout=20)
                assert v["x"] == 2 and v.revision == r.header.revision
                return [*revisions, r.header.revision]

    revisions = asyncio.run(asyncio.wait_for(main(), 60))
    assert revisions[:-1] == [revisions[-1]]


@pytest.mark.parametrize(
    "value",
    ["db1", "5432", "", "yes", "null", "1.5", "a: b", "- x", '"q"', "2024-01-01", "é ü",
     "line\nbreak", 0, -7, 10**20, 1.5, 1e20, -0.25, True, False, None, [], {}],
)  # fmt: skip
def test_leaf_encoding_round_trips_value_and_type(value):
    text = encode_leaf(value)
    back = decode_leaf(text)
    assert back == value and type(back) is type(value)


# --- the view under load, compaction and member loss ----------------------------------

_KEYS = ("a", "b", "c/x")


def _state(i: int) -> dict:
    """Store state after the writer's txn i: a, b, c/x = i; d present iff i % 4."""
    state = {k: i for k in _KEYS}
    if i % 4:
        state["d"] = i
    return state


class _Writer(threading.Thread):
    """Writes txn 1, 2, ... (several keys each) until stopped; records the
    revision of every txn it saw succeed. A txn that failed may or may not be
    applied (the member died under it): it stays in `attempted` only."""

    def __init__(self, endpoints: list[str], ns: str) -> None:
        super().__init__(daemon=True)
        self._client = Client(endpoints, dial_timeout=1.0, command_timeout=10.0)
        self._ns = ns
        self.known: dict[int, int] = {}  # revision -> i
        self.attempted: set[int] = set()
        self.last_i = 0
        self.stop = threading.Event()
        self.failures = 0

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            self.attempted.add(i)
            ops = [Op.put(self._ns + k, str(i)) for k in _KEYS]
            ops.append(Op.put(self._ns + "d", str(i)) if i % 4 else Op.delete(self._ns + "d"))
            try:
                r = self._client.txn().then(*ops).commit()
            except errors.ClientError:
                self.failures += 1
                continue
            self.known[r.revision] = i
            self.last_i = i

    def close(self) -> None:
        self.stop.set()
        self.join(timeout=60)
        self._client.close()


def _check_views(observed: list[tuple[int, dict]], writer: _Writer) -> None:
    """Every observed view is the state at its revision: one of the writer's
    txns, never a mix of two, in increasing revision and txn order."""
    last_rev, last_i = 0, 0
    for rev, view in observed:
        i = view["a"]
        assert view == _state(i), f"half-applied transaction at revision {rev}: {view}"
        assert i in writer.attempted
        if rev in writer.known:
            assert writer.known[rev] == i, f"view at {rev} shows txn {i}"
        assert rev > last_rev and i > last_i
        last_rev, last_i = rev, i


def _member_index(cluster, endpoint: str) -> int:
    return cluster.endpoints.index(endpoint)


@pytest.mark.integration
def test_view_under_txn_writer_survives_compaction_and_kill_9_of_its_member(cluster, ns):
    with Client(cluster.endpoints, dial_timeout=1.0, command_timeout=15.0) as seed:
        seed.txn().then(*(Op.put(ns + k, "0") for k in _KEYS)).commit()

    observed = {"failover": [], "proxied": []}

    def recorder(name):
        return lambda old, new, rev: observed[name].append((rev, dict(new)))

    # "failover" watches through every member; "proxied" through one member
    # behind a proxy the test cuts while history is compacted.
    fail_client = Client(cluster.endpoints, dial_timeout=1.0, command_timeout=15.0)
    failover = fail_client.config_view(ns, on_change=recorder("failover"))
    victim = _member_index(cluster, failover.endpoint)
    other = (victim + 1) % len(cluster.endpoints)
    proxy = TcpProxy(cluster.endpoints[other])
    proxy_client = Client([proxy.endpoint], dial_timeout=1.0, command_timeout=15.0)
    proxied = proxy_client.config_view(ns, on_change=recorder("proxied"))
    survivors = [e for i, e in enumerate(cluster.endpoints) if i != victim]
    writer = _Writer(survivors, ns)
    writer.start()
    restarted = False
    try:
        wait_until(lambda: writer.last_i >= 20, timeout=60, what="20 txns")
        # Both views follow the writer before their members go away (under load
        # a view's first events can lag the writer's first txns).
        wait_until(lambda: all(len(v) >= 5 for v in observed.values()), timeout=60,
                   what="both views following the writer")  # fmt: skip
        proxy.block()  # the proxied view loses its member...
        cluster.kill(victim)  # ... and kill -9 of the failover view's member
        wait_until(lambda: writer.last_i >= 40, timeout=60, what="txns after the kill")
        with (
            Client(survivors, dial_timeout=1.0, command_timeout=15.0) as admin,
            Client([cluster.endpoints[other]], dial_timeout=1.0, command_timeout=5.0) as member,
        ):
            compact_rev = admin.get(ns + "a").header.revision
            admin.compact(compact_rev, physical=True)
            # The proxied member has applied the compaction: its history is gone.
            wait_until(
                lambda: _compacted_on(member, compact_rev),
                timeout=30,
                what="compaction applied on the proxied member",
            )
        assert proxied.seen_revision < compact_rev  # it will resume into compacted history
        wait_until(lambda: writer.last_i >= 60, timeout=60, what="txns after compaction")
        proxy.unblock()
        wait_until(lambda: proxied.resyncs >= 1, timeout=60, what="proxied view re-read")
        cluster.restart(victim)
        restarted = True
        wait_until(lambda: writer.last_i >= 80, timeout=60, what="txns after the restart")
        wait_until(lambda: all(len(v) >= 10 for v in observed.values()), timeout=60,
                   what="both views following the writer again")  # fmt: skip
    finally:
        writer.close()
        if not restarted:
            cluster.restart(victim)
    try:
        with Client(survivors, dial_timeout=1.0, command_timeout=15.0) as check:
            fresh = check.get(ns, prefix=True)
            expected = {kv.key.decode()[len(ns) :]: int(kv.value) for kv in fresh.kvs}
        for view in (failover, proxied):
            view.wait_for_revision(fresh.header.revision, timeout=60)
            assert dict(view) == expected == _state(expected["a"])
        assert failover.reconnects >= 1  # it moved to another member
        for name, views in observed.items():
            assert len(views) >= 10, name
            _check_views(views, writer)
        assert observed["failover"][-1][1] == expected
    finally:
        failover.close()
        proxied.close()
        fail_client.close()
        proxy_client.close()
        proxy.close()
        cluster.wait_healthy(timeout=60)


def _compacted_on(member: Client, compact_rev: int) -> bool:
    try:
        member.get("x", revision=compact_rev - 1, serializable=True)
    except errors.CompactedError:
        return True
    except errors.ClientError:
        return False
    return False


def test_closing_the_client_closes_its_open_views(cluster, ns):
    def callback_threads() -> int:
        return sum(t.name == "kvstore-config-callbacks" for t in threading.enumerate())

    before = callback_threads()
    c = Client(cluster.endpoints)
    view = c.config_view(ns, on_change=lambda *_: None)
    assert callback_threads() == before + 1
    c.close()  # the view was never closed by the application
    assert callback_threads() == before
    view.close()  # and closing it again is harmless
