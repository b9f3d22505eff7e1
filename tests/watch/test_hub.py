"""WatchHub + WatchStream component tests on a real MvccStore (RocksDB in tmp_path)."""

from __future__ import annotations

from kvstore import errors
from kvstore.pb import kv_pb2, rpc_pb2
from tests.watch.conftest import Applied, drain, event_revs

PUT, DELETE = kv_pb2.Event.PUT, kv_pb2.Event.DELETE
NOPUT, NODELETE = rpc_pb2.WatchCreateRequest.NOPUT, rpc_pb2.WatchCreateRequest.NODELETE


def test_create_answers_created_with_current_revision_then_live_events(applied: Applied) -> None:
    applied.put(b"a")  # rev 2
    stream, wid = applied.watch(key=b"a")
    [created] = drain(stream)
    assert created.created and created.watch_id == wid == 0
    assert created.header.revision == 2
    applied.put(b"a", b"x")  # rev 3
    applied.put(b"b")  # rev 4, not watched
    [resp] = drain(stream)
    assert resp.watch_id == 0 and resp.header.revision == 3
    assert [(e.type, e.kv.key, e.kv.value, e.kv.mod_revision) for e in resp.events] == [
        (PUT, b"a", b"x", 3)
    ]
    assert not resp.events[0].HasField("prev_kv")  # not asked for


def test_server_chosen_ids_count_from_zero_and_skip_taken_ids(applied: Applied) -> None:
    stream, first = applied.watch(key=b"a")
    _, chosen = applied.watch(stream, key=b"a", watch_id=1)
    _, third = applied.watch(stream, key=b"a")
    assert (first, chosen, third) == (0, 1, 2)


def test_duplicate_watch_id_is_created_and_canceled_with_reason(applied: Applied) -> None:
    stream, wid = applied.watch(key=b"a", watch_id=7)
    _, dup = applied.watch(stream, key=b"b", watch_id=7)
    assert (wid, dup) == (7, -1)
    responses = drain(stream)
    assert responses[1].watch_id == -1
    assert responses[1].created and responses[1].canceled
    assert responses[1].cancel_reason == errors.DUPLICATE_WATCH_ID_REASON


def test_prefix_and_from_key_ranges(applied: Applied) -> None:
    stream, pre = applied.watch(key=b"foo", range_end=b"fop")
    _, frm = applied.watch(stream, key=b"m", range_end=b"\x00")
    drain(stream)
    for key in (b"fo", b"foo", b"foo/1", b"fop", b"m", b"zz"):
        applied.put(key)
    got = {(r.watch_id, ev.kv.key) for r in drain(stream) for ev in r.events}
    assert got == {(pre, b"foo"), (pre, b"foo/1"), (frm, b"m"), (frm, b"zz")}


def test_txn_events_arrive_together_in_one_response(applied: Applied) -> None:
    stream, _ = applied.watch(key=b"k", range_end=b"l")
    drain(stream)
    applied.txn_puts(b"k1", b"k2", b"k3")
    [resp] = drain(stream)
    assert event_revs([resp]) == [(b"k1", 2), (b"k2", 2), (b"k3", 2)]


def test_delete_range_events_carry_key_and_revision_only(applied: Applied) -> None:
    applied.put(b"p/1")
    applied.put(b"p/2")
    stream, _ = applied.watch(key=b"p/", range_end=b"p0", prev_kv=True)
    drain(stream)
    applied.delete(b"p/", b"p0")  # rev 4
    [resp] = drain(stream)
    assert [(e.type, e.kv.key, e.kv.mod_revision, e.kv.value) for e in resp.events] == [
        (DELETE, b"p/1", 4, b""),
        (DELETE, b"p/2", 4, b""),
    ]
    assert [e.prev_kv.key for e in resp.events] == [b"p/1", b"p/2"]


def test_filters_drop_event_types(applied: Applied) -> None:
    stream, noput = applied.watch(key=b"a", filters=[NOPUT])
    _, nodel = applied.watch(stream, key=b"a", filters=[NODELETE])
    drain(stream)
    applied.put(b"a")
    applied.delete(b"a")
    got = [(r.watch_id, e.type) for r in drain(stream) for e in r.events]
    assert got == [(nodel, PUT), (noput, DELETE)]


def test_prev_kv_live(applied: Applied) -> None:
    applied.put(b"a", b"old")
    stream, _ = applied.watch(key=b"a", prev_kv=True)
    drain(stream)
    applied.put(b"a", b"new")
    [resp] = drain(stream)
    assert resp.events[0].prev_kv.value == b"old"
    assert resp.events[0].kv.value == b"new"


def test_history_replay_then_live_without_gaps_or_duplicates(applied: Applied) -> None:
    for i in range(10):
        applied.put(b"k", str(i).encode())  # revs 2..11
    stream, _ = applied.watch(key=b"k", start_revision=4, prev_kv=True)
    # Writes land while the watcher is still unsynced: they must come from history.
    applied.put(b"k", b"during")  # rev 12
    assert drain(stream)[0].created
    applied.catch_up()
    applied.put(b"k", b"live")  # rev 13
    responses = drain(stream)
    assert [rev for _, rev in event_revs(responses)] == list(range(4, 14))
    first = responses[0].events[0]
    assert first.prev_kv.value == b"1"  # read from history at revision 3


def test_start_revision_zero_means_after_current(applied: Applied) -> None:
    applied.put(b"a")
    stream, _ = applied.watch(key=b"a", start_revision=0)
    applied.catch_up()
    drain(stream)
    applied.put(b"a")
    assert event_revs(drain(stream)) == [(b"a", 3)]


def test_future_start_revision_waits(applied: Applied) -> None:
    stream, _ = applied.watch(key=b"a", start_revision=4)
    drain(stream)
    applied.put(b"a")  # 2
    applied.put(b"a")  # 3
    assert drain(stream) == []
    applied.put(b"a")  # 4
    assert event_revs(drain(stream)) == [(b"a", 4)]


def test_watch_from_compacted_revision_is_created_then_canceled(applied: Applied) -> None:
    for _ in range(5):
        applied.put(b"a")  # revs 2..6
    applied.compact(5)
    stream, wid = applied.watch(key=b"a", start_revision=3)
    created, canceled = drain(stream)
    assert created.created and created.watch_id == wid
    assert canceled.canceled and canceled.watch_id == wid
    assert canceled.compact_revision == 5 and canceled.cancel_reason == ""
    assert canceled.header.revision == 0
    applied.put(b"a")
    assert drain(stream) == []


def test_watch_at_compact_revision_itself_is_allowed(applied: Applied) -> None:
    for _ in range(5):
        applied.put(b"a")
    applied.compact(5)
    stream, _ = applied.watch(key=b"a", start_revision=5)
    applied.catch_up()
    assert event_revs(drain(stream)[1:]) == [(b"a", 5), (b"a", 6)]


def test_unsynced_watcher_overtaken_by_compaction_is_canceled(applied: Applied) -> None:
    for _ in range(5):
        applied.put(b"a")
    stream, _ = applied.watch(key=b"a", start_revision=2)
    applied.compact(4)  # before the catch-up pass reached it
    applied.catch_up()
    created, canceled = drain(stream)
    assert canceled.canceled and canceled.compact_revision == 4


def test_cancel_stops_events(applied: Applied) -> None:
    stream, wid = applied.watch(key=b"a")
    drain(stream)
    assert stream.cancel(wid)
    [resp] = drain(stream)
    assert resp.canceled and resp.watch_id == wid
    applied.put(b"a")
    assert drain(stream) == []
    assert not stream.cancel(wid)  # unknown id: no answer
    assert drain(stream) == []


def test_slow_watcher_never_grows_the_outbox_and_catches_up_exactly(make_applied) -> None:
    applied = make_applied(max_stream_events=8, batch_events=16)
    stream, _ = applied.watch(key=b"k", range_end=b"l")
    fast, _ = applied.watch(key=b"k", range_end=b"l")
    drain(fast)
    for i in range(100):
        applied.put(b"k%03d" % i)  # revs 2..101; nobody drains `stream`
        assert stream.queued_events <= 8 + 16
        assert len(drain(fast)) == 1  # the other stream is not held back
    assert applied.hub.watcher_counts()[1] == 1  # the slow one is unsynced
    got = []
    for _ in range(1000):
        got.extend(drain(stream))
        if not applied.hub.sync_unsynced() and not len(stream):
            break
    applied.put(b"k-last")  # live again
    got.extend(drain(stream))
    assert [rev for _, rev in event_revs(got)] == list(range(2, 103))
    assert applied.hub.watcher_counts() == (2, 0)


def test_progress_request_immediate_when_synced(applied: Applied) -> None:
    applied.put(b"a")
    stream, _ = applied.watch(key=b"a")
    drain(stream)
    stream.request_progress()
    [resp] = drain(stream)
    assert resp.watch_id == -1 and resp.header.revision == 2 and not resp.events


def test_progress_request_waits_for_unsynced_watchers(applied: Applied) -> None:
    for _ in range(3):
        applied.put(b"a")
    stream, _ = applied.watch(key=b"a", start_revision=2)
    drain(stream)
    stream.request_progress()
    assert drain(stream) == []  # events at 2..4 are still owed
    applied.catch_up()
    events, progress = drain(stream)
    assert [e.kv.mod_revision for e in events.events] == [2, 3, 4]
    assert progress.watch_id == -1 and progress.header.revision == 4


def test_progress_notify_only_to_idle_watchers(applied: Applied) -> None:
    stream, busy = applied.watch(key=b"a", progress_notify=True)
    _, idle = applied.watch(stream, key=b"b", progress_notify=True)
    _, plain = applied.watch(stream, key=b"c")
    drain(stream)
    applied.put(b"a")
    drain(stream)
    applied.hub.progress_tick()
    assert [(r.watch_id, r.header.revision) for r in drain(stream)] == [(idle, 2)]
    applied.hub.progress_tick()
    assert sorted(r.watch_id for r in drain(stream)) == [busy, idle]
    assert plain not in (busy, idle)


def test_fragment_splits_large_revisions(make_applied) -> None:
    applied = make_applied(max_response_bytes=300)
    stream, frag = applied.watch(key=b"k", range_end=b"l", fragment=True)
    other, whole = applied.watch(key=b"k", range_end=b"l")
    drain(stream)
    drain(other)
    ops = [
        rpc_pb2.RequestOp(request_put=rpc_pb2.PutRequest(key=b"k%d" % i, value=b"x" * 100))
        for i in range(6)
    ]
    applied._commit(lambda b: b.txn(rpc_pb2.TxnRequest(success=ops)))
    pieces = drain(stream)
    assert len(pieces) > 1
    assert [p.fragment for p in pieces] == [True] * (len(pieces) - 1) + [False]
    assert sum(len(p.events) for p in pieces) == 6
    assert len(drain(other)) == 1  # without fragment=true: one response


def test_closed_stream_drops_its_watchers(applied: Applied) -> None:
    stream, _ = applied.watch(key=b"a")
    applied.watch(stream, key=b"b", start_revision=1)
    stream.close()
    assert applied.hub.watcher_counts() == (0, 0)
    applied.put(b"a")
    assert stream.pop_nowait() is None


def test_resync_after_state_swap_replays_or_cancels(tmp_path) -> None:  # noqa: ANN001
    """A snapshot install swaps the store under the hub: synced watchers go
    through catch-up from the last revision they saw."""
    a = Applied(tmp_path / "db")
    try:
        stream, _ = a.watch(key=b"k", range_end=b"l")
        a.put(b"k1")  # rev 2, seen live
        drain(stream)
        # Simulate an install that brought revisions 3..4 without publishing them.
        batch = a.store.begin_batch()
        batch.put(rpc_pb2.PutRequest(key=b"k2"))
        batch.put(rpc_pb2.PutRequest(key=b"k3"))
        batch.commit()
        a.hub.resync()
        a.catch_up()
        assert event_revs(drain(stream)) == [(b"k2", 3), (b"k3", 4)]
        # Now a swap whose history is compacted past what the watcher saw.
        batch = a.store.begin_batch()
        batch.put(rpc_pb2.PutRequest(key=b"k4"))
        batch.put(rpc_pb2.PutRequest(key=b"k5"))
        batch.compact(6)
        batch.commit()
        a.hub.resync()
        a.catch_up()
        [canceled] = drain(stream)
        assert canceled.canceled and canceled.compact_revision == 6
    finally:
        a.backend.close()


def test_progress_is_never_ahead_of_events_staged_but_not_yet_published(applied: Applied) -> None:
    """Regression (robustness run, seed 1): the driver stages an apply batch
    (the store's revision moves on) and publishes its events only after the
    Raft write returns; a progress request answered in between claimed the
    new revision, and the event at that revision arrived after it."""
    applied.put(b"a")
    stream, wid = applied.watch(key=b"a", progress_notify=True)
    drain(stream)
    batch = applied.store.begin_batch()
    batch.put(rpc_pb2.PutRequest(key=b"a", value=b"staged"))
    assert applied.store.current_revision == 3  # staged: revision moved, nothing published
    stream.request_progress()
    applied.hub.progress_tick()
    early = drain(stream)
    assert early and all(r.header.revision == 2 for r in early)
    applied.hub.publish(batch.commit())
    stream.request_progress()
    events, progress = drain(stream)
    assert [e.kv.mod_revision for e in events.events] == [3]
    assert progress.watch_id == -1 and progress.header.revision == 3
