"""WatchHub: live fan-out of committed events plus catch-up from history.

Owns: the two watcher groups of etcd's watchable store —
  * synced: watchers that have been sent everything up to the store's
    current revision; `publish` (called by the apply loop right after a
    batch commits) hands them the new events directly;
  * unsynced: watchers that are behind (start revision in the past, or
    their stream's outbox was full); a background task replays their
    history from RocksDB (`MvccStore.events_between`) in bounded batches
    and moves them to synced once they reach the current revision —
and the periodic progress notifications.

Never: blocks or awaits inside `publish` (apply must not stall), lets a
stream's outbox grow without bound (a watcher that does not fit goes to
the unsynced group and is replayed from disk later), or reads the clock
other than through the progress timer.

Invariants (per watcher): events are sent in revision order, each revision
once, all events of a revision in one response (unless the watcher asked
for fragments); `next_rev` is the lowest revision not yet sent. The group
switch unsynced -> synced happens in one synchronous step after reading up
to the current revision, so `publish` can neither skip nor repeat a
revision (both run on the one event loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from kvstore import errors
from kvstore.pb import kv_pb2, rpc_pb2
from kvstore.watch.stream import WatchStream
from kvstore.watch.watcher import Watcher, strip_prev_kv

if TYPE_CHECKING:
    from kvstore.mvcc import MvccStore

log = logging.getLogger(__name__)

RevisionEvents = tuple[int, list[kv_pb2.Event]]
HeaderFn = Callable[[int], rpc_pb2.ResponseHeader]

DEFAULT_STREAM_EVENTS = 4096  # queued events per stream before a watcher goes unsynced
CATCHUP_BATCH_REVS = 1000  # etcd watchBatchMaxRevs
CATCHUP_BATCH_EVENTS = 2048  # events read from history per catch-up round
DEFAULT_PROGRESS_INTERVAL_S = 600.0  # etcd --experimental-watch-progress-notify-interval
DEFAULT_MAX_RESPONSE_BYTES = 1_572_864  # etcd --max-request-bytes (fragment threshold)


def _plain_header(revision: int) -> rpc_pb2.ResponseHeader:
    return rpc_pb2.ResponseHeader(revision=revision)


class WatchHub:
    """One per node. `publish` is the driver's watch hook; `start()` runs the
    catch-up and progress tasks (without it, call `sync_unsynced()` by hand)."""

    def __init__(
        self,
        store: MvccStore,
        header: HeaderFn | None = None,
        *,
        max_stream_events: int = DEFAULT_STREAM_EVENTS,
        batch_revs: int = CATCHUP_BATCH_REVS,
        batch_events: int = CATCHUP_BATCH_EVENTS,
        progress_interval_s: float = DEFAULT_PROGRESS_INTERVAL_S,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
    ) -> None:
        self._store = store
        self.header: HeaderFn = header or _plain_header
        self.max_stream_events = max_stream_events
        self._batch_revs = batch_revs
        self._batch_events = batch_events
        self.progress_interval_s = progress_interval_s
        self.max_response_bytes = max_response_bytes
        self._keys: dict[bytes, set[Watcher]] = {}
        # Range watchers grouped by their exact range: many clients usually
        # watch the same prefix, so an event is matched once per distinct range.
        self._ranges: dict[tuple[bytes, bytes], set[Watcher]] = {}
        self._unsynced: set[Watcher] = set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stats = {"published": 0, "replayed": 0, "went_unsynced": 0, "compacted": 0}
        # Highest revision handed to synced watchers (see `resync`).
        self._published_through = store.current_revision

    # ---------------------------------------------------------------- state
    @property
    def current_revision(self) -> int:
        return self._store.current_revision

    @property
    def notified_revision(self) -> int:
        """The revision a progress notification may claim: every synced
        watcher has been handed its events up to here. The store's revision
        runs ahead of it while the driver holds a staged apply batch whose
        events are published only after the Raft write returns."""
        return min(self._store.current_revision, self._published_through)

    def new_stream(self, max_events: int | None = None) -> WatchStream:
        return WatchStream(self, max_events or self.max_stream_events)

    def watcher_counts(self) -> tuple[int, int]:
        """(synced, unsynced) watcher counts."""
        synced = sum(len(s) for s in self._ranges.values())
        synced += sum(len(s) for s in self._keys.values())
        return synced, len(self._unsynced)

    # ---------------------------------------------- membership (from stream)
    def add(self, w: Watcher) -> None:
        compact = self._store.compact_revision
        if w.next_rev < compact:
            self.stats["compacted"] += 1
            w.stream.cancel_compacted(w, compact)
            return
        if w.next_rev > self.current_revision:
            self._add_synced(w)
        else:
            w.synced = False
            self._unsynced.add(w)
            self.kick()

    def remove(self, w: Watcher) -> None:
        w.canceled = True
        if w.synced:
            self._remove_synced(w)
        else:
            self._unsynced.discard(w)

    def _add_synced(self, w: Watcher) -> None:
        w.synced = True
        if w.is_single_key:
            self._keys.setdefault(w.key, set()).add(w)
        else:
            self._ranges.setdefault((w.key, w.range_end), set()).add(w)

    def _remove_synced(self, w: Watcher) -> None:
        w.synced = False
        if w.is_single_key:
            group = self._keys.get(w.key)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._keys[w.key]
        else:
            rgroup = self._ranges.get((w.key, w.range_end))
            if rgroup is not None:
                rgroup.discard(w)
                if not rgroup:
                    del self._ranges[(w.key, w.range_end)]

    # ------------------------------------------------------- live fan-out
    def publish(self, batch: list[RevisionEvents]) -> None:
        """Apply-loop hook: events of revisions just committed, ascending.

        Synchronous and bounded by (events x matching watchers)."""
        if not batch:
            return
        first_rev, last_rev = batch[0][0], batch[-1][0]
        self._published_through = last_rev
        if not self._keys and not self._ranges:
            return
        matched: dict[Watcher, list[tuple[int, kv_pb2.Event]]] = {}
        keys, ranges = self._keys, self._ranges
        for rev, events in batch:
            for ev in events:
                key = ev.kv.key
                group = keys.get(key)
                if group:
                    for w in group:
                        matched.setdefault(w, []).append((rev, ev))
                for rgroup in ranges.values():
                    if next(iter(rgroup)).matches(key):
                        for w in rgroup:
                            matched.setdefault(w, []).append((rev, ev))
        stripped: dict[int, kv_pb2.Event] = {}
        header: rpc_pb2.ResponseHeader | None = None  # one per batch (copied per response)
        for w, pairs in matched.items():
            if w.next_rev > last_rev:
                continue  # a watch on a future revision
            if not w.stream.has_room():
                # Slow consumer: park it; the catch-up path replays from disk.
                self._remove_synced(w)
                w.next_rev = max(w.next_rev, first_rev)
                self._unsynced.add(w)
                self.stats["went_unsynced"] += 1
                self.kick()
                continue
            out = self._select(w, pairs, stripped)
            w.next_rev = last_rev + 1
            if out:
                self.stats["published"] += len(out)
                if header is None:
                    header = self.header(last_rev)
                resp = rpc_pb2.WatchResponse(header=header, watch_id=w.id)
                resp.events.extend(out)
                w.stream.push_events(w, resp)

    @staticmethod
    def _select(
        w: Watcher, pairs: Iterable[tuple[int, kv_pb2.Event]], stripped: dict[int, kv_pb2.Event]
    ) -> list[kv_pb2.Event]:
        out = []
        for rev, ev in pairs:
            if rev < w.next_rev or not w.wants(ev):
                continue
            if w.prev_kv:
                out.append(ev)
            else:
                plain = stripped.get(id(ev))
                if plain is None:
                    plain = stripped[id(ev)] = strip_prev_kv(ev)
                out.append(plain)
        return out

    # ------------------------------------------------------------ catch-up
    def kick(self) -> None:
        self._kick.set()

    def sync_unsynced(self) -> bool:
        """One bounded catch-up pass. Returns True if more work is ready now."""
        store = self._store
        current = store.current_revision
        compact = store.compact_revision
        ready: list[Watcher] = []
        for w in list(self._unsynced):
            if w.canceled or w.stream.closed:
                self._unsynced.discard(w)
            elif w.next_rev < compact:
                self._unsynced.discard(w)
                self.stats["compacted"] += 1
                w.stream.cancel_compacted(w, compact)
            elif w.next_rev > current:
                self._unsynced.discard(w)
                self._add_synced(w)
                self._after_synced(w)
            elif w.stream.has_room():
                ready.append(w)
        if not ready:
            return False
        start = min(w.next_rev for w in ready)
        history = self._read_history(start, min(current, start + self._batch_revs - 1))
        if history is None:
            return True  # compacted under us: the next pass cancels those watchers
        end = self._window_end(history, start, current)
        prev_cache: dict[tuple[bytes, int], kv_pb2.KeyValue | None] = {}
        for w in ready:
            if w.next_rev > end:
                continue
            out: list[kv_pb2.Event] = []
            for rev, events in history:
                if rev < w.next_rev:
                    continue
                for ev in events:
                    if w.matches(ev.kv.key) and w.wants(ev):
                        out.append(self._with_prev(ev, rev, prev_cache) if w.prev_kv else ev)
            w.next_rev = end + 1
            if out:
                self.stats["replayed"] += len(out)
                resp = rpc_pb2.WatchResponse(header=self.header(current), watch_id=w.id)
                resp.events.extend(out)
                w.stream.push_events(w, resp)
            if w.next_rev > current:
                self._unsynced.discard(w)
                self._add_synced(w)
                self._after_synced(w)
        return any(w.stream.has_room() for w in self._unsynced)

    def _read_history(self, start: int, end: int) -> list[RevisionEvents] | None:
        """Whole revisions from `start`, stopping after `batch_events` events;
        None if `start` was compacted (nothing may then be marked as sent)."""
        out: list[RevisionEvents] = []
        count = 0
        try:
            for rev, events in self._store.events_between(start, end):
                out.append((rev, events))
                count += len(events)
                if count >= self._batch_events:
                    break
        except errors.EtcdError:
            return None
        return out

    def _window_end(self, history: list[RevisionEvents], start: int, current: int) -> int:
        """Last revision this pass covered: where the read stopped early, or
        the whole window (revisions without events count as covered)."""
        total = sum(len(evs) for _, evs in history)
        if history and total >= self._batch_events:
            return history[-1][0]
        return min(current, start + self._batch_revs - 1)

    def _with_prev(
        self,
        ev: kv_pb2.Event,
        rev: int,
        cache: dict[tuple[bytes, int], kv_pb2.KeyValue | None],
    ) -> kv_pb2.Event:
        key = ev.kv.key
        prev: kv_pb2.KeyValue | None
        if (key, rev) in cache:
            prev = cache[(key, rev)]
        else:
            prev = None
            try:
                resp = self._store.range(rpc_pb2.RangeRequest(key=key, revision=rev - 1))
                if resp.kvs:
                    prev = resp.kvs[0]
            except errors.EtcdError:
                prev = None  # compacted: etcd omits prev_kv
            cache[(key, rev)] = prev
        if prev is None:
            return ev
        out = kv_pb2.Event(type=ev.type, kv=ev.kv)
        out.prev_kv.CopyFrom(prev)
        return out

    def _after_synced(self, w: Watcher) -> None:
        stream = w.stream
        if stream.progress_pending and all(x.synced for x in stream.watchers.values()):
            stream.send_progress()

    def resync(self) -> None:
        """The store was replaced under us (a Raft snapshot was installed):
        every synced watcher has seen revisions up to the old state's last
        one; move them all to the catch-up path from there, which replays
        what the new state's history holds or cancels them with its
        compaction revision (as etcd's watchable store does on restore)."""
        seen = self._published_through
        for w in self._synced_watchers():
            self._remove_synced(w)
            w.next_rev = max(w.next_rev, seen + 1)
            self._unsynced.add(w)
        self._published_through = self._store.current_revision
        self.kick()

    # ------------------------------------------------------------ progress
    def progress_tick(self) -> None:
        """etcd's progress ticker: every synced progress_notify watcher that got
        no events since the last tick receives an empty response at the
        current revision."""
        rev = self.notified_revision
        for w in self._synced_watchers():
            if w.progress_notify and not w.sent_since_tick and w.stream.has_room():
                w.stream.push(rpc_pb2.WatchResponse(header=self.header(rev), watch_id=w.id))
            w.sent_since_tick = False

    def _synced_watchers(self) -> list[Watcher]:
        out: list[Watcher] = []
        for group in (*self._ranges.values(), *self._keys.values()):
            out.extend(group)
        return out

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._catchup_loop(), name="watch-catchup"))
        self._tasks.append(asyncio.create_task(self._progress_loop(), name="watch-progress"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _catchup_loop(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            try:
                more = self.sync_unsynced()
            except Exception:  # noqa: BLE001 - one bad pass must not end watching
                log.exception("watch catch-up pass failed")
                more = False
            if more:
                self._kick.set()
                await asyncio.sleep(0)  # let apply and the senders run between passes

    async def _progress_loop(self) -> None:
        while True:
            await asyncio.sleep(self.progress_interval_s)
            self.progress_tick()
