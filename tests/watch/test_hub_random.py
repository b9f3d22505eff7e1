"""Seeded random schedules against the WatchHub: every watcher receives exactly
the history it asked for — in revision order, nothing duplicated, nothing
skipped — whatever the interleaving of writes, slow consumers, catch-up
passes and compactions (a watcher overtaken by compaction gets a prefix of
its history, then a compaction cancel)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from kvstore.pb import kv_pb2, rpc_pb2
from tests.watch.conftest import Applied

KEYS = [b"a", b"b", b"ba", b"bb", b"c", b"d"]
RANGES = [(b"a", b""), (b"b", b"c"), (b"b", b"\x00"), (b"\x00", b"\x00"), (b"ba", b"bz")]


def matches(key: bytes, start: bytes, end: bytes) -> bool:
    if not end:
        return key == start
    if end == b"\x00":
        return key >= start
    return start <= key < end


def expected_events(history, start_rev, start, end, filters):  # noqa: ANN001, ANN201
    out = []
    for rev, events in history:
        if rev < start_rev:
            continue
        for ev in events:
            if not matches(ev.kv.key, start, end):
                continue
            if ev.type == kv_pb2.Event.PUT and rpc_pb2.WatchCreateRequest.NOPUT in filters:
                continue
            if ev.type == kv_pb2.Event.DELETE and rpc_pb2.WatchCreateRequest.NODELETE in filters:
                continue
            out.append((rev, ev.type, ev.kv.key, ev.kv.value))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_random_schedule_delivers_exact_histories(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    a = Applied(tmp_path / "db", max_stream_events=rng.choice([2, 5, 50]), batch_events=7)
    history: list = []
    watchers = []  # (stream, watch_id, start_rev, key, end, filters, received, drains)
    try:
        for step in range(400):
            roll = rng.random()
            if roll < 0.45:
                batch = a.store.begin_batch()
                for _ in range(rng.randint(1, 3)):  # several revisions per apply batch
                    key = rng.choice(KEYS)
                    if rng.random() < 0.7:
                        batch.put(rpc_pb2.PutRequest(key=key, value=b"%d" % step))
                    else:
                        batch.delete_range(rpc_pb2.DeleteRangeRequest(key=key))
                if rng.random() < 0.2:
                    ops = [
                        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=k, value=b"t"))
                        for k in rng.sample(KEYS, 3)
                    ]
                    batch.txn(rpc_pb2.TxnRequest(success=ops))
                events = batch.commit()
                history.extend(events)
                a.hub.publish(events)
            elif roll < 0.55:
                key, end = rng.choice(RANGES)
                current = a.store.current_revision
                start_rev = rng.choice([0, 1, max(1, current - 5), current, current + 2])
                filters = rng.choice([[], [rpc_pb2.WatchCreateRequest.NOPUT], [1]])
                stream, wid = a.watch(
                    key=key, range_end=end, start_revision=start_rev, filters=filters
                )
                first = start_rev if start_rev > 0 else current + 1
                watchers.append([stream, wid, first, key, end, filters, [], rng.random()])
            elif roll < 0.85:
                for w in watchers:
                    if rng.random() < w[7]:  # each consumer has its own speed
                        while (resp := w[0].pop_nowait()) is not None:
                            w[6].append(resp)
            elif roll < 0.97:
                a.hub.sync_unsynced()
            elif a.store.current_revision > 3 and rng.random() < 0.5:
                rev = rng.randint(max(2, a.store.compact_revision + 1), a.store.current_revision)
                a.compact(rev)
        # Settle: drain everything and finish catch-up.
        for _ in range(10_000):
            for w in watchers:
                while (resp := w[0].pop_nowait()) is not None:
                    w[6].append(resp)
            if not a.hub.sync_unsynced() and not any(len(w[0]) for w in watchers):
                break
        for _stream, wid, first, key, end, filters, received, _ in watchers:
            want = expected_events(history, first, key, end, filters)
            got = []
            canceled = None
            for resp in received:
                assert resp.watch_id == wid
                assert canceled is None, "nothing may follow a cancel"
                if resp.canceled:
                    canceled = resp
                for ev in resp.events:
                    got.append((ev.kv.mod_revision, ev.type, ev.kv.key, ev.kv.value))
            assert received[0].created
            if canceled is not None:
                assert canceled.compact_revision > 0 and want[: len(got)] == got
            else:
                assert got == want, f"seed {seed}, watcher {wid} on {key!r}..{end!r}"
    finally:
        a.backend.close()
