"""Watch: events, replay, compaction, and exactly-once resume across member loss."""

from __future__ import annotations

import asyncio
import threading

import pytest

from kvstore.client import AsyncClient, Client, CompactedError, EventType
from kvstore.testing.waiting import wait_until


def test_watch_delivers_put_and_delete_with_prev_kv(client, ns):
    with client.watch(ns, prefix=True, prev_kv=True) as w:
        put = client.put(ns + "a", "1")
        client.put(ns + "a", "2")
        client.delete(ns + "a")
        events = [w.next(timeout=10) for _ in range(3)]
    assert [e.type for e in events] == [EventType.PUT, EventType.PUT, EventType.DELETE]
    assert events[0].revision == put.revision and events[0].kv.version == 1
    assert events[1].prev_kv.value == b"1" and events[1].value == b"2"
    assert events[2].key == (ns + "a").encode() and events[2].prev_kv.value == b"2"


def test_watch_replays_history_from_start_revision(client, ns):
    first = client.put(ns + "k", "1").revision
    client.put(ns + "k", "2")
    with client.watch(ns + "k", start_revision=first) as w:
        assert [w.next(timeout=10).value for _ in range(2)] == [b"1", b"2"]


def test_watch_filters_drop_event_types(client, ns):
    with client.watch(ns, prefix=True, filters=["noput"]) as w:
        client.put(ns + "a", "1")
        client.delete(ns + "a")
        assert w.next(timeout=10).type is EventType.DELETE


def test_watch_on_compacted_revision_raises_with_compact_revision(client, ns):
    first = client.put(ns + "k", "1").revision
    client.put(ns + "k", "2")
    now = client.put(ns + "k", "3").revision
    client.compact(now)
    w = client.watch(ns + "k", start_revision=first)
    with pytest.raises(CompactedError) as ei, w:
        w.next(timeout=10)
    assert ei.value.compact_revision == now


def test_async_watch_iterates_as_context_manager(cluster, ns):
    async def main():
        async with AsyncClient(cluster.endpoints) as c:
            async with c.watch(ns, prefix=True) as w:
                for i in range(3):
                    await c.put(f"{ns}{i}", str(i))
                got = []
                async for event in w:
                    got.append(event.value)
                    if len(got) == 3:
                        break
            return got

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [b"0", b"1", b"2"]


def _collect_until(watcher, last_revision: int, limit: int) -> list:
    events = []
    while not events or events[-1].revision < last_revision:
        assert len(events) < limit, "more events than writes"
        events.append(watcher.next(timeout=30))
    return events


def _put_retrying(client, key: str, value: str) -> int:
    """A write whose outcome may be ambiguous is retried; a retry may add an
    extra revision, which the history comparison below accounts for."""
    last: BaseException | None = None
    for _ in range(20):
        try:
            return client.put(key, value).revision
        except Exception as exc:  # noqa: BLE001 - retried, bounded
            last = exc
    raise AssertionError(f"put {key} kept failing: {last!r}")


@pytest.mark.integration
def test_watch_resumes_exactly_once_after_member_is_killed(cluster, ns):
    """kill -9 the member serving the watch while a writer keeps writing:
    the resumed watch delivers exactly the history a fresh replay shows."""
    total = 60
    with Client(cluster.endpoints, command_timeout=15) as watcher_client:
        with watcher_client.watch(ns, prefix=True) as w:
            victim = cluster.endpoints.index(w.endpoint)
            others = [e for i, e in enumerate(cluster.endpoints) if i != victim]
            written: list[int] = []
            with Client(others, command_timeout=15) as writer:
                t = threading.Thread(
                    target=lambda: written.extend(
                        _put_retrying(writer, f"{ns}{i:03d}", str(i)) for i in range(total)
                    )
                )
                t.start()
                try:
                    wait_until(lambda: w.next(timeout=10), timeout=30, what="first event")
                    cluster.kill(victim)
                    t.join(timeout=120)
                    assert len(written) == total, "writer did not finish"
                finally:
                    cluster.restart(victim)
            first_event_rev = w.created_revision + 1
            events = _collect_until(w, written[-1], limit=3 * total)
            assert w.reconnects >= 1 and w.endpoint != cluster.endpoints[victim]
        with watcher_client.watch(ns, prefix=True, start_revision=first_event_rev) as replay:
            history = _collect_until(replay, written[-1], limit=3 * total)
        wait_until(
            lambda: watcher_client.status(cluster.endpoints[victim]),
            timeout=30,
            what="killed member back",
        )
    # The first event was consumed by wait_until above.
    assert [(e.key, e.revision, e.value) for e in events] == [
        (e.key, e.revision, e.value) for e in history[1:]
    ]
    revisions = [e.revision for e in events]
    assert revisions == sorted(set(revisions))  # in order, none repeated
    assert {e.key for e in events} | {history[0].key} == {
        f"{ns}{i:03d}".encode() for i in range(total)
    }
